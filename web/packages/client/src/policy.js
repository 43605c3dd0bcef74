// The reconnection policy of docs/protocol.md, section 7, as a pure state machine: no timers, no
// clock, no sockets. The same machine as tether.protocol.policy (the Python client), state names
// and all: both run the vectors of tests/vectors/reconnect_policy.json. The caller passes the
// time (seconds, any monotonic clock) into every input and owns the timers: it waits until
// `retryAt`, then calls onTimer(now).
//
// States:
//   connecting --hello--> connected --lost (retry code)--> waiting --due--> connecting
//   connected  --lost (stop code)--> stopped
//   connecting --attempt failed (< 5 in a row)--> waiting
//   connecting --attempt failed (5th in a row)--> open --30 s or reconnectNow()--> half_open
//   half_open  --trial failed--> open;  half_open --hello--> connected
//   any        --stop code, or stop()--> stopped;  any --reset()--> connecting
//
// Rules:
//   - what a close code means comes from the shared table (actionFor): stop, retry or retry_now;
//     this module lists no code of its own.
//   - reconnection attempt k (k = 1, 2, …) waits min(2^(k-1), 30) s; a retry-after in a close
//     reason makes it max(backoff, retry-after); a loss with a retry_now code (1012) makes the
//     first delay 0 (before a hello, such a code is an ordinary failure).
//   - an attempt fails when it is closed (or times out) before its hello; 5 consecutive failures
//     open the breaker: no attempt for 30 s, then one half-open trial; its success closes the
//     breaker and resets the counts, its failure opens it again.
//   - a stop code ends everything at once, whatever the breaker says.
//   - the first connect is attempt 0; when it fails, the next is attempt 1 (1 s), and that first
//     failure is not counted.
//   - reconnectNow() (the user's "retry now") goes through the breaker: while open it starts the
//     half-open trial early; while waiting, the pending attempt. Never before a retry-after.
//   - `timeScale` multiplies the policy's own durations (backoff, open period) so tests run the
//     schedule fast; a server's retry-after is never scaled.
import { actionFor, retryAfterSeconds } from './close-codes.js';

export const PolicyState = Object.freeze({
  CONNECTING: 'connecting', // an attempt is in flight (the first connect or attempt k)
  CONNECTED: 'connected', // a hello was received
  WAITING: 'waiting', // breaker closed: waiting `delay` before attempt k
  OPEN: 'open', // breaker open: no attempt until `retryAt`
  HALF_OPEN: 'half_open', // the single trial attempt after the open period is in flight
  STOPPED: 'stopped', // a stop code (or the user) ended reconnection for good
});

/** @typedef {typeof PolicyState[keyof typeof PolicyState]} PolicyStateName */

/**
 * The breaker alone (closed, open, half_open, stopped), as `policy.breakerState` reports it.
 * @deprecated use PolicyState: `policy.state` names where the connection stands.
 */
export const BreakerState = Object.freeze({
  CLOSED: 'closed', OPEN: 'open', HALF_OPEN: 'half_open', STOPPED: 'stopped',
});

export const MAX_BACKOFF = 30;
export const FAILURES_TO_OPEN = 5;
export const OPEN_SECONDS = 30;

// Float clocks: a timer that fires at `retryAt` must find the attempt due.
const EPSILON = 1e-6;

// The inputs that report on an attempt or a connection, and the states that can have them.
// Anything else is a caller error (PolicyError). onTimer, reconnectNow and stop are valid in
// every state: they answer false, or do nothing, where they do not apply.
/** @type {Record<'onConnected' | 'onAttemptFailed' | 'onLost', PolicyStateName[]>} */
const EXPECTED = {
  onConnected: [PolicyState.CONNECTING, PolicyState.HALF_OPEN],
  onAttemptFailed: [PolicyState.CONNECTING, PolicyState.HALF_OPEN],
  onLost: [PolicyState.CONNECTED],
};

// Where a due (or forced) attempt starts from, and the state it starts in.
/** @type {Map<PolicyStateName, PolicyStateName>} */
const STARTS = new Map([[PolicyState.WAITING, PolicyState.CONNECTING], [PolicyState.OPEN, PolicyState.HALF_OPEN]]);

/** The caller reported an event the current state cannot have (a bug in the caller). */
export class PolicyError extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = 'PolicyError';
  }
}

/**
 * The unscaled delay before reconnection attempt k (1-based): min(2^(k-1), 30) s.
 * @param {number} attempt
 */
