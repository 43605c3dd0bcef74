// A program of someone else's that installed @tether/client (and the `ws` package) from npm:
// copied into a scratch project by test_npm_package.py and run there with node, so that every
// import below resolves through that project's node_modules. It opens a shell, runs a command,
// detaches, attaches again with a second connection and prints what it saw as one JSON line.
//   node npm_consumer.mjs WS_URL PROJECT
import WebSocket from 'ws';
import { ConnectionState, TetherConnection } from '@tether/client';
import { TerminalBinding } from '@tether/client/terminal-binding';

const [url, project] = process.argv.slice(2);
const COMMAND = 'echo tether-$((6*7))\r';
const MARKER = 'tether-42';

setTimeout(() => {
  console.error('npm_consumer: no result within 20 s');
  process.exit(1);
}, 20_000).unref();

/** Resolves with the connection's first event of `type` whose arguments satisfy `check`. */
function next(connection, type, check = () => true) {
  return new Promise((resolve) => {
    const off = connection.on(type, (...args) => {
      if (check(...args)) {
        off();
        resolve(args[0]);
      }
    });
  });
}

/** A terminal with xterm.js's small surface, recording what is written to it. */
function recordingTerminal() {
  const decoder = new TextDecoder();
  const noListener = () => ({ dispose() {} });
  const terminal = {
    cols: 80, rows: 24, text: '',
    write(data, callback) {
      terminal.text += typeof data === 'string' ? data : decoder.decode(data, { stream: true });
      callback?.();
    },
    onData: noListener, onBinary: noListener, onResize: noListener,
  };
  return terminal;
}

// First connection: a new shell; type a command and wait for its output and for the input's ack.
const first = new TetherConnection({ url, project, WebSocket, cols: 80, rows: 24 });
const firstTerminal = recordingTerminal();
new TerminalBinding(first, firstTerminal);
const hello = next(first, 'hello');
first.connect();
const created = (await hello).created;
const acked = next(first, 'ack', () => first.pendingInput === 0);
const seen = new Promise((resolve) => {
  const off = first.on('output', () => {
    if (firstTerminal.text.includes(MARKER)) { off(); resolve(); }
  });
});
first.send(COMMAND);
await Promise.all([acked, seen]);
const session = first.session;
first.close();

// Second connection, as after a reload: attach to that session and get the screen back.
const second = new TetherConnection({ url, project, session, WebSocket, create: false });
const secondTerminal = recordingTerminal();
new TerminalBinding(second, secondTerminal);
const secondHello = next(second, 'hello');
second.connect();
const again = await secondHello;
await new Promise((resolve) => {
  if (secondTerminal.text.includes(MARKER)) resolve();
  const off = second.on('output', () => {
    if (secondTerminal.text.includes(MARKER)) { off(); resolve(); }
  });
});
const state = second.state;
second.close();

console.log(JSON.stringify({
  created, session, acknowledged: first.acknowledgedInput, reattachedCreated: again.created,
  reattachedSession: again.session, state, connected: state === ConnectionState.CONNECTED,
}));
process.exit(0);
