// TerminalBinding: wires a TetherConnection to any xterm.js-compatible terminal (one with
// write(data, callback), onData, onBinary, onResize, cols, rows).
//
// Why the replay filter: writing the replay makes the terminal parse queries the program sent
// long ago (cursor position, device attributes, …) and the terminal answers each one through
// onData as if the user typed it. Those queries were answered when they were first made;
// answering again types junk into the shell. So while any replay write (reset, restore, replayed
// output) is still being parsed, the terminal's automatic answers are dropped. Keys typed in that
// moment still go through.

// The terminal's automatic answers: cursor position (CSI row;col R, DECXCPR CSI ? row;col R),
// device attributes (CSI ? … c, CSI > … c, DCS ! | … ST), device status (CSI 0 n), mode reports
// (CSI ? … $ y), window reports (CSI … t) and colour reports (OSC 4/10/11/12 ; … BEL|ST).
const AUTOMATIC_ANSWER = new RegExp(
  [
    '\\x1b\\[\\??\\d+;\\d+(?:;\\d+)?R',
    '\\x1b\\[[?>=][\\d;]*c',
    '\\x1bP!\\|[0-9A-Fa-f]*\\x1b\\\\',
    '\\x1b\\[\\??\\d*n',
    '\\x1b\\[\\??[\\d;]*\\$y',
    '\\x1b\\[\\d+(?:;\\d+)*t',
    '\\x1b\\](?:4;\\d+|1[0-2]);[^\\x07\\x1b]*(?:\\x07|\\x1b\\\\)',
  ].join('|'),
  'g',
);

/**
 * `data` without the terminal's automatic answers.
 * @param {string} data
 */
export function stripAutomaticAnswers(data) {
  return data.replace(AUTOMATIC_ANSWER, '');
}

/** A binary string (one char per byte, as xterm's onBinary gives) as bytes. */
function binaryStringToBytes(data) {
  return Uint8Array.from(data, (char) => char.charCodeAt(0) & 0xff);
}

const FULL_RESET = '\x1bc';

export class TerminalBinding {
  /**
   * @param {import('./connection.js').TetherConnection} connection
   * @param {object} terminal an xterm.js Terminal (or anything with the same small surface)
   */
  constructor(connection, terminal) {
    this.connection = connection;
    this.terminal = terminal;
    this._replayWrites = 0;
    if (!connection.cols || !connection.rows) connection.resize(terminal.cols, terminal.rows);
    const disposables = [
      terminal.onData((data) => this._forwardInput(data)),
      terminal.onBinary((data) => connection.send(binaryStringToBytes(data))),
      terminal.onResize(({ cols, rows }) => connection.resize(cols, rows)),
    ];
    const unsubscribes = [
      // Written into the stream (not terminal.reset()) so it lands after output already queued.
      connection.on('reset', () => this._write(FULL_RESET, true)),
      connection.on('restore', (restore) => this._write(restore, true)),
      connection.on('output', (bytes, { replay }) => this._write(bytes, replay)),
    ];
    this._dispose = () => {
      for (const disposable of disposables) disposable.dispose();
      for (const unsubscribe of unsubscribes) unsubscribe();
    };
  }

  /** True while replayed bytes are still being parsed by the terminal. */
  get isReplaying() {
    return this._replayWrites > 0;
  }

  /** Stop forwarding in both directions (the terminal and the connection stay as they are). */
  dispose() {
    this._dispose();
  }

  _forwardInput(data) {
    const input = this.isReplaying ? stripAutomaticAnswers(data) : data;
    if (input) this.connection.send(input);
  }

  _write(data, isReplay) {
    if (!isReplay) {
      this.terminal.write(data);
      return;
    }
    this._replayWrites += 1;
    this.terminal.write(data, () => { this._replayWrites -= 1; });
  }
}
