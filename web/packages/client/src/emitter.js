// A minimal event emitter: `on` returns a function that removes the listener. `Events` maps each
// event name to its listener's arguments, so that listeners are typed (see ConnectionEvents).

/** @template {Record<string, unknown[]>} Events */
export class Emitter {
  constructor() {
    /** @type {Map<keyof Events, Set<(...args: any[]) => void>>} */
    this._listeners = new Map();
  }

  /**
   * @template {keyof Events & string} K
   * @param {K} type
   * @param {(...args: Events[K]) => void} listener
   * @returns {() => void} removes the listener
   */
  on(type, listener) {
    let listeners = this._listeners.get(type);
    if (!listeners) this._listeners.set(type, (listeners = new Set()));
    listeners.add(listener);
    return () => this._listeners.get(type)?.delete(listener);
  }

  /**
   * @template {keyof Events & string} K
   * @param {K} type
   * @param {Events[K]} args
   */
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
