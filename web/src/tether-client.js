// tether-client.js — what the page imports and what tether serves as /static/tether-client.js:
// the client package (web/packages/client, published as @tether/client) in one module, the
// xterm.js binding included. See docs/web.md.
//
//   import { TetherConnection, TerminalBinding } from '/static/tether-client.js';
export * from '../packages/client/src/index.js';
export { TerminalBinding, connectTerminal, stripAutomaticAnswers } from '../packages/client/src/terminal-binding.js';
