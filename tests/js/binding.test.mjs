// TerminalBinding: output to the terminal in order, input back, and no automatic answers
// forwarded while the replay is being parsed.
import { afterEach, beforeEach, describe, mock, test } from 'node:test';
import assert from 'node:assert/strict';
import { TetherConnection } from '../../web/packages/client/src/index.js';
import { TerminalBinding, stripAutomaticAnswers } from '../../web/packages/client/src/terminal-binding.js';
import { FakeTerminal, fakeWebSocketClass } from './fakes.mjs';

let Socket;
beforeEach(() => {
  mock.timers.enable({ apis: ['setTimeout', 'Date'] });
  Socket = fakeWebSocketClass();
});
afterEach(() => mock.timers.reset());

function bound() {
  const terminal = new FakeTerminal();
  const connection = new TetherConnection({
    url: 'ws://h/ws/terminal', project: 'p', clientId: 'client-abcdefgh', WebSocket: Socket, environment: null,
  });
  const binding = new TerminalBinding(connection, terminal);
  connection.connect();
  return { terminal, connection, binding };
}

describe('automatic answers', () => {
  test('cursor position, device attributes and status reports are recognised', () => {
    const answers = [
      '\x1b[24;80R', '\x1b[1;1R', '\x1b[?5;10;1R', '\x1b[?1;2c', '\x1b[?62;22c', '\x1b[>0;276;0c',
      '\x1b[>41;354;0c', '\x1b[0n', '\x1b[?1049;1$y', '\x1b[8;24;80t', '\x1b]11;rgb:1616/1818/1d1d\x1b\\',
      '\x1b]10;rgb:ffff/ffff/ffff\x07', '\x1bP!|00000000\x1b\\',
    ];
    for (const answer of answers) assert.equal(stripAutomaticAnswers(`a${answer}b`), 'ab', JSON.stringify(answer));
  });

  test('keys are left alone', () => {
    for (const key of ['ls\r', '\x1b[A', '\x1bOA', '\x1b[3~', '\x1b[1;5C', '\x03', 'é', '\x1b[200~x\x1b[201~']) {
      assert.equal(stripAutomaticAnswers(key), key);
    }
  });
});

describe('binding', () => {
  test('the terminal size goes into the first connect', () => {
    bound();
    assert.equal(Socket.last.url.searchParams.get('cols'), '80');
    assert.equal(Socket.last.url.searchParams.get('rows'), '24');
  });

  test('reset, restore and replay are written in order, then live output', () => {
    const { terminal } = bound();
    Socket.last.receiveHello({ replay_from: 10, gap: 10, head: 13, restore: '\x1b[?1049h' });
    Socket.last.receiveOutput('abc');
    Socket.last.receiveOutput('live');
    assert.deepEqual(terminal.writes, ['\x1bc', '\x1b[?1049h', 'abc', 'live']);
  });

  test('answers produced while the replay is parsed are dropped; keys go through', () => {
    const { terminal, binding } = bound();
    Socket.last.receiveHello({ replay_from: 0, head: 6, created: false });
    Socket.last.receiveOutput('\x1b[6n\x1b[c');
    assert.ok(binding.isReplaying);
    terminal.emitData('\x1b[24;1R');
    terminal.emitData('\x1b[?1;2c');
    terminal.emitData('x');
    terminal.flush();
    assert.ok(!binding.isReplaying);
    terminal.emitData('\x1b[24;1R'); // a live query's answer: the program is waiting for it
    assert.equal(Socket.last.sentInput(), 'x\x1b[24;1R');
  });

  test('the restore alone counts as replay', () => {
    const { terminal } = bound();
    Socket.last.receiveHello({ replay_from: 5, head: 5, restore: '\x1b[?1h' });
    terminal.emitData('\x1b[2;2R');
    terminal.flush();
    terminal.emitData('\x1b[2;2R');
    assert.equal(Socket.last.sentInput(), '\x1b[2;2R');
  });

  test('binary input (mouse reports) is sent as bytes', () => {
    const { terminal } = bound();
    Socket.last.receiveHello();
    terminal.emitBinary('\x1b[M \xff\x80');
    const frame = Socket.last.sent.find((d) => typeof d !== 'string');
    assert.deepEqual([...frame], [0x1b, 0x5b, 0x4d, 0x20, 0xff, 0x80]);
  });

  test('terminal resizes go to the server', () => {
    const { terminal } = bound();
    Socket.last.receiveHello();
    terminal.emitResize(132, 43);
    assert.deepEqual(Socket.last.sentMessages(), [{ type: 'resize', cols: 132, rows: 43 }]);
  });

  test('dispose stops forwarding', () => {
    const { terminal, binding } = bound();
    Socket.last.receiveHello();
    binding.dispose();
    terminal.emitData('x');
    Socket.last.receiveOutput('y');
    assert.equal(Socket.last.sentInput(), '');
    assert.deepEqual(terminal.writes, []);
  });
});
