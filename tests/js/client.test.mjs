// TetherConnection against a fake WebSocket, with fake timers: URLs, resume, exactly-once input,
// the reconnection schedule as the client runs it, stop codes, liveness, online/visibility.
import { afterEach, beforeEach, describe, mock, test } from 'node:test';
import assert from 'node:assert/strict';
import { ConnectionState, TetherConnection } from '../../web/packages/client/src/index.js';
import { fakeEnvironment, fakeWebSocketClass } from './fakes.mjs';

const URL_BASE = 'ws://127.0.0.1:4001/ws/terminal';
let Socket;
let environment;

beforeEach(() => {
  mock.timers.enable({ apis: ['setTimeout', 'Date'], now: 1_000_000 });
  Socket = fakeWebSocketClass();
  environment = fakeEnvironment();
});

afterEach(() => mock.timers.reset());

function connection(options = {}) {
  const client = new TetherConnection({
    url: URL_BASE, project: 'default', clientId: 'client-abcdefgh', cols: 100, rows: 30,
    WebSocket: Socket, environment, ...options,
  });
  client.states = [];
  client.on('state', (info) => client.states.push(info));
  return client;
}

/** A connection that reached its hello. */
function connected(options = {}, hello = {}) {
  const client = connection(options);
  client.connect();
  Socket.last.receiveHello(hello);
  return client;
}

function tick(ms) { mock.timers.tick(ms); }

function query(socket) { return Object.fromEntries(socket.url.searchParams); }

describe('connecting', () => {
  test('a first connect asks for a new session at the terminal size', () => {
    connection().connect();
    assert.equal(Socket.instances.length, 1);
    assert.equal(Socket.last.protocol, 'tether.v1');
    assert.equal(Socket.last.url.pathname, '/ws/terminal');
    assert.deepEqual(query(Socket.last), { project: 'default', client: 'client-abcdefgh', cols: '100', rows: '30' });
  });

  test('a stored session is attached with create=0 and no offset (a page reload)', () => {
    connection({ session: 'session_1754900000000_k3j9x0' }).connect();
    assert.deepEqual(query(Socket.last), {
      project: 'default', session: 'session_1754900000000_k3j9x0', client: 'client-abcdefgh',
      cols: '100', rows: '30', create: '0',
    });
  });

  test('null-ish session ids mean a new session', () => {
    for (const session of ['', 'null', 'undefined', 'NaN', null]) {
      assert.equal(connection({ session }).session, null);
    }
  });

  test('the hello makes it connected; a reconnect resumes at the offset with create=0', () => {
    const client = connected({}, { replay_from: 0, head: 0 });
    assert.equal(client.state, ConnectionState.CONNECTED);
    assert.equal(client.session, 'session_1754900000000_abcdefghijklmnopqrst');
    Socket.last.receiveOutput('hello\r\n');
    client.resize(120, 40);
    Socket.last.receiveClose(1006);
    tick(1000);
    assert.deepEqual(query(Socket.last), {
      project: 'default', session: 'session_1754900000000_abcdefghijklmnopqrst', client: 'client-abcdefgh',
      offset: '7', cols: '120', rows: '40', create: '0',
    });
  });

  test('a URL that already has a query keeps it', () => {
    connection({ url: `${URL_BASE}?x=1`, token: 'secret' }).connect();
    assert.equal(query(Socket.last).x, '1');
    assert.equal(query(Socket.last).token, 'secret');
  });

  test('url and project are required', () => {
    assert.throws(() => new TetherConnection({ project: 'p' }), TypeError);
    assert.throws(() => new TetherConnection({ url: URL_BASE }), TypeError);
  });
});