export function backoffDelay(attempt) {
  if (!(attempt >= 1)) throw new RangeError('attempt numbers start at 1');
  return Math.min(2 ** Math.min(attempt - 1, 16), MAX_BACKOFF);
}

/**
 * @typedef {object} PolicySnapshot
 * @property {PolicyStateName} state
 * @property {number} attempt      the number k of the next (or in-flight) attempt, 0 while connected
 * @property {number} failures     consecutive failed attempts
 * @property {number | null} delay seconds to wait (scaled), in waiting and open
 * @property {number | null} retryAt when the wait ends, in the caller's clock (seconds)
 */

/**
 * @typedef {PolicySnapshot & {code: number | null, reason: string}} PolicyEvent
 * `code` and `reason` are those of the close that caused the change, when there was one.
 */

export class ReconnectPolicy {
  /**
   * @param {object} [options]
   * @param {number} [options.timeScale=1]      multiplies backoff and open period (not retry-after)
   * @param {number} [options.jitter=0]         0..1: shorten each backoff by up to this fraction
   * @param {() => number} [options.random]     source for the jitter
   * @param {number} [options.openSeconds=30]   how long the breaker stays open (before scaling)
   * @param {number} [options.failuresToOpen=5] consecutive failures that open the breaker
   * @param {number} [options.threshold]        the former name of failuresToOpen
   */
  constructor({
    timeScale = 1, jitter = 0, random = Math.random, openSeconds = OPEN_SECONDS, threshold,
    failuresToOpen = threshold ?? FAILURES_TO_OPEN,
  } = {}) {
    if (!(timeScale > 0)) throw new RangeError('timeScale must be positive');
    if (!(jitter >= 0 && jitter <= 1)) throw new RangeError('jitter must be within [0, 1]');
    if (!(failuresToOpen >= 1)) throw new RangeError('failuresToOpen must be at least 1');
    this.timeScale = timeScale;
    this.jitter = jitter;
    this.openSeconds = openSeconds;
    this.failuresToOpen = failuresToOpen;
    this._random = random;
    /** @type {Array<(event: PolicyEvent) => void>} */
    this._listeners = [];
    /** @type {PolicyStateName} */
    this._state = PolicyState.CONNECTING;
    this._attempt = 0;
    this._failures = 0;
    /** @type {number | null} */
    this._delay = null;
    /** @type {number | null} */
    this._retryAt = null;
    /** @type {number | null} */
    this._notBefore = null; // a server's retry-after: no attempt before it
  }

  // -- observation -----------------------------------------------------------------------

  get state() { return this._state; }
  get attempt() { return this._attempt; }
  get failures() { return this._failures; }
  get delay() { return this._delay; }
  get retryAt() { return this._retryAt; }
  get isStopped() { return this._state === PolicyState.STOPPED; }
  /** True while the breaker is open or its half-open trial is in flight. */
  get isBreakerOpen() { return this._state === PolicyState.OPEN || this._state === PolicyState.HALF_OPEN; }

  /** The breaker alone: closed, open, half_open or stopped. */
  get breakerState() {
    if (this._state === PolicyState.STOPPED) return BreakerState.STOPPED;
    return this.isBreakerOpen ? this._state : BreakerState.CLOSED;
  }

  /**
   * Call `listener` with a PolicyEvent on every state change; returns a function that removes it.
   * @param {(event: PolicyEvent) => void} listener
   */
  addListener(listener) {
    this._listeners.push(listener);
    return () => { this._listeners = this._listeners.filter((l) => l !== listener); };
  }

  /** @returns {PolicySnapshot} */
  snapshot() {
    return {
      state: this._state, attempt: this._attempt, failures: this._failures, delay: this._delay, retryAt: this._retryAt,
    };
  }

  /**
   * The backoff before attempt k, seconds, unscaled, without retry-after or jitter.
   * @param {number} k
   */
  backoff(k) {
    return backoffDelay(k);
  }

  // -- inputs ------------------------------------------------------------------------------

  /**
   * An attempt reached its hello: close the breaker and reset the counts.
   * @param {number} now
   */
  onConnected(now) {
    this._expect('onConnected');
    this._attempt = 0;
    this._failures = 0;
    this._notBefore = null;
    this._enter(PolicyState.CONNECTED, now);
  }

