// @tether/client — the client of tether's wire protocol (docs/protocol.md): one terminal session
// over a WebSocket, kept alive by the reconnection policy, with exactly-once input and resume by
// offset. No DOM, no framework, no dependencies: it runs in browsers and in Node (pass a
// WebSocket implementation there). The xterm.js binding is '@tether/client/terminal-binding'.
// See docs/web.md.
//
//   import { TetherConnection } from '@tether/client';
//   import { TerminalBinding } from '@tether/client/terminal-binding';
//   const connection = new TetherConnection({ url: 'wss://host/ws/terminal', project: 'default' });
//   new TerminalBinding(connection, term);
//   connection.on('state', (info) => showStatus(info));
//   connection.connect();
export { actionFor, closeCodeMeaning, closeCodeName, isStopCode, retryAfterSeconds } from './close-codes.js';
export {
  BreakerState, FAILURES_TO_OPEN, MAX_BACKOFF, OPEN_SECONDS, PolicyError, PolicyState, ReconnectPolicy,
  backoffDelay,
} from './policy.js';
export { InputQueue, MAX_FRAME_BYTES } from './input-queue.js';
export {
  ConnectionState, DEFAULT_TIMINGS, PROTOCOL, TetherConnection, newClientId,
} from './connection.js';

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