describe('output and resume', () => {
  test('position counts bytes from replay_from; output up to head is replay', () => {
    const client = connected({}, { replay_from: 100, head: 105, created: false });
    const seen = [];
    client.on('output', (bytes, { replay }) => seen.push([new TextDecoder().decode(bytes), replay]));
    Socket.last.receiveOutput('abc');
    Socket.last.receiveOutput('de');
    Socket.last.receiveOutput('fg');
    assert.deepEqual(seen, [['abc', true], ['de', true], ['fg', false]]);
    assert.equal(client.position, 107);
  });

  test('a gap resets the terminal, then restore, then the replay', () => {
    const client = connected({}, { replay_from: 0, head: 0 });
    Socket.last.receiveOutput('x'.repeat(10));
    Socket.last.receiveClose(1006);
    tick(1000);
    const events = [];
    client.on('reset', (why) => events.push(['reset', why]));
    client.on('restore', (restore) => events.push(['restore', restore]));
    client.on('output', (bytes, { replay }) => events.push(['output', bytes.length, replay]));
    assert.equal(query(Socket.last).offset, '10');
    Socket.last.receiveHello({ created: false, replay_from: 50, gap: 40, head: 60, restore: '\x1b[?1049h' });
    Socket.last.receiveOutput('y'.repeat(10));
    assert.deepEqual(events, [['reset', 'gap'], ['restore', '\x1b[?1049h'], ['output', 10, true]]);
    assert.equal(client.position, 60);
  });

  test('no gap: no reset, no restore', () => {
    const client = connected({}, { replay_from: 0, head: 0 });
    Socket.last.receiveOutput('abc');
    Socket.last.receiveClose(1001);
    tick(1000);
    const events = [];
    client.on('reset', () => events.push('reset'));
    client.on('restore', () => events.push('restore'));
    Socket.last.receiveHello({ created: false, replay_from: 3, head: 3 });
    assert.deepEqual(events, []);
  });

  test('output before the hello is ignored', () => {
    const client = connection();
    client.connect();
    Socket.last.receiveOutput('early');
    Socket.last.receiveHello();
    assert.equal(client.position, 0);
  });

  test('a stale socket is ignored after a newer one took over', () => {
    const client = connected();
    const old = Socket.last;
    old.receiveClose(1006);
    tick(1000);
    Socket.last.receiveHello({ created: false });
    old.receiveOutput('ghost');
    old.receiveClose(1006);
    assert.equal(client.position, 0);
    assert.equal(client.state, ConnectionState.CONNECTED);
  });
});

describe('exactly-once input', () => {
  test('unacknowledged input is re-sent after the hello, minus what the server wrote', () => {
    const client = connected();
    client.send('ab');
    client.send('c');
    Socket.last.receiveJson({ type: 'ack', input: 2 });
    assert.equal(client.pendingInput, 1);
    Socket.last.receiveClose(1006);
    client.send('de'); // typed while disconnected
    tick(1000);
    const second = Socket.last;
    assert.equal(second.sentInput(), '');
    second.receiveHello({ created: false, input_acked: 3 }); // 'c' did reach the shell
    assert.equal(second.sentInput(), 'de');
    assert.equal(client.acknowledgedInput, 3);
  });

  test('nothing acknowledged: everything is sent again', () => {
    const client = connected();
    client.send('echo hi\r');
    Socket.last.receiveClose(1006);
    tick(1000);
    Socket.last.receiveHello({ created: false, input_acked: 0 });
    assert.equal(Socket.last.sentInput(), 'echo hi\r');
  });

  test('an ack beyond a chunk boundary drops a prefix of the next chunk', () => {
    const client = connected();
    client.send('abc');
    client.send('def');
    Socket.last.receiveClose(1006);
    tick(1000);
    Socket.last.receiveHello({ created: false, input_acked: 4 });
    assert.equal(Socket.last.sentInput(), 'ef');
  });

  test('input over 64 KiB goes in several frames', () => {
    const client = connected();
    client.send('z'.repeat(150 * 1024));
    const frames = Socket.last.sent.filter((d) => typeof d !== 'string');
    assert.deepEqual(frames.map((f) => f.length), [65536, 65536, 22528]);
  });

  test('bytes and strings are both input; UTF-8 counts bytes', () => {
    const client = connected();
    client.send('é');
    client.send(new Uint8Array([1, 2]));
    assert.equal(client.pendingInput, 4);
  });
});

