// TetherConnection: one terminal session over /ws/terminal (docs/protocol.md, sections 2-4), kept
// alive by the reconnection policy of section 7. No DOM and no xterm.js here: output, resets
// and restores are events; TerminalBinding (terminal-binding.js) wires them to a terminal.
//
// States (`state` event):
//   idle --connect()--> connecting --hello--> connected
//   connecting | connected --close--> reconnecting (backoff) | paused (breaker open) | ended (stop code)
//   reconnecting | paused --timer, retryNow(), online/visible (reconnecting only)--> connecting
//   any --close()--> closed
// Every decision is the policy's (policy.js, the same machine as the Python client's); these are
// its states as the page names them: waiting is `reconnecting`, open is `paused`, stopped is
// `ended`, and half_open is `connecting` with `trial: true`.
import { Emitter } from './emitter.js';
import { InputQueue, MAX_FRAME_BYTES, toBytes } from './input-queue.js';
import { PolicyState, ReconnectPolicy } from './policy.js';
import { closeCodeMeaning, closeCodeName } from './close-codes.js';
import { NamedTimers } from './timers.js';

export const PROTOCOL = 'tether.v1';

export const ConnectionState = Object.freeze({
  IDLE: 'idle',
  CONNECTING: 'connecting',
  CONNECTED: 'connected',
  RECONNECTING: 'reconnecting',
  PAUSED: 'paused',
  ENDED: 'ended',
  CLOSED: 'closed',
});

/** @typedef {typeof ConnectionState[keyof typeof ConnectionState]} ConnectionStateName */

/**
 * What the connection needs of a WebSocket: the browser's, or a Node implementation such as
 * the `ws` package's.
 * @typedef {object} WebSocketLike
 * @property {string} binaryType
 * @property {((event: any) => void) | null} onmessage   called with `{data}`
 * @property {((event: any) => void) | null} onclose     called with `{code, reason}`
 * @property {((event: any) => void) | null} onerror
 * @property {(data: string | Uint8Array) => void} send
 * @property {(code?: number, reason?: string) => void} close
 */
/** @typedef {new (url: string, protocols?: string | string[]) => WebSocketLike} WebSocketConstructor */

/**
 * The hello message (docs/protocol.md, section 3).
 * @typedef {object} Hello
 * @property {'hello'} type
 * @property {string} session
 * @property {boolean} created
 * @property {number} replay_from
 * @property {number} head
 * @property {number} gap
 * @property {number} [input_acked]
 * @property {string} [restore]
 */

/** @typedef {{code: number | null, signal: number | null}} ExitStatus */
/** @typedef {{state: ConnectionStateName} & Record<string, unknown>} StateInfo */

/**
 * The events of a TetherConnection and their listeners' arguments (docs/web.md, "Events").
 * @typedef {object} ConnectionEvents
 * @property {[info: StateInfo]} state
 * @property {[hello: Hello]} hello
 * @property {[bytes: Uint8Array, meta: {replay: boolean}]} output
 * @property {[why: 'gap' | 'new-session']} reset
 * @property {[sequences: string]} restore
 * @property {[exit: ExitStatus]} exit
 * @property {[milliseconds: number]} latency
 * @property {[input: number]} ack
 * @property {[size: {cols: number, rows: number}]} remote-resize
 * @property {[error: {code: string, message: string}]} server-error
 * @property {[reason: string]} protocol-error
 * @property {[close: {code: number, reason: string, attached: boolean}]} close
 */

/** Seconds, before `timeScale` applies. */
export const DEFAULT_TIMINGS = Object.freeze({
  connectTimeout: 10, // no hello within this: the attempt failed
  pingInterval: 15, // application-level ping, for latency and liveness
  deadAfter: 40, // nothing received for this long while connected: the connection is dead
  probeTimeout: 5, // after `online` or the page becoming visible: answer within this or reconnect
});

const NULLISH_SESSION = /^(|null|undefined|nan)$/i;
const CLIENT_ID_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-';

/** A random client id, 22 characters of [A-Za-z0-9_-] (section 1). */
export function newClientId() {
  const bytes = new Uint8Array(22);
  globalThis.crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => CLIENT_ID_ALPHABET[b & 63]).join('');
}

