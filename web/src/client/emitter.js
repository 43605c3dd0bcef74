// A minimal event emitter: `on` returns a function that removes the listener.

export class Emitter {
  constructor() {
    /** @type {Map<string, Set<Function>>} */
    this._listeners = new Map();
  }

  /**
   * @param {string} type
   * @param {Function} listener
   * @returns {() => void} removes the listener
   */
  on(type, listener) {
    if (!this._listeners.has(type)) this._listeners.set(type, new Set());
    this._listeners.get(type).add(listener);
    return () => this._listeners.get(type)?.delete(listener);
  }

  /** @param {string} type */
  emit(type, ...args) {
    for (const listener of [...(this._listeners.get(type) ?? [])]) {
      try {
        listener(...args);
      } catch (error) {
        // A failing listener must not break the connection's bookkeeping.
        queueMicrotask(() => { throw error; });
      }
    }
  }
}
