// TerminalBinding: wires a TetherConnection to any xterm.js-compatible terminal (one with
// write(data, callback), onData, onBinary, onResize, cols, rows). Published as
// '@tether/client/terminal-binding'; it imports nothing of xterm.js (the package's optional peer
// dependency names the versions it is tested with).
//
// Why the replay filter: writing the replay makes the terminal parse queries the program sent
// long ago (cursor position, device attributes, …) and the terminal answers each one through
// onData as if the user typed it. Those queries were answered when they were first made;
// answering again types junk into the shell. So while any replay write (reset, restore, replayed
// output) is still being parsed, the terminal's automatic answers are dropped. Keys typed in that
// moment still go through.
import { TetherConnection } from './connection.js';

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

/**
 * A binary string (one char per byte, as xterm's onBinary gives) as bytes.
 * @param {string} data
 */
function binaryStringToBytes(data) {
  return Uint8Array.from(data, (char) => char.charCodeAt(0) & 0xff);
}

const FULL_RESET = '\x1bc';

/** @typedef {{dispose(): void}} Disposable */
/**
 * The part of xterm.js's `Terminal` the binding uses.
 * @typedef {object} TerminalLike
 * @property {number} cols
 * @property {number} rows
 * @property {(data: string | Uint8Array, callback?: () => void) => void} write
 * @property {(listener: (data: string) => void) => Disposable} onData
 * @property {(listener: (data: string) => void) => Disposable} onBinary
 * @property {(listener: (size: {cols: number, rows: number}) => void) => Disposable} onResize
 */

export class TerminalBinding {
  /**
   * @param {TetherConnection} connection
   * @param {TerminalLike} terminal an xterm.js Terminal (or anything with the same small surface)
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

  /** @param {string} data */
  _forwardInput(data) {
    const input = this.isReplaying ? stripAutomaticAnswers(data) : data;
    if (input) this.connection.send(input);
  }

  /**
   * @param {string | Uint8Array} data
   * @param {boolean} isReplay
   */
  _write(data, isReplay) {
    if (!isReplay) {
      this.terminal.write(data);
      return;
    }
    this._replayWrites += 1;
    this.terminal.write(data, () => { this._replayWrites -= 1; });
  }
}

/**
 * Connect `terminal` to a tether session in one call.
 * @param {TerminalLike} terminal an xterm.js Terminal, already opened
 * @param {ConstructorParameters<typeof TetherConnection>[0]} options
 * @returns {{connection: TetherConnection, binding: TerminalBinding}}
 */
export function connectTerminal(terminal, options) {
  const connection = new TetherConnection({ cols: terminal.cols, rows: terminal.rows, ...options });
  const binding = new TerminalBinding(connection, terminal);
  connection.connect();
  return { connection, binding };
}