/** @returns {{window: EventTarget, document: Document} | null} */
function defaultEnvironment() {
  if (typeof window === 'undefined' || typeof document === 'undefined') return null;
  return { window, document };
}

/** @extends {Emitter<ConnectionEvents>} */
export class TetherConnection extends Emitter {
  /**
   * @param {object} options
   * @param {string} options.url          the WebSocket endpoint, e.g. `wss://host/ws/terminal`
   * @param {string} options.project      project id
   * @param {string | null} [options.session] session id to attach to (absent, null: a new session)
   * @param {string} [options.clientId]   client id (default: random, one per connection object)
   * @param {number} [options.cols]       terminal size sent with each connect
   * @param {number} [options.rows]
   * @param {string} [options.token]      credential, where the server's auth is on
   * @param {boolean} [options.create]    may the first connect create a session (default: no session given)
   * @param {number} [options.timeScale]  multiplies every delay but a server's retry-after (tests: 0.01)
   * @param {Partial<Record<keyof typeof DEFAULT_TIMINGS, number>>} [options.timings]
   *        overrides DEFAULT_TIMINGS (seconds)
   * @param {ReconnectPolicy} [options.policy]
   * @param {WebSocketConstructor} [options.WebSocket] default: globalThis.WebSocket (Node 20 has
   *        none: pass one, e.g. the `ws` package's)
   * @param {(callback: () => void, ms: number) => unknown} [options.setTimeout]
   * @param {(id: unknown) => void} [options.clearTimeout]
   * @param {() => number} [options.now]  milliseconds
   * @param {{window: EventTarget, document: Document} | null} [options.environment]
   *        where `online` and `visibilitychange` come from (default: the page; null: none)
   */
  constructor(options) {
    super();
    if (!options?.url) throw new TypeError('TetherConnection: url is required');
    if (!options.project) throw new TypeError('TetherConnection: project is required');
    this.url = options.url;
    this.project = options.project;
    /** @type {string | null} */
    this.session = NULLISH_SESSION.test(String(options.session ?? '')) ? null : options.session ?? null;
    this.clientId = options.clientId ?? newClientId();
    this.cols = options.cols ?? null;
    this.rows = options.rows ?? null;
    this.token = options.token ?? null;
    this.timeScale = options.timeScale ?? 1;
    this.policy = options.policy ?? new ReconnectPolicy({ timeScale: this.timeScale });
    this.timings = { ...DEFAULT_TIMINGS, ...options.timings };
    /**
     * Output bytes of the session this client holds; null before the first hello.
     * @type {number | null}
     */
    this.position = null;
    this.head = 0;
    /** @type {Hello | null} */
    this.hello = null;
    /** @type {ExitStatus | null} */
    this.exit = null;
    /** @type {number | null} */
    this.latency = null;
    /** @type {ConnectionStateName} */
    this.state = ConnectionState.IDLE;
    /** @type {StateInfo} */
    this.stateInfo = { state: this.state };
    this._mayCreate = options.create ?? this.session === null;
    this._input = new InputQueue();
    /** @type {WebSocketConstructor} */
    this._WebSocket = options.WebSocket ?? globalThis.WebSocket;
    this._timers = new NamedTimers(
      options.setTimeout ?? ((fn, ms) => globalThis.setTimeout(fn, ms)),
      options.clearTimeout ?? ((id) => globalThis.clearTimeout(/** @type {any} */ (id))),
    );
    this._now = options.now ?? (() => Date.now());
    this._environment = options.environment === undefined ? defaultEnvironment() : options.environment;
    /** @type {WebSocketLike | null} */
    this._ws = null;
    this._attached = false;
    this._listening = false;
    this._receivedCount = 0;
    this._receivedAt = 0;
    this._onOnline = () => this.nudge();
    this._onVisibility = () => {
      if (this._environment?.document.visibilityState === 'visible') this.nudge();
    };
  }

  /** Input bytes queued but not yet acknowledged by the server. */
  get pendingInput() { return this._input.pendingBytes; }
  /** Input bytes the server has acknowledged. */
  get acknowledgedInput() { return this._input.acknowledged; }
  get isConnected() { return this.state === ConnectionState.CONNECTED; }

  /** Start connecting. */
  connect() {
    if (this.state !== ConnectionState.IDLE) return;
    this._listenToEnvironment(true);
    this._openSocket();
  }