describe('the reconnection schedule, as the client runs it', () => {
  test('1, 2, 4, 8, 16 s, then paused 30 s, then a trial; its success connects', () => {
    const client = connected();
    Socket.last.receiveClose(1006);
    const starts = [];
    for (const delay of [1000, 2000, 4000, 8000, 16000]) {
      const before = Socket.instances.length;
      tick(delay - 1);
      assert.equal(Socket.instances.length, before, `no attempt before ${delay} ms`);
      tick(1);
      assert.equal(Socket.instances.length, before + 1, `an attempt at ${delay} ms`);
      starts.push(client.stateInfo.attempt);
      Socket.last.receiveClose(1006);
    }
    assert.deepEqual(starts, [1, 2, 3, 4, 5]);
    assert.equal(client.state, ConnectionState.PAUSED);
    assert.equal(client.stateInfo.failures, 5);
    assert.equal(client.stateInfo.at, Date.now() + 30000);
    tick(29999);
    assert.equal(Socket.instances.length, 6);
    tick(1);
    assert.equal(Socket.instances.length, 7);
    assert.equal(client.stateInfo.trial, true);
    Socket.last.receiveHello({ created: false });
    assert.equal(client.state, ConnectionState.CONNECTED);
    assert.equal(client.policy.state, 'connected');
  });

  test('a failed trial pauses for another 30 s', () => {
    const client = connected();
    Socket.last.receiveClose(1006);
    for (const delay of [1000, 2000, 4000, 8000, 16000, 30000]) {
      tick(delay);
      Socket.last.receiveClose(1006);
    }
    assert.equal(client.state, ConnectionState.PAUSED);
    assert.equal(client.stateInfo.at, Date.now() + 30000);
  });

  test('state events say when: reconnecting in N s, paused until T', () => {
    const client = connected();
    const now = Date.now();
    Socket.last.receiveClose(1006);
    assert.deepEqual(client.stateInfo, {
      state: 'reconnecting', delay: 1, at: now + 1000, attempt: 1, failures: 0, code: 1006, reason: '',
    });
  });

  test('1012 reconnects at once', () => {
    connected();
    Socket.last.receiveClose(1012, 'restart');
    tick(0);
    assert.equal(Socket.instances.length, 2);
  });

  test('retry-after is honoured', () => {
    const client = connected();
    Socket.last.receiveClose(1006);
    tick(1000);
    Socket.last.receiveClose(4129, 'retry-after=5');
    assert.equal(client.stateInfo.delay, 5);
    tick(4999);
    assert.equal(Socket.instances.length, 2);
    tick(1);
    assert.equal(Socket.instances.length, 3);
  });

  test('online, visibility and retry now wait for a retry-after', () => {
    const client = connected();
    Socket.last.receiveClose(4129, 'retry-after=3');
    environment.goOnline();
    environment.becomeVisible();
    client.retryNow();
    tick(2999);
    assert.equal(Socket.instances.length, 1);
    tick(1);
    assert.equal(Socket.instances.length, 2);
  });

  test('no hello within the connect timeout fails the attempt', () => {
    const client = connection();
    client.connect();
    tick(10000);
    assert.deepEqual(Socket.instances[0].closedByClient, { code: 1000, reason: 'connect timeout' });
    assert.equal(client.state, ConnectionState.RECONNECTING);
    assert.equal(client.stateInfo.delay, 1);
  });

  test('timeScale shrinks the whole schedule', () => {
    const client = connected({ timeScale: 0.01 });
    Socket.last.receiveClose(1006);
    for (const delay of [10, 20, 40, 80, 160]) {
      tick(delay);
      Socket.last.receiveClose(1006);
    }
    assert.equal(client.state, ConnectionState.PAUSED);
    tick(300);
    assert.equal(Socket.instances.length, 7);
  });

  test('retry now starts the trial of a paused connection at once', () => {
    const client = connected();
    Socket.last.receiveClose(1006);
    for (const delay of [1000, 2000, 4000, 8000, 16000]) {
      tick(delay);
      Socket.last.receiveClose(1006);
    }
    client.retryNow();
    assert.equal(Socket.instances.length, 7);
    assert.equal(client.stateInfo.trial, true);
    Socket.last.receiveClose(1006);
    assert.equal(client.state, ConnectionState.PAUSED);
    tick(29999);
    assert.equal(Socket.instances.length, 7, 'the old timer was cancelled');
  });
});

