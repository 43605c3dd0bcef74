// The reconnection policy (docs/protocol.md, section 7): exact schedule, breaker, stop codes.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { BreakerState, ReconnectPolicy } from '../../web/src/client/policy.js';
import { actionFor, isStopCode, retryAfterSeconds } from '../../web/src/client/close-codes.js';

/** Fail `count` attempts in a row (each started first); returns the delays decided. */
function failAttempts(policy, count, code = 1006, reason = '') {
  const delays = [];
  for (let i = 0; i < count; i += 1) {
    policy.startAttempt();
    delays.push(policy.attemptFailed(code, reason).delay);
  }
  return delays;
}

function connected() {
  const policy = new ReconnectPolicy();
  policy.startAttempt();
  policy.succeeded();
  return policy;
}

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

describe('backoff schedule', () => {
  test('after a lost connection: 1, 2, 4, 8, 16 s, then the breaker opens for 30 s', () => {
    const policy = connected();
    const first = policy.connectionLost(1006, '');
    assert.deepEqual(first, { action: 'retry', delay: 1, state: 'closed', failures: 0, attempt: 1 });
    const delays = [first.delay, ...failAttempts(policy, 5)];
    assert.deepEqual(delays, [1, 2, 4, 8, 16, 30]);
    assert.equal(policy.state, BreakerState.OPEN);
    assert.equal(policy.failures, 5);
  });

  test('attempt numbers name the next attempt; the first trial is attempt 6', () => {
    const policy = connected();
    policy.connectionLost(1006);
    const attempts = [];
    for (let i = 0; i < 5; i += 1) {
      attempts.push(policy.startAttempt().attempt);
      policy.attemptFailed(1006);
    }
    assert.deepEqual(attempts, [1, 2, 3, 4, 5]);
    assert.deepEqual(policy.startAttempt(), { attempt: 6, trial: true });
  });

  test('backoff is capped at 30 s when the breaker is set higher', () => {
    const policy = new ReconnectPolicy({ threshold: 100 });
    policy.startAttempt();
    policy.succeeded();
    policy.connectionLost(1006);
    assert.deepEqual(failAttempts(policy, 7), [2, 4, 8, 16, 30, 30, 30]);
  });

  test('a failed first connect is followed by attempt 1 after 1 s and is not counted', () => {
    const policy = new ReconnectPolicy();
    policy.startAttempt();
    const decision = policy.attemptFailed(1006);
    assert.equal(decision.delay, 1);
    assert.equal(decision.failures, 0);
    assert.deepEqual(failAttempts(policy, 5), [2, 4, 8, 16, 30]);
    assert.equal(policy.state, BreakerState.OPEN);
  });

  test('1012 makes the first delay 0, then the backoff goes on', () => {
    const policy = connected();
    assert.equal(policy.connectionLost(1012, 'restart').delay, 0);
    assert.deepEqual(failAttempts(policy, 4), [2, 4, 8, 16]);
  });

  test('1012 before a hello is an ordinary retry code', () => {
    const policy = connected();
    policy.connectionLost(1006);
    assert.deepEqual(failAttempts(policy, 1, 1012), [2]);
  });

  test('retry-after makes the delay max(backoff, retry-after)', () => {
    const policy = connected();
    assert.equal(policy.connectionLost(4129, 'retry-after=5').delay, 5);
    assert.deepEqual(failAttempts(policy, 1, 4129, 'retry-after=1'), [2]);
    assert.deepEqual(failAttempts(policy, 1, 4129, 'retry-after=9'), [9]);
  });

  test('retry-after beyond the open period extends it', () => {
    const policy = connected();
    policy.connectionLost(1006);
    failAttempts(policy, 4);
    assert.deepEqual(failAttempts(policy, 1, 4129, 'retry-after=45'), [45]);
  });

  test('timeScale shrinks backoff and open period, never retry-after', () => {
    const policy = new ReconnectPolicy({ timeScale: 0.01 });
    policy.startAttempt();
    policy.succeeded();
    assert.equal(policy.connectionLost(1006).delay, 0.01);
    const delays = failAttempts(policy, 5).map((d) => Math.round(d * 1000) / 1000);
    assert.deepEqual(delays, [0.02, 0.04, 0.08, 0.16, 0.3]);
    policy.startAttempt();
    assert.equal(policy.attemptFailed(4129, 'retry-after=3').delay, 3);
  });

  test('jitter shortens a backoff by up to its fraction', () => {
    const policy = new ReconnectPolicy({ jitter: 0.5, random: () => 1 });
    policy.startAttempt();
    policy.succeeded();
    assert.equal(policy.connectionLost(1006).delay, 0.5);
    assert.throws(() => new ReconnectPolicy({ jitter: 2 }), RangeError);
    assert.throws(() => new ReconnectPolicy({ timeScale: 0 }), RangeError);
  });
});

