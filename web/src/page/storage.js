// What the page remembers. sessionStorage is per browser tab and survives a reload: the
// terminals' session ids live there, so a reload re-attaches and a new tab starts afresh.
// localStorage (shared by tabs) holds only preferences.

const TERMINALS = 'tether.terminals';
const ACTIVE = 'tether.active';
const LAYOUT = 'tether.layout';
const PROJECT = 'tether.project';
const THEME = 'tether.theme';
const FONT_SIZE = 'tether.fontSize';

export const FONT_SIZES = [10, 11, 12, 13, 14, 16, 18, 20, 24];
export const DEFAULT_FONT_SIZE = 14;

function read(storage, key, fallback) {
  try {
    const value = storage?.getItem(key);
    return value === null || value === undefined ? fallback : JSON.parse(value);
  } catch {
    return fallback; // storage disabled, or a value from an older page
  }
}

function write(storage, key, value) {
  try {
    storage?.setItem(key, JSON.stringify(value));
  } catch {
    // storage full or disabled: the page still works, it just forgets on reload
  }
}

export class PageStorage {
  constructor(session = globalThis.sessionStorage, local = globalThis.localStorage) {
    this._session = session;
    this._local = local;
  }

  /** @returns {{project: string, session: string | null}[]} */
  loadTerminals() {
    const list = read(this._session, TERMINALS, []);
    return Array.isArray(list) ? list.filter((entry) => typeof entry?.project === 'string') : [];
  }

  saveTerminals(list) { write(this._session, TERMINALS, list); }
  loadActive() { return Number(read(this._session, ACTIVE, 0)) || 0; }
  saveActive(index) { write(this._session, ACTIVE, index); }
  loadLayout() { return read(this._session, LAYOUT, null); }
  saveLayout(layout) { write(this._session, LAYOUT, layout); }
  loadProject() { return read(this._session, PROJECT, null); }
  saveProject(project) { write(this._session, PROJECT, project); }
  loadTheme() { return read(this._local, THEME, null); }
  saveTheme(theme) { write(this._local, THEME, theme); }

  /** The terminals' font size in pixels: one of FONT_SIZES (anything else: the default). */
  loadFontSize() {
    const size = read(this._local, FONT_SIZE, DEFAULT_FONT_SIZE);
    return FONT_SIZES.includes(size) ? size : DEFAULT_FONT_SIZE;
  }

  saveFontSize(size) { write(this._local, FONT_SIZE, size); }
}