  /**
   * Send input. It is queued until acknowledged and re-sent after a reconnect, exactly once.
   * @param {string | Uint8Array | ArrayBuffer} data
   */
  send(data) {
    if (this.state === ConnectionState.CLOSED) return;
    const bytes = toBytes(data);
    this._input.push(bytes);
    if (this._attached) this._sendFrames([bytes]);
  }

  /**
   * The terminal's size changed.
   * @param {number} cols
   * @param {number} rows
   */
  resize(cols, rows) {
    this.cols = cols;
    this.rows = rows;
    if (this._attached) this._sendJson({ type: 'resize', cols, rows });
  }

  /** Send an application-level ping; its pong updates `latency` (milliseconds). */
  ping() {
    if (this._attached) this._sendJson({ type: 'ping', t: this._now() });
  }

  /**
   * Something suggests the network is back (`online`, the page became visible): attempt the
   * pending reconnect now, or check that a live connection still answers. Through the breaker:
   * while it is open (paused) nothing happens.
   */
  nudge() {
    if (this.state === ConnectionState.RECONNECTING) this._startEarly();
    else if (this.state === ConnectionState.CONNECTED) this._probe();
  }

  /**
   * The user asked to reconnect now: a paused connection makes its half-open trial at once, a
   * waiting one its next attempt. Never before a server's retry-after (the policy refuses).
   */
  retryNow() {
    if (this.state === ConnectionState.RECONNECTING || this.state === ConnectionState.PAUSED) this._startEarly();
  }

  /** Attach again after an end that left the session alive (4009 replaced, for one). */
  reconnect() {
    if (this.state === ConnectionState.CLOSED) return;
    this._closeSocket(1000, 'reconnecting');
    this.policy.reset(this._seconds());
    this.exit = null;
    this._listenToEnvironment(true);
    this._openSocket();
  }

  /** Forget the session and start a new shell (after an exit, a 4004, …). */
  startNewSession() {
    if (this.state === ConnectionState.CLOSED) return;
    this._closeSocket(1000, 'new session');
    Object.assign(this, { session: null, position: null, head: 0, hello: null, exit: null });
    this._mayCreate = true;
    this._input.clear();
    this.policy.reset(this._seconds());
    this.emit('reset', 'new-session');
    this._listenToEnvironment(true);
    this._openSocket();
  }

  /** Close for good. The session stays on the server, detached, until its idle timeout. */
  close() {
    this.policy.stop(this._seconds(), 1000, 'closed by the user');
    this._closeSocket(1000, 'closed by the user');
    this._listenToEnvironment(false);
    this._setState(ConnectionState.CLOSED, {});
  }

  /** The WebSocket URL of the next attempt. */
  buildUrl() {
    const params = new URLSearchParams({ project: this.project });
    if (this.session) params.set('session', this.session);
    params.set('client', this.clientId);
    if (this.position !== null) params.set('offset', String(this.position));
    if (this.cols && this.rows) {
      params.set('cols', String(this.cols));
      params.set('rows', String(this.rows));
    }
    if (!this._mayCreate) params.set('create', '0');
    if (this.token) params.set('token', this.token);
    return `${this.url}${this.url.includes('?') ? '&' : '?'}${params}`;
  }

  // -- sockets ----------------------------------------------------------------------------

  /** Open the socket of the attempt the policy is in (connecting, or its half-open trial). */
  _openSocket() {
    this._timers.cancel('attempt');
    const { attempt } = this.policy;
    const trial = this.policy.state === PolicyState.HALF_OPEN;
    let ws;
    try {
      ws = new this._WebSocket(this.buildUrl(), PROTOCOL);
    } catch (error) {
      this._socketClosed(1006, String(error instanceof Error ? error.message : error));
      return;
    }
    ws.binaryType = 'arraybuffer';
    ws.onmessage = (/** @type {{data: unknown}} */ event) => {
      if (ws === this._ws) this._receive(event.data);
    };
    ws.onclose = (/** @type {{code: number, reason: string}} */ event) => {
      if (ws === this._ws) this._socketClosed(event.code, event.reason);
    };
    ws.onerror = () => {}; // a close event follows; the error itself says nothing more
    this._ws = ws;
    this._attached = false;
    this._schedule('connect', this.timings.connectTimeout, () => this._dropSocket('connect timeout'));
    this._setState(ConnectionState.CONNECTING, { attempt, trial });
  }

