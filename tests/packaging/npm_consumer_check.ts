// Type-checked (never run) by test_npm_package.py in a scratch project that installed the packed
// @tether/client and xterm.js: the package's exports resolve to its declaration files, those are
// precise enough to catch a caller's mistakes, and xterm.js's Terminal fits the binding.
import { Terminal } from '@xterm/xterm';
import { ConnectionState, TetherConnection, actionFor } from '@tether/client';
import { TerminalBinding, connectTerminal } from '@tether/client/terminal-binding';

const connection = new TetherConnection({ url: 'ws://127.0.0.1:1/ws/terminal', project: 'default' });
const position: number | null = connection.position;
const connected: boolean = connection.state === ConnectionState.CONNECTED;
const action: 'stop' | 'retry' | 'retry_now' = actionFor(4004);
// @ts-expect-error the project is required
new TetherConnection({ url: 'ws://127.0.0.1:1/ws/terminal' });
// @ts-expect-error input is a string or bytes
connection.send(42);
connection.on('output', (bytes, { replay }) => bytes.byteLength + Number(replay));
// @ts-expect-error `hello` carries the hello message, whose session is a string
connection.on('hello', (hello) => hello.session * 2);

const term = new Terminal();
const binding = new TerminalBinding(connection, term);
const started = connectTerminal(term, { url: 'ws://127.0.0.1:1/ws/terminal', project: 'p' });
export { action, binding, connected, position, started };
