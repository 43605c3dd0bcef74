// Named one-shot timers over injectable setTimeout/clearTimeout: scheduling a name again
// replaces its timer, so a connection never has two attempts (or two pings) pending.

export class NamedTimers {
  /**
   * @param {(fn: () => void, ms: number) => unknown} setTimer
   * @param {(id: unknown) => void} clearTimer
   */
  constructor(setTimer, clearTimer) {
    this._set = setTimer;
    this._clear = clearTimer;
    /** @type {Map<string, unknown>} */
    this._pending = new Map();
  }

  /**
   * Run `callback` after `ms`, replacing any timer of that name.
   * @param {string} name
   * @param {number} ms
   * @param {() => void} callback
   */
  schedule(name, ms, callback) {
    this.cancel(name);
    const id = this._set(() => {
      if (this._pending.get(name) === id) this._pending.delete(name);
      callback();
    }, ms);
    this._pending.set(name, id);
  }

  /** @param {string} name */
  cancel(name) {
    if (!this._pending.has(name)) return;
    this._clear(this._pending.get(name));
    this._pending.delete(name);
  }

  /** @param {string} name */
  has(name) {
    return this._pending.has(name);
  }
}