  /**
   * The server broke the protocol (a frame that is not JSON, no hello first): say so, close with
   * 1002 and resume from the position held, as the Python client does (docs/protocol.md appendix).
   * @param {string} reason
   */
  _protocolError(reason) {
    this.emit('protocol-error', reason);
    const attached = this._attached;
    this._closeSocket(1002, reason.slice(0, 120));
    this._socketClosed(1002, reason, attached);
  }

  /**
   * Our side gave up on the socket (timeout, no answer): treat it as lost without a close frame.
   * @param {string} reason
   */
  _dropSocket(reason) {
    const attached = this._attached;
    this._closeSocket(1000, reason);
    this._socketClosed(1006, reason, attached);
  }

  /**
   * @param {number} code
   * @param {string} reason
   */
  _closeSocket(code, reason) {
    const ws = this._ws;
    this._resetSocketState();
    if (!ws) return;
    ws.onmessage = ws.onclose = ws.onerror = null;
    try {
      ws.close(code, reason);
    } catch {
      // already closed or closing: nothing to do
    }
  }

  _resetSocketState() {
    for (const name of ['connect', 'ping', 'probe']) this._timers.cancel(name);
    this._ws = null;
    this._attached = false;
  }

  /**
   * @param {number} code
   * @param {string} [reason]
   * @param {boolean} [attached]
   */
  _socketClosed(code, reason = '', attached = this._attached) {
    this._resetSocketState();
    this.emit('close', { code, reason, attached });
    if (attached) this.policy.onLost(this._seconds(), code, reason);
    else this.policy.onAttemptFailed(this._seconds(), code, reason);
    this._follow(code, reason);
  }

  /**
   * Show what the policy decided after a close, and wait for its next attempt.
   * @param {number} code
   * @param {string} reason
   */
  _follow(code, reason) {
    const { state, delay, attempt, failures } = this.policy;
    if (state === PolicyState.STOPPED) {
      this._listenToEnvironment(false);
      const name = closeCodeName(code);
      this._setState(ConnectionState.ENDED, {
        code, reason, name, meaning: closeCodeMeaning(code), exit: this.exit,
      });
      return;
    }
    // The policy's delays are already scaled (and retry-after must not be); waiting and open
    // always have one.
    const ms = (delay ?? 0) * 1000;
    const at = this._now() + ms;
    this._waitForAttempt(ms);
    this._setState(state === PolicyState.OPEN ? ConnectionState.PAUSED : ConnectionState.RECONNECTING, {
      delay, at, attempt, failures, code, reason,
    });
  }

  /**
   * The attempt timer: when it fires, the policy says whether the attempt is due.
   * @param {number} ms
   */
  _waitForAttempt(ms) {
    this._timers.schedule('attempt', ms, () => {
      if (this.policy.onTimer(this._seconds())) {
        this._openSocket();
      } else if (this.policy.retryAt !== null) {
        // Fired before this connection's clock says so (timers and clocks drift): wait out the rest.
        this._waitForAttempt(Math.max(1, (this.policy.retryAt - this._seconds()) * 1000));
      }
    });
  }

  /** Start the pending attempt now, where the policy allows it (see retryNow and nudge). */
  _startEarly() {
    if (this.policy.reconnectNow(this._seconds())) this._openSocket();
  }

  // -- receiving --------------------------------------------------------------------------

  /** @param {unknown} data */
  _receive(data) {
    this._receivedCount += 1;
    this._receivedAt = this._now();
    if (typeof data === 'string') {
      this._receiveText(data);
    } else if (this._attached) {
      const bytes = ArrayBuffer.isView(data)
        ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
        : new Uint8Array(/** @type {ArrayBuffer} */ (data));
      this._receiveOutput(bytes);
    }
  }

  /** @param {Uint8Array} bytes */
  _receiveOutput(bytes) {
    const position = this.position ?? 0; // attached: set by the hello
    const replay = position < this.head;
    this.position = position + bytes.length;
    this.emit('output', bytes, { replay });
  }

