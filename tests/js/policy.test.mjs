// The reconnection policy (docs/protocol.md, section 7). Most of the contract is in
// tests/vectors/reconnect_policy.json, which the Python client's tests
// (tests/protocol/test_policy.py) run as well; the tests after the vectors cover what is
// particular to this module and to the close-code table.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import {
  BreakerState, FAILURES_TO_OPEN, MAX_BACKOFF, OPEN_SECONDS, PolicyError, PolicyState, ReconnectPolicy, backoffDelay,
} from '../../web/packages/client/src/policy.js';
import { actionFor, isStopCode, retryAfterSeconds } from '../../web/packages/client/src/close-codes.js';

const readJson = (path) => JSON.parse(readFileSync(new URL(path, import.meta.url), 'utf8'));
const SPEC = readJson('../vectors/reconnect_policy.json');
const TABLE = readJson('../../src/tether/protocol/close_codes.json');
const FIELDS = ['state', 'attempt', 'failures', 'delay', 'retry_at'];

const camel = (name) => name.replace(/_([a-z])/g, (_, letter) => letter.toUpperCase());

/** A policy from a vector's snake_case options (`random` is a constant). */
function makePolicy(options = {}) {
  const converted = Object.fromEntries(Object.entries(options).map(([key, value]) => [camel(key), value]));
  if ('random' in converted) {
    const value = converted.random;
    converted.random = () => value;
  }
  return new ReconnectPolicy(converted);
}

function observed(policy) {
  const { state, attempt, failures, delay, retryAt } = policy.snapshot();
  return { state, attempt, failures, delay, retry_at: retryAt };
}

function assertSnapshot(actual, expected, where) {
  assert.deepEqual(Object.keys(expected).sort(), [...FIELDS].sort(), `${where}: expect lists every field`);
  for (const field of ['state', 'attempt', 'failures']) {
    assert.equal(actual[field], expected[field], `${where}: ${field}`);
  }
  for (const field of ['delay', 'retry_at']) {
    if (expected[field] === null) {
      assert.equal(actual[field], null, `${where}: ${field}`);
    } else {
      const close = Math.abs(actual[field] - expected[field]) < 1e-9;
      assert.ok(close, `${where}: ${field} ${actual[field]} != ${expected[field]}`);
    }
  }
}

/** Call the input a step names; the value onTimer and reconnectNow return. */
function apply(policy, step) {
  const { at: now, code = null, reason = '' } = step;
  const inputs = {
    connected: () => policy.onConnected(now),
    lost: () => policy.onLost(now, code, reason),
    attempt_failed: () => policy.onAttemptFailed(now, code, reason),
    timer: () => policy.onTimer(now),
    reconnect_now: () => policy.reconnectNow(now),
    stop: () => policy.stop(now, code, reason),
    reset: () => policy.reset(now),
  };
  return inputs[step.event]();
}

function runStep(policy, events, step) {
  const where = `${step.event} at ${step.at}`;
  const before = events.length;
  if (step.error) {
    assert.throws(() => apply(policy, step), PolicyError, `${where}: a caller error`);
  } else {
    const returned = apply(policy, step);
    if ('returns' in step) assert.equal(returned, step.returns, `${where}: returns`);
  }
  assertSnapshot(observed(policy), step.expect, where);
  const quiet = step.error || step.returns === false;
  const emitted = events.slice(before);
  assert.equal(emitted.length, step.emits ?? (quiet ? 0 : 1), `${where}: events`);
  if (emitted.length) {
    const { code, reason, ...snapshot } = emitted.at(-1);
    assert.deepEqual(snapshot, policy.snapshot(), `${where}: event snapshot`);
    assert.deepEqual([code, reason], [step.code ?? null, step.reason ?? ''], `${where}: event close`);
  }
  assert.equal(policy.isBreakerOpen, [PolicyState.OPEN, PolicyState.HALF_OPEN].includes(policy.state));
}

describe('the shared vectors (tests/vectors/reconnect_policy.json)', () => {
  for (const vector of SPEC.vectors) {
    test(vector.name, () => {
      const policy = makePolicy(vector.options);
      const events = [];
      policy.addListener((event) => events.push(event));
      assertSnapshot(observed(policy), SPEC.initial, 'initial');
      for (const step of vector.steps) runStep(policy, events, step);
    });
  }

  test('backoff delays', () => {
    for (const [attempt, delay] of SPEC.backoff_delays) {
      assert.equal(backoffDelay(attempt), delay, `attempt ${attempt}`);
    }
    assert.throws(() => backoffDelay(0), RangeError);
  });
});

