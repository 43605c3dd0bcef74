// The reconnection policy of docs/protocol.md, section 7, as a pure state machine: no timers, no
// clock, no sockets. The caller reports what happened to each attempt; the policy answers with
// a decision (stop, or retry after a delay in seconds). The caller owns the timers.
//
// Rules:
//   - reconnection attempt k (k = 1, 2, …) waits min(2^(k-1), maxDelay) s; a retry-after in the
//     close reason makes it max(backoff, retry-after); a 1012 close of an established connection
//     makes the first delay 0.
//   - an attempt fails when it is closed (or times out) before its hello; `threshold` consecutive
//     failures open the breaker: no attempt for `openSeconds`, then one half-open trial; its
//     success closes the breaker, its failure opens it again.
//   - a stop code ends everything at once, whatever the breaker says.
//   - the initial connection is attempt 0; when it fails, the next is attempt 1 (1 s), and that
//     first failure is not counted (as in tether.policy, the Python client's policy).
//   - `timeScale` multiplies the policy's own durations (backoff, open period) so tests run the
//     schedule fast; a server's retry-after is never scaled.
//
// Breaker transitions, all made here:
//   closed    --threshold-th failure--> open
//   open      --startAttempt()-------> half_open   (the wait elapsed, or forceTrial())
//   half_open --failure--------------> open
//   half_open --success--------------> closed
//   any       --stop code------------> stopped
import { actionFor, retryAfterSeconds } from './close-codes.js';

export const BreakerState = Object.freeze({
  CLOSED: 'closed',
  OPEN: 'open',
  HALF_OPEN: 'half_open',
  STOPPED: 'stopped',
});

/**
 * @typedef {object} Decision
 * @property {'retry' | 'stop'} action
 * @property {number} delay    seconds to wait before the next attempt, scaled (0 when stopping)
 * @property {string} state    the breaker state after this decision
 * @property {number} attempt  the number k of the next attempt
 * @property {number} failures consecutive failed attempts so far
 */

export class ReconnectPolicy {
  /**
   * @param {object} [options]
   * @param {number} [options.threshold=5]    consecutive failures that open the breaker
   * @param {number} [options.openSeconds=30] how long the breaker stays open
   * @param {number} [options.maxDelay=30]    backoff cap, seconds
   * @param {number} [options.jitter=0]       0..1: shorten each backoff by up to this fraction
   * @param {() => number} [options.random]   source for the jitter
   * @param {number} [options.timeScale=1]    multiplies backoff and open period (not retry-after)
   */
  constructor({
    threshold = 5, openSeconds = 30, maxDelay = 30, jitter = 0, random = Math.random, timeScale = 1,
  } = {}) {
    if (!(timeScale > 0)) throw new RangeError('timeScale must be positive');
    if (!(jitter >= 0 && jitter <= 1)) throw new RangeError('jitter must be within [0, 1]');
    this.timeScale = timeScale;
    this.threshold = threshold;
    this.openSeconds = openSeconds;
    this.maxDelay = maxDelay;
    this.jitter = jitter;
    this._random = random;
    this.reset();
  }

  /** Forget every failure: a fresh start (a new session, a user's explicit reconnect). */
  reset() {
    this._state = BreakerState.CLOSED;
    this._failures = 0;
    this._attempt = 0;
  }

  get state() { return this._state; }
  get failures() { return this._failures; }
  /** The number k of the attempt in flight or the next one (0: the initial connection). */
  get attempt() { return this._attempt; }
  get isStopped() { return this._state === BreakerState.STOPPED; }

  /** The backoff before attempt k, seconds, without retry-after or jitter. */
  backoff(k) {
    return Math.min(2 ** Math.max(k - 1, 0), this.maxDelay);
  }

  /**
   * An attempt is about to be made. When the breaker is open this is its half-open trial.
   * @returns {{attempt: number, trial: boolean}}
   */
  startAttempt() {
    if (this._state === BreakerState.STOPPED) throw new Error('policy stopped: no more attempts');
    if (this._state === BreakerState.OPEN) this._state = BreakerState.HALF_OPEN;
    return { attempt: this._attempt, trial: this._state === BreakerState.HALF_OPEN };
  }

  /** The attempt reached its hello: close the breaker, forget the failures. */
  succeeded() {
    if (this._state === BreakerState.STOPPED) return;
    this._state = BreakerState.CLOSED;
    this._failures = 0;
    this._attempt = 0;
  }

  /**
   * A connection that had reached its hello was closed.
   * @param {number} code
   * @param {string} [reason]
   * @returns {Decision}
   */
  connectionLost(code, reason) {
    if (actionFor(code) === 'stop') return this._stop();
    this._attempt = 1;
    const first = actionFor(code) === 'retry_now' ? 0 : this._scaledBackoff(1);
    return this._retry(this._withRetryAfter(first, reason));
  }

  /**
   * An attempt ended before its hello: closed with `code`, or timed out (pass 1006).
   * @param {number} code
   * @param {string} [reason]
   * @returns {Decision}
   */
  attemptFailed(code, reason) {
    if (actionFor(code) === 'stop') return this._stop();
    if (this._attempt > 0) this._failures += 1; // the initial connect is no reconnection attempt
    this._attempt += 1;
    if (this._state === BreakerState.HALF_OPEN || this._failures >= this.threshold) {
      this._state = BreakerState.OPEN;
      return this._retry(this._withRetryAfter(this.openSeconds * this.timeScale, reason));
    }
    return this._retry(this._withRetryAfter(this._scaledBackoff(this._attempt), reason));
  }

  /**
   * A user asked to reconnect now: an open breaker goes straight to its half-open trial.
   * @returns {Decision | null} null when stopped
   */
  forceTrial() {
    if (this._state === BreakerState.STOPPED) return null;
    return this._retry(0);
  }

  /** Stop for good (the user closed the terminal). */
  stop() {
    this._state = BreakerState.STOPPED;
  }

  /** A plain snapshot, for status lines and tests. */
  statistics() {
    return { state: this._state, failures: this._failures, attempt: this._attempt };
  }

  _stop() {
    this._state = BreakerState.STOPPED;
    return { action: 'stop', delay: 0, ...this.statistics() };
  }

  _retry(delay) {
    return { action: 'retry', delay, ...this.statistics() };
  }

  _withRetryAfter(delay, reason) {
    const after = retryAfterSeconds(reason);
    return after === null ? delay : Math.max(delay, after);
  }

  _scaledBackoff(k) {
    const delay = this.backoff(k) * this.timeScale;
    return this.jitter ? delay * (1 - this.jitter * this._random()) : delay;
  }
}
