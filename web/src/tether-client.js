// tether-client.js — the browser client of tether's wire protocol (docs/protocol.md), for use
// with any xterm.js instance. No framework, no dependencies; close codes come from the server's
// own table (src/tether/protocol/close_codes.json), bundled in. See docs/web.md.
//
//   import { TetherConnection, TerminalBinding } from '/static/tether-client.js';
//   const connection = new TetherConnection({ url: 'wss://host/ws/terminal', project: 'default' });
//   new TerminalBinding(connection, term);
//   connection.on('state', (info) => showStatus(info));
//   connection.connect();
export { actionFor, closeCodeMeaning, closeCodeName, isStopCode, retryAfterSeconds } from './client/close-codes.js';
export { BreakerState, PolicyError, PolicyState, ReconnectPolicy, backoffDelay } from './client/policy.js';
export { InputQueue, MAX_FRAME_BYTES } from './client/input-queue.js';
export {
  ConnectionState, DEFAULT_TIMINGS, PROTOCOL, TetherConnection, newClientId,
} from './client/connection.js';
export { TerminalBinding, stripAutomaticAnswers } from './client/terminal-binding.js';

import { TetherConnection } from './client/connection.js';
import { TerminalBinding } from './client/terminal-binding.js';

/**
 * The WebSocket endpoint of the tether server that served `location` (http → ws, https → wss),
 * relative to the page so that it works behind a path prefix.
 * @param {string | URL} location
 */
export function terminalUrl(location) {
  const url = new URL('ws/terminal', location);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  url.search = '';
  url.hash = '';
  return url.toString();
}

/**
 * Connect `terminal` to a tether session in one call.
 * @param {object} terminal an xterm.js Terminal, already opened
 * @param {ConstructorParameters<typeof TetherConnection>[0]} options
 * @returns {{connection: TetherConnection, binding: TerminalBinding}}
 */
export function connectTerminal(terminal, options) {
  const connection = new TetherConnection({ cols: terminal.cols, rows: terminal.rows, ...options });
  const binding = new TerminalBinding(connection, terminal);
  connection.connect();
  return { connection, binding };
}