describe('circuit breaker', () => {
  function opened() {
    const policy = connected();
    policy.connectionLost(1006);
    failAttempts(policy, 5);
    return policy;
  }

  test('the next attempt after the open period is a half-open trial', () => {
    const policy = opened();
    assert.deepEqual(policy.startAttempt(), { attempt: 6, trial: true });
    assert.equal(policy.state, BreakerState.HALF_OPEN);
  });

  test('a failed trial opens the breaker again for 30 s', () => {
    const policy = opened();
    policy.startAttempt();
    const decision = policy.attemptFailed(1006);
    assert.equal(decision.state, BreakerState.OPEN);
    assert.equal(decision.delay, 30);
    assert.deepEqual(failAttempts(policy, 3), [30, 30, 30]);
  });

  test('a successful trial closes the breaker and resets the counts', () => {
    const policy = opened();
    policy.startAttempt();
    policy.succeeded();
    assert.deepEqual(policy.statistics(), { state: 'closed', failures: 0, attempt: 0 });
    assert.equal(policy.connectionLost(1006).delay, 1);
  });

  test('forceTrial (retry now) goes straight to the trial, through the breaker', () => {
    const policy = opened();
    assert.equal(policy.forceTrial().delay, 0);
    assert.equal(policy.startAttempt().trial, true);
    assert.equal(policy.attemptFailed(1006).delay, 30);
  });

  test('a success in between resets the consecutive count', () => {
    const policy = connected();
    policy.connectionLost(1006);
    failAttempts(policy, 4);
    policy.startAttempt();
    policy.succeeded();
    policy.connectionLost(1006);
    assert.deepEqual(failAttempts(policy, 4), [2, 4, 8, 16]);
    assert.equal(policy.state, BreakerState.CLOSED);
  });
});

describe('stop codes', () => {
  for (const code of [1000, 4000, 4004, 4009, 4012, 4013]) {
    test(`${code} stops a live connection and an attempt at once`, () => {
      const live = connected();
      assert.deepEqual(live.connectionLost(code).action, 'stop');
      assert.equal(live.state, BreakerState.STOPPED);
      const attempt = connected();
      attempt.connectionLost(1006);
      assert.equal(attempt.startAttempt().attempt, 1);
      assert.equal(attempt.attemptFailed(code).action, 'stop');
    });
  }

  test('a stop code ends reconnection even while the breaker is half-open', () => {
    const policy = connected();
    policy.connectionLost(1006);
    failAttempts(policy, 5);
    policy.startAttempt();
    assert.equal(policy.attemptFailed(4004).action, 'stop');
    assert.throws(() => policy.startAttempt(), /stopped/);
    assert.equal(policy.forceTrial(), null);
  });

  test('reset starts afresh after a stop', () => {
    const policy = connected();
    policy.connectionLost(4009);
    policy.reset();
    assert.deepEqual(policy.startAttempt(), { attempt: 0, trial: false });
  });
});
