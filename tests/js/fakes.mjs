// Test doubles for the client tests: a scriptable WebSocket, a minimal terminal, an environment.

const decoder = new TextDecoder();

/** A WebSocket class whose instances the test drives from the server's side. */
export function fakeWebSocketClass() {
  class FakeWebSocket {
    static instances = [];

    constructor(url, protocol) {
      this.url = new URL(url);
      this.protocol = protocol;
      this.sent = [];
      this.closedByClient = null;
      FakeWebSocket.instances.push(this);
    }

    static get last() { return FakeWebSocket.instances.at(-1); }

    send(data) { this.sent.push(data); }
    close(code, reason) { this.closedByClient = { code, reason }; }

    /** The input bytes this socket carried, as text. */
    sentInput() {
      return this.sent.filter((d) => typeof d !== 'string').map((d) => decoder.decode(d)).join('');
    }

    /** The JSON messages this socket carried. */
    sentMessages() {
      return this.sent.filter((d) => typeof d === 'string').map((d) => JSON.parse(d));
    }

    receiveHello(fields = {}) {
      this.receiveJson({
        type: 'hello', protocol: 1, session: 'session_1754900000000_abcdefghijklmnopqrst', project: 'default',
        key: 'session_1754900000000_abcdefghijklmnopqrst:default', created: true, replay_from: 0, gap: 0,
        head: 0, input_acked: 0, restore: '', cols: 80, rows: 24, heartbeat: 25, ...fields,
      });
    }

    receiveJson(message) { this.onmessage?.({ data: JSON.stringify(message) }); }

    receiveOutput(text) {
      const bytes = new TextEncoder().encode(text);
      this.onmessage?.({ data: bytes.buffer });
    }

    receiveClose(code, reason = '') { this.onclose?.({ code, reason }); }
  }
  return FakeWebSocket;
}

/** Just enough of xterm.js for TerminalBinding: writes are recorded, callbacks run on flush(). */
export class FakeTerminal {
  constructor() {
    this.cols = 80;
    this.rows = 24;
    this.writes = [];
    this._callbacks = [];
    this._listeners = { data: [], binary: [], resize: [] };
  }

  onData(listener) { return this._listen('data', listener); }
  onBinary(listener) { return this._listen('binary', listener); }
  onResize(listener) { return this._listen('resize', listener); }

  write(data, callback) {
    this.writes.push(typeof data === 'string' ? data : decoder.decode(data));
    if (callback) this._callbacks.push(callback);
  }

  /** The terminal parsed everything written so far. */
  flush() {
    for (const callback of this._callbacks.splice(0)) callback();
  }

  /** The terminal produced input (a key, or an automatic answer). */
  emitData(data) { for (const listener of this._listeners.data) listener(data); }
  emitBinary(data) { for (const listener of this._listeners.binary) listener(data); }
  emitResize(cols, rows) { for (const listener of this._listeners.resize) listener({ cols, rows }); }

  _listen(type, listener) {
    this._listeners[type].push(listener);
    return { dispose: () => { this._listeners[type] = this._listeners[type].filter((l) => l !== listener); } };
  }
}

/** A window and document pair for `online` and `visibilitychange`. */
export function fakeEnvironment() {
  const window = new EventTarget();
  const document = new EventTarget();
  document.visibilityState = 'visible';
  return {
    window,
    document,
    goOnline() { window.dispatchEvent(new Event('online')); },
    becomeVisible() {
      document.visibilityState = 'visible';
      document.dispatchEvent(new Event('visibilitychange'));
    },
    becomeHidden() {
      document.visibilityState = 'hidden';
      document.dispatchEvent(new Event('visibilitychange'));
    },
  };
}