describe('the policy behind the states', () => {
  test('each state the page shows is one state of the policy', () => {
    const client = connection();
    const pairs = [];
    client.on('state', (info) => pairs.push([info.state, client.policy.state, info.trial ?? null]));
    client.connect();
    Socket.last.receiveHello();
    Socket.last.receiveClose(1006);
    for (const delay of [1000, 2000, 4000, 8000, 16000]) {
      tick(delay);
      Socket.last.receiveClose(1006);
    }
    tick(30000);
    Socket.last.receiveClose(4004);
    assert.deepEqual(pairs, [
      ['connecting', 'connecting', false],
      ['connected', 'connected', null],
      ['reconnecting', 'waiting', null],
      ...[1, 2, 3, 4].flatMap(() => [['connecting', 'connecting', false], ['reconnecting', 'waiting', null]]),
      ['connecting', 'connecting', false],
      ['paused', 'open', null],
      ['connecting', 'half_open', true],
      ['ended', 'stopped', null],
    ]);
  });

  test('retry now cannot cut a retry-after short, even with the breaker open', () => {
    const client = connected();
    Socket.last.receiveClose(1006);
    for (const delay of [1000, 2000, 4000, 8000]) {
      tick(delay);
      Socket.last.receiveClose(1006);
    }
    tick(16000);
    Socket.last.receiveClose(4129, 'retry-after=45');
    assert.equal(client.state, ConnectionState.PAUSED);
    assert.equal(client.stateInfo.delay, 45);
    client.retryNow();
    tick(44999);
    assert.equal(Socket.instances.length, 6);
    tick(1);
    assert.equal(Socket.instances.length, 7);
    assert.equal(client.stateInfo.trial, true);
  });

  test('a timer that fires before the connection\'s clock says so waits out the rest', () => {
    let lag = 0;
    const client = connected({ now: () => Date.now() - lag });
    Socket.last.receiveClose(1006); // attempt 1 is due at now + 1000 by the connection's clock
    lag = 5; // from now on that clock runs 5 ms behind the timers
    tick(1000);
    assert.equal(Socket.instances.length, 1, 'not due yet by the connection\'s clock');
    assert.equal(client.state, ConnectionState.RECONNECTING);
    tick(4);
    assert.equal(Socket.instances.length, 1);
    tick(1);
    assert.equal(Socket.instances.length, 2);
    assert.equal(client.state, ConnectionState.CONNECTING);
  });

  test('close() stops the policy with 1000', () => {
    const client = connected();
    const events = [];
    client.policy.addListener((event) => events.push(event));
    client.close();
    assert.deepEqual([events.at(-1).state, events.at(-1).code], ['stopped', 1000]);
  });

  test('reconnect after an end starts the policy afresh', () => {
    const client = connected();
    Socket.last.receiveClose(4009);
    assert.equal(client.policy.state, 'stopped');
    client.reconnect();
    assert.deepEqual([client.policy.state, client.policy.attempt], ['connecting', 0]);
    Socket.last.receiveClose(1006);
    assert.equal(client.stateInfo.delay, 1);
  });
});

describe('stop codes', () => {
  for (const [code, reason] of [[4004, 'no session'], [4009, 'replaced'], [4013, 'killed'], [4000, 'bad offset'], [1000, '']]) {
    test(`${code} ends at once and never reconnects`, () => {
      const client = connected();
      Socket.last.receiveClose(code, reason);
      assert.equal(client.state, ConnectionState.ENDED);
      assert.equal(client.stateInfo.code, code);
      assert.equal(client.stateInfo.reason, reason);
      tick(10 * 60 * 1000);
      assert.equal(Socket.instances.length, 1);
    });
  }

  test('a stop code ends even a half-open trial', () => {
    const client = connected();
    Socket.last.receiveClose(1006);
    for (const delay of [1000, 2000, 4000, 8000, 16000, 30000]) {
      tick(delay);
      if (delay !== 30000) Socket.last.receiveClose(1006);
    }
    Socket.last.receiveClose(4004, 'gone');
    assert.equal(client.state, ConnectionState.ENDED);
  });

  test('the exit message comes with the 4012 end', () => {
    const client = connected();
    Socket.last.receiveJson({ type: 'exit', code: 3, signal: null });
    Socket.last.receiveClose(4012, 'shell exited');
    assert.deepEqual(client.stateInfo.exit, { code: 3, signal: null });
    assert.equal(client.stateInfo.name, 'exited');
  });

  test('start a new session: no session id, creation allowed, a fresh input stream', () => {
    const client = connected();
    client.send('lost');
    Socket.last.receiveClose(4004);
    const resets = [];
    client.on('reset', (why) => resets.push(why));
    client.startNewSession();
    assert.deepEqual(resets, ['new-session']);
    assert.deepEqual(query(Socket.last), { project: 'default', client: 'client-abcdefgh', cols: '100', rows: '30' });
    Socket.last.receiveHello({ session: 'session_1754900000001_newnewnewnewnewnewne' });
    assert.equal(Socket.last.sentInput(), '');
    assert.equal(client.session, 'session_1754900000001_newnewnewnewnewnewne');
  });

  test('reconnect after 4009 attaches again', () => {
    const client = connected();
    Socket.last.receiveClose(4009);
    client.reconnect();
    assert.equal(query(Socket.last).create, '0');
    Socket.last.receiveHello({ created: false });
    assert.equal(client.state, ConnectionState.CONNECTED);
  });

  test('close() stops everything', () => {
    const client = connected();
    const socket = Socket.last;
    client.close();
    assert.deepEqual(socket.closedByClient, { code: 1000, reason: 'closed by the user' });
    assert.equal(client.state, ConnectionState.CLOSED);
    tick(60000);
    assert.equal(Socket.instances.length, 1);
  });
});