  /** @param {string} text */
  _receiveText(text) {
    let message;
    try {
      message = JSON.parse(text);
    } catch {
      this._protocolError(`not JSON: ${text.slice(0, 80)}`);
      return;
    }
    if (!this._attached) {
      if (message?.type === 'hello') this._receiveHello(message);
      else this._protocolError(`expected hello, got ${message?.type}`);
      return;
    }
    this._receiveMessage(message);
  }

  /** @param {Hello} hello */
  _receiveHello(hello) {
    this._timers.cancel('connect');
    this._attached = true;
    this.hello = hello;
    this.session = hello.session;
    this._mayCreate = false;
    this.position = hello.replay_from;
    this.head = hello.head;
    this.exit = null;
    this._input.resume(hello.input_acked ?? 0);
    this.policy.onConnected(this._seconds());
    this.emit('hello', hello);
    if (hello.gap > 0) this.emit('reset', 'gap');
    if (hello.restore) this.emit('restore', hello.restore);
    this._sendFrames(this._input.frames());
    this._schedulePing();
    this._setState(ConnectionState.CONNECTED, {
      session: hello.session, created: hello.created, gap: hello.gap,
    });
  }

  /** @param {any} message a parsed JSON message */
  _receiveMessage(message) {
    switch (message?.type) {
      case 'ack':
        this._input.acknowledge(message.input);
        this.emit('ack', message.input);
        break;
      case 'resize':
        this.emit('remote-resize', { cols: message.cols, rows: message.rows });
        break;
      case 'pong':
        this.latency = this._now() - message.t;
        this.emit('latency', this.latency);
        break;
      case 'exit':
        this.exit = { code: message.code ?? null, signal: message.signal ?? null };
        this.emit('exit', this.exit);
        break;
      case 'error':
        this.emit('server-error', { code: message.code, message: message.message });
        break;
      default:
        break; // a newer server's message: ignored, for forward compatibility
    }
  }

  // -- sending, liveness ------------------------------------------------------------------

  /** @param {Iterable<Uint8Array>} chunks */
  _sendFrames(chunks) {
    for (const chunk of chunks) {
      for (let at = 0; at < chunk.length; at += MAX_FRAME_BYTES) {
        this._sendRaw(chunk.subarray(at, at + MAX_FRAME_BYTES));
      }
    }
  }

  /** @param {object} message */
  _sendJson(message) {
    this._sendRaw(JSON.stringify(message));
  }

  /** @param {string | Uint8Array} data */
  _sendRaw(data) {
    try {
      this._ws?.send(data);
    } catch {
      // the socket is closing; queued input is re-sent on the next connection
    }
  }

  _schedulePing() {
    this._schedule('ping', this.timings.pingInterval, () => {
      if (this._now() - this._receivedAt > this._scaled(this.timings.deadAfter)) {
        this._dropSocket('no answer from the server');
        return;
      }
      this.ping();
      this._schedulePing();
    });
  }

  _probe() {
    if (this._timers.has('probe')) return;
    const before = this._receivedCount;
    this.ping();
    this._schedule('probe', this.timings.probeTimeout, () => {
      if (this._receivedCount > before) return;
      this._dropSocket('no answer from the server');
      this.nudge();
    });
  }

  // -- plumbing ---------------------------------------------------------------------------

  /** The policy's clock: this connection's, in seconds. */
  _seconds() {
    return this._now() / 1000;
  }

  /**
   * @param {ConnectionStateName} state
   * @param {Record<string, unknown>} info
   */
  _setState(state, info) {
    this.state = state;
    this.stateInfo = { state, ...info };
    this.emit('state', this.stateInfo);
  }

  /** @param {number} seconds */
  _scaled(seconds) {
    return seconds * 1000 * this.timeScale;
  }

  /**
   * @param {string} name
   * @param {number} seconds
   * @param {() => void} callback
   */
  _schedule(name, seconds, callback) {
    this._timers.schedule(name, this._scaled(seconds), callback);
  }

  /** @param {boolean} on */
  _listenToEnvironment(on) {
    if (!this._environment || this._listening === on) return;
    this._listening = on;
    const method = on ? 'addEventListener' : 'removeEventListener';
    this._environment.window[method]('online', this._onOnline);
    this._environment.document[method]('visibilitychange', this._onVisibility);
  }
}