  /**
   * The established connection was lost (or closed) with `code`.
   * @param {number} now
   * @param {number} code
   * @param {string} [reason]
   */
  onLost(now, code, reason = '') {
    this._expect('onLost');
    const action = actionFor(code);
    if (action === 'stop') {
      this._enter(PolicyState.STOPPED, now, { code, reason });
      return;
    }
    this._attempt = 1;
    const delay = action === 'retry_now' ? 0 : this._scaledBackoff(1);
    this._wait(PolicyState.WAITING, now, delay, code, reason);
  }

  /**
   * The current attempt reached no hello: refused, timed out (no code), or closed with `code`.
   * Before a hello, a retry_now code is an ordinary failure: only a loss skips the wait.
   * @param {number} now
   * @param {number | null} [code]
   * @param {string} [reason]
   */
  onAttemptFailed(now, code = null, reason = '') {
    this._expect('onAttemptFailed');
    if (code !== null && actionFor(code) === 'stop') {
      this._enter(PolicyState.STOPPED, now, { code, reason });
      return;
    }
    if (this._attempt > 0) this._failures += 1; // the first connect is no reconnection attempt
    this._attempt += 1;
    if (this._state === PolicyState.HALF_OPEN || this._failures >= this.failuresToOpen) {
      this._wait(PolicyState.OPEN, now, this.openSeconds * this.timeScale, code, reason);
      return;
    }
    this._wait(PolicyState.WAITING, now, this._scaledBackoff(this._attempt), code, reason);
  }

  /**
   * Advance when `retryAt` has come; true when the caller must start an attempt now.
   * @param {number} now
   */
  onTimer(now) {
    const next = STARTS.get(this._state);
    if (next === undefined || !this._isDue(now)) return false;
    this._enter(next, now);
    return true;
  }

  /**
   * A user asked to reconnect: start the pending attempt early; true when one starts. While the
   * breaker is open this is its half-open trial. Nothing happens while connecting, connected,
   * stopped, or before a server's retry-after has passed.
   * @param {number} now
   */
  reconnectNow(now) {
    const next = STARTS.get(this._state);
    if (next === undefined || this._isHeldBack(now)) return false;
    this._enter(next, now);
    return true;
  }

  /**
   * End reconnection for good (the user closed, or the caller gives up).
   * @param {number} now
   * @param {number | null} [code]
   * @param {string} [reason]
   */
  stop(now, code = null, reason = '') {
    if (this._state !== PolicyState.STOPPED) this._enter(PolicyState.STOPPED, now, { code, reason });
  }

  /**
   * Forget every failure and start a fresh first connect (a new session, a re-attach).
   * @param {number} now
   */
  reset(now) {
    this._attempt = 0;
    this._failures = 0;
    this._notBefore = null;
    this._enter(PolicyState.CONNECTING, now);
  }

  // -- internals ---------------------------------------------------------------------------

  /** @param {number} k */
  _scaledBackoff(k) {
    const delay = backoffDelay(k);
    return (this.jitter ? delay * (1 - this.jitter * this._random()) : delay) * this.timeScale;
  }

  /**
   * @param {PolicyStateName} state
   * @param {number} now
   * @param {number} delay
   * @param {number | null} code
   * @param {string} reason
   */
  _wait(state, now, delay, code, reason) {
    // Only a close carries a server's retry-after; a refused or timed-out attempt has none.
    const retryAfter = code === null ? null : retryAfterSeconds(reason);
    this._notBefore = retryAfter === null ? null : now + retryAfter;
    this._enter(state, now, { delay: retryAfter === null ? delay : Math.max(delay, retryAfter), code, reason });
  }

  /** @param {number} now */
  _isDue(now) {
    return this._retryAt === null || now >= this._retryAt - EPSILON;
  }

  /** @param {number} now */
  _isHeldBack(now) {
    return this._notBefore !== null && now < this._notBefore - EPSILON;
  }

  /** @param {keyof typeof EXPECTED} input */
  _expect(input) {
    if (!EXPECTED[input].includes(this._state)) throw new PolicyError(`${input} in state ${this._state}`);
  }

  /**
   * The one place where the state changes and listeners hear of it.
   * @param {PolicyStateName} state
   * @param {number} now
   * @param {{delay?: number | null, code?: number | null, reason?: string}} [change]
   */
  _enter(state, now, { delay = null, code = null, reason = '' } = {}) {
    this._state = state;
    this._delay = delay;
    this._retryAt = delay === null ? null : now + delay;
    const event = { ...this.snapshot(), code, reason };
    for (const listener of [...this._listeners]) listener(event);
  }
}