describe('liveness, online and visibility', () => {
  test('a ping every 15 s; the pong gives the latency', () => {
    const client = connected();
    tick(15000);
    const [ping] = Socket.last.sentMessages();
    assert.deepEqual(ping, { type: 'ping', t: Date.now() });
    tick(42);
    Socket.last.receiveJson({ type: 'pong', t: ping.t });
    assert.equal(client.latency, 42);
  });

  test('nothing heard for 40 s: the connection is dropped and retried', () => {
    const client = connected();
    tick(45000);
    assert.equal(Socket.instances[0].closedByClient?.code, 1000);
    assert.equal(client.state, ConnectionState.RECONNECTING);
  });

  test('online while waiting to reconnect: attempt now', () => {
    const client = connected();
    Socket.last.receiveClose(1006);
    tick(1000);
    Socket.last.receiveClose(1006); // now waiting 2 s
    environment.goOnline();
    assert.equal(Socket.instances.length, 3);
    assert.equal(client.stateInfo.attempt, 2, 'the same attempt, brought forward');
  });

  test('visible again while waiting: attempt now; hidden: nothing', () => {
    connected();
    Socket.last.receiveClose(1006);
    environment.becomeHidden();
    assert.equal(Socket.instances.length, 1);
    environment.becomeVisible();
    assert.equal(Socket.instances.length, 2);
  });

  test('online while paused does not get around the breaker', () => {
    const client = connected();
    Socket.last.receiveClose(1006);
    for (const delay of [1000, 2000, 4000, 8000, 16000]) {
      tick(delay);
      Socket.last.receiveClose(1006);
    }
    environment.goOnline();
    environment.becomeVisible();
    assert.equal(Socket.instances.length, 6);
    assert.equal(client.state, ConnectionState.PAUSED);
  });

  test('online while connected probes; no answer in 5 s reconnects at once', () => {
    const client = connected();
    environment.goOnline();
    assert.equal(Socket.last.sentMessages()[0].type, 'ping');
    tick(5000);
    assert.equal(Socket.instances.length, 2);
    assert.equal(client.state, ConnectionState.CONNECTING);
    assert.equal(query(Socket.last).create, '0');
  });

  test('a probe that is answered keeps the connection', () => {
    const client = connected();
    environment.goOnline();
    tick(10);
    Socket.last.receiveJson({ type: 'pong', t: Date.now() - 10 });
    tick(5000);
    assert.equal(Socket.instances.length, 1);
    assert.equal(client.state, ConnectionState.CONNECTED);
  });

  test('listeners are removed when the connection ends', () => {
    connected();
    Socket.last.receiveClose(4004);
    environment.goOnline();
    environment.becomeVisible();
    assert.equal(Socket.instances.length, 1);
  });
});

describe('other messages', () => {
  test('resize is sent when connected; a remote resize is an event', () => {
    const client = connected();
    const remote = [];
    client.on('remote-resize', (size) => remote.push(size));
    client.resize(90, 20);
    assert.deepEqual(Socket.last.sentMessages(), [{ type: 'resize', cols: 90, rows: 20 }]);
    Socket.last.receiveJson({ type: 'resize', cols: 70, rows: 10 });
    assert.deepEqual(remote, [{ cols: 70, rows: 10 }]);
  });

  test('error messages and unknown types leave the connection open', () => {
    const client = connected();
    const errors = [];
    client.on('server-error', (e) => errors.push(e.code));
    Socket.last.receiveJson({ type: 'error', code: 'bad_json', message: 'x' });
    Socket.last.receiveJson({ type: 'from-the-future' });
    assert.deepEqual(errors, ['bad_json']);
    assert.equal(client.state, ConnectionState.CONNECTED);
  });

  test('a frame that is not JSON closes with 1002 and resumes from the position held', () => {
    const client = connected();
    const errors = [];
    client.on('protocol-error', (e) => errors.push(e));
    Socket.last.receiveOutput('abc');
    const broken = Socket.last;
    broken.onmessage({ data: '{nope' });
    assert.equal(errors.length, 1);
    assert.match(errors[0], /not JSON/);
    assert.equal(broken.closedByClient.code, 1002);
    assert.equal(client.state, ConnectionState.RECONNECTING);
    tick(1000);
    assert.notEqual(Socket.last, broken);
    assert.equal(query(Socket.last).offset, '3');
    assert.equal(query(Socket.last).create, '0');
  });

  test('a first frame that is not a hello is a protocol error, not a silent wait', () => {
    const client = connection();
    const errors = [];
    client.on('protocol-error', (e) => errors.push(e));
    client.connect();
    Socket.last.receiveJson({ type: 'ack', input: 0 });
    assert.match(errors[0], /expected hello/);
    assert.equal(Socket.last.closedByClient.code, 1002);
    assert.equal(client.state, ConnectionState.RECONNECTING);
  });
});