describe('every close code follows its action in the shared table', () => {
  const codes = new Set([...Object.keys(TABLE.codes).map(Number), ...SPEC.close_code_actions.extra_codes]);
  for (const span of TABLE.ranges) codes.add(span.from).add(span.to);
  const { scenarios } = SPEC.close_code_actions;

  test('all three actions are specified', () => {
    const actions = new Set([...codes].map(actionFor));
    assert.deepEqual([...actions].sort(), ['retry', 'retry_now', 'stop']);
    for (const scenario of Object.values(scenarios)) for (const action of actions) assert.ok(action in scenario);
  });

  for (const code of [...codes].sort((a, b) => a - b)) {
    test(`${code} (${actionFor(code)})`, () => {
      const lost = new ReconnectPolicy();
      lost.onConnected(0);
      lost.onLost(10, code);
      assertSnapshot(observed(lost), scenarios.lost[actionFor(code)], `lost ${code}`);
      const failed = new ReconnectPolicy();
      failed.onConnected(0);
      failed.onLost(10, 1006);
      assert.equal(failed.onTimer(11), true);
      failed.onAttemptFailed(12, code);
      assertSnapshot(observed(failed), scenarios.attempt_failed[actionFor(code)], `attempt failed ${code}`);
    });
  }
});

describe('close codes come from the shared table', () => {
  test('stop, retry and retry-now codes', () => {
    for (const code of [1000, 1009, 4000, 4001, 4003, 4004, 4009, 4010, 4012, 4013]) {
      assert.equal(actionFor(code), 'stop', `code ${code}`);
    }
    for (const code of [1001, 1006, 1011, 1013, 4129]) assert.equal(actionFor(code), 'retry', `code ${code}`);
    assert.equal(actionFor(1012), 'retry_now');
  });

  test('reserved ranges and unknown codes', () => {
    assert.equal(actionFor(4150), 'retry');
    assert.equal(actionFor(4199), 'retry');
    assert.equal(actionFor(4050), 'stop');
    assert.equal(actionFor(4099), 'stop');
    assert.equal(actionFor(3000), 'retry');
    assert.equal(actionFor(1002), 'retry');
    assert.ok(isStopCode(4004));
    assert.ok(!isStopCode(4129));
  });

  test('retry-after in a close reason', () => {
    assert.equal(retryAfterSeconds('retry-after=7'), 7);
    assert.equal(retryAfterSeconds('storm; retry-after=12 s'), 12);
    assert.equal(retryAfterSeconds('nothing here'), null);
    assert.equal(retryAfterSeconds(undefined), null);
  });
});

describe('this module', () => {
  test('the contract numbers and the state names both clients use', () => {
    assert.deepEqual([FAILURES_TO_OPEN, OPEN_SECONDS, MAX_BACKOFF], [5, 30, 30]);
    const names = ['connecting', 'connected', 'waiting', 'open', 'half_open', 'stopped'];
    assert.deepEqual(Object.values(PolicyState), names);
    const policy = new ReconnectPolicy();
    assert.deepEqual([policy.failuresToOpen, policy.openSeconds, policy.timeScale], [5, 30, 1]);
    assert.equal(new ReconnectPolicy({ threshold: 8 }).failuresToOpen, 8, 'the former option name');
  });

  test('invalid options', () => {
    const invalid = [{ timeScale: 0 }, { timeScale: -1 }, { jitter: 2 }, { jitter: -0.1 }, { failuresToOpen: 0 }];
    for (const options of invalid) {
      assert.throws(() => new ReconnectPolicy(options), RangeError, JSON.stringify(options));
    }
  });

  test('jitter is off by default and never draws', () => {
    let draws = 0;
    const policy = new ReconnectPolicy({ random: () => { draws += 1; return 0.9; } });
    policy.onConnected(0);
    policy.onLost(0, 1006);
    assert.deepEqual([policy.delay, draws], [1, 0]);
  });

  test('a listener can be removed', () => {
    const policy = new ReconnectPolicy();
    const seen = [];
    const remove = policy.addListener((event) => seen.push(event));
    remove();
    policy.onConnected(0);
    assert.deepEqual(seen, []);
  });

  test('a timer firing a hair early on a float clock is due', () => {
    const policy = new ReconnectPolicy({ timeScale: 0.01 });
    policy.onConnected(1_700_000_000.123);
    policy.onLost(1_700_000_000.123, 1006);
    assert.equal(policy.onTimer(policy.retryAt - 1e-7), true);
  });

  test('the breaker alone: closed, open, half_open, stopped', () => {
    const policy = new ReconnectPolicy();
    const seen = [policy.breakerState];
    policy.onAttemptFailed(0, 1006);
    for (let now = 1; policy.state !== PolicyState.OPEN; now += 1) {
      policy.reconnectNow(now);
      policy.onAttemptFailed(now, 1006);
    }
    seen.push(policy.breakerState);
    policy.reconnectNow(100);
    seen.push(policy.breakerState);
    policy.stop(100);
    seen.push(policy.breakerState);
    assert.deepEqual(seen, [BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.STOPPED]);
  });
});
