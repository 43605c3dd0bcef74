// TerminalPane: one terminal on the page: its xterm.js instance with addons, its
// TetherConnection, its search bar and its status line.
import { Terminal } from '@xterm/xterm';
import { FitAddon } from '@xterm/addon-fit';
import { SearchAddon } from '@xterm/addon-search';
import { WebLinksAddon } from '@xterm/addon-web-links';
import { TerminalBinding, TetherConnection } from '../tether-client.js';
import { describeStatus } from './status.js';
import { FONT_FAMILY, THEMES } from './themes.js';
import { copyText } from './clipboard.js';
import { softKeyBytes } from './softkeys.js';

const PANE_HTML = `
  <div class="pane-term"></div>
  <form class="pane-search" hidden>
    <input type="search" placeholder="Search scrollback" aria-label="Search scrollback">
    <button type="button" data-search="previous" title="Previous match (Shift+Enter)">↑</button>
    <button type="button" data-search="next" title="Next match (Enter)">↓</button>
    <button type="button" data-search="close" title="Close (Escape)">×</button>
  </form>
  <footer class="pane-status">
    <span class="status-dot"></span>
    <span class="status-text">connecting…</span>
    <button type="button" class="status-action" hidden></button>
    <span class="status-fill"></span>
    <span class="status-project"></span>
    <button type="button" class="status-session" title="Copy the session id">no session yet</button>
    <span class="status-latency" title="Round-trip time of the last ping">– ms</span>
    <span class="status-size"></span>
  </footer>`;

const SEARCH_DECORATIONS = {
  matchBackground: '#6b5d1f', activeMatchBackground: '#c69026',
  matchOverviewRuler: '#c69026', activeMatchColorOverviewRuler: '#ffcf4d',
};

export class TerminalPane {
  /**
   * @param {object} options
   * @param {string} options.project
   * @param {string | null} options.session
   * @param {string} options.url        WebSocket endpoint
   * @param {string} options.clientId
   * @param {string} options.theme      'dark' | 'light'
   * @param {number} options.timeScale
   * @param {number} options.fontSize
   * @param {(data: string) => string} [options.transformInput]  what typed input becomes
   *   (the phone's sticky Ctrl)
   * @param {(pane: TerminalPane) => void} options.onChange  the session id or status changed
   * @param {(pane: TerminalPane) => void} options.onFocus
   */
  constructor(options) {
    this.project = options.project;
    this._onChange = options.onChange;
    this.element = document.createElement('section');
    this.element.className = 'pane';
    this.element.innerHTML = PANE_HTML;
    this._parts = {
      term: this.element.querySelector('.pane-term'),
      search: this.element.querySelector('.pane-search'),
      searchInput: this.element.querySelector('.pane-search input'),
      dot: this.element.querySelector('.status-dot'),
      text: this.element.querySelector('.status-text'),
      action: this.element.querySelector('.status-action'),
      project: this.element.querySelector('.status-project'),
      session: this.element.querySelector('.status-session'),
      latency: this.element.querySelector('.status-latency'),
      size: this.element.querySelector('.status-size'),
    };
    this._parts.project.textContent = this.project;
    this.term = new Terminal({
      fontFamily: FONT_FAMILY, fontSize: options.fontSize ?? 14, lineHeight: 1.1, cursorBlink: true,
      scrollback: 10000, theme: THEMES[options.theme], allowProposedApi: true,
    });
    this.fit = new FitAddon();
    this.search = new SearchAddon();
    this.term.loadAddon(this.fit);
    this.term.loadAddon(this.search);
    this.term.loadAddon(new WebLinksAddon((event, uri) => window.open(uri, '_blank', 'noopener')));
    this.connection = new TetherConnection({
      url: options.url, project: this.project, session: options.session,
      clientId: options.clientId, timeScale: options.timeScale,
    });
    this.binding = null;
    /** The connection's state events, newest last (for tests and debugging). */
    this.history = [];
    /** The shell's title (OSC 0/2), empty until it sets one. */
    this.title = '';
    this._transformInput = options.transformInput ?? ((data) => data);
    this._lastReason = '';
    this._statusTimer = null;
    this._wireDom(options.onFocus);
  }

  /** Put the terminal on the page, size it, and connect. */
  open(container) {
    container.append(this.element);
    this.term.open(this._parts.term);
    this.term.attachCustomKeyEventHandler((event) => this._handleKey(event));
    this.term.onSelectionChange(() => {
      if (this.term.hasSelection()) copyText(this.term.getSelection());
    });
    this.term.onResize(({ cols, rows }) => { this._parts.size.textContent = `${cols}×${rows}`; });
    this.term.onTitleChange((title) => {
      this.title = title.slice(0, 120);
      this._onChange(this);
    });
    this.fitToContainer();
    this._parts.size.textContent = `${this.term.cols}×${this.term.rows}`;
    this.binding = new TerminalBinding(this.connection, this._inputTerminal());
    this._wireConnection();
    this.connection.connect();
    this._resizeObserver = new ResizeObserver(() => this.fitToContainer());
    this._resizeObserver.observe(this._parts.term);
  }

  get sessionId() { return this.connection.session; }
  get state() { return this.connection.state; }

  /** The terminal's whole buffer (scrollback and screen) as text; wrapped rows are joined. */
  text() {
    const buffer = this.term.buffer.active;
    let text = '';
    for (let i = 0; i < buffer.length; i += 1) {
      const line = buffer.getLine(i);
      if (!line) continue;
      text += (i > 0 && !line.isWrapped ? '\n' : '') + line.translateToString(!buffer.getLine(i + 1)?.isWrapped);
    }
    return text.replace(/\n+$/, '');
  }

  /** The rows on screen, as text. */
  screen() {
    const buffer = this.term.buffer.active;
    const lines = [];
    for (let y = 0; y < this.term.rows; y += 1) {
      lines.push(buffer.getLine(buffer.baseY + y)?.translateToString(true) ?? '');
    }
    return lines;
  }

  /** What the status line says now. */
  statusText() {
    return this._parts.text.textContent;
  }

  fitToContainer() {
    // A pane with no size (not laid out yet, display:none) would fit to 2×1: keep the old size.
    if (!this._parts.term.clientWidth || !this._parts.term.clientHeight) return;
    try {
      this.fit.fit();
    } catch {
      // not laid out yet: the next resize observation fits it
    }
  }

  focus() { this.term.focus(); }

  setTheme(name) { this.term.options.theme = THEMES[name]; }

  setFontSize(size) {
    this.term.options.fontSize = size;
    this.fitToContainer();
  }

  /** The session's key once a hello named it (null before). */
  get key() { return this.connection.hello?.key ?? null; }

  /** Send a soft key (softkeys.js), in the cursor-key mode the program asked for. */
  sendKey(key, { ctrl = false } = {}) {
    const applicationCursor = Boolean(this.term.modes?.applicationCursorKeysMode);
    const bytes = softKeyBytes(key, { applicationCursor, ctrl });
    if (bytes) this.connection.send(bytes);
  }

  openSearch() {
    this._parts.search.hidden = false;
    this._parts.searchInput.select();
    this._parts.searchInput.focus();
  }

  closeSearch() {
    this._parts.search.hidden = true;
    this.search.clearDecorations();
    this.term.focus();
  }

  /** Close the terminal: disconnect and remove it from the page. */
  dispose() {
    clearInterval(this._statusTimer);
    this._resizeObserver?.disconnect();
    this.connection.close();
    this.binding?.dispose();
    this.term.dispose();
    this.element.remove();
  }

  _wireConnection() {
    const connection = this.connection;
    connection.on('state', (info) => {
      this.history.push(info);
      if (this.history.length > 200) this.history.shift();
      this._renderStatus();
    });
    connection.on('hello', (hello) => {
      // The pane may have been resized while connecting (a layout change): the size sent
      // with the connect is then stale, and the client sends a resize only once attached.
      const { cols, rows } = this.term;
      if (hello.cols !== cols || hello.rows !== rows) connection.resize(cols, rows);
      this._parts.session.textContent = connection.session;
      connection.ping();
      this._onChange(this);
    });
    connection.on('close', ({ reason }) => { this._lastReason = reason; });
    connection.on('latency', (ms) => { this._parts.latency.textContent = `${Math.round(ms)} ms`; });
    connection.on('reset', (why) => {
      if (why === 'new-session') this._parts.session.textContent = 'no session yet';
    });
    this._renderStatus();
  }

  _renderStatus() {
    const info = this.connection.stateInfo;
    const view = describeStatus({ ...info, lastReason: this._lastReason }, Date.now());
    this.element.dataset.state = info.state;
    this._parts.dot.dataset.tone = view.tone;
    this._parts.text.textContent = view.text;
    this._parts.text.title = view.text;
    this._parts.action.hidden = !view.action;
    this._parts.action.textContent = view.actionLabel ?? '';
    this._parts.action.dataset.action = view.action ?? '';
    if (info.state !== 'connected') this._parts.latency.textContent = '– ms';
    const counting = info.state === 'reconnecting' || info.state === 'paused';
    if (counting && !this._statusTimer) this._statusTimer = setInterval(() => this._renderStatus(), 1000);
    if (!counting && this._statusTimer) {
      clearInterval(this._statusTimer);
      this._statusTimer = null;
    }
    this._onChange(this);
  }

  /** The terminal as the binding sees it: typed input passes through transformInput. */
  _inputTerminal() {
    const term = this.term;
    return {
      get cols() { return term.cols; },
      get rows() { return term.rows; },
      onData: (listener) => term.onData((data) => listener(this._transformInput(data))),
      onBinary: (listener) => term.onBinary(listener),
      onResize: (listener) => term.onResize(listener),
      write: (data, callback) => term.write(data, callback),
    };
  }

  _runAction(action) {
    if (action === 'retry') this.connection.retryNow();
    else if (action === 'reconnect') this.connection.reconnect();
    else if (action === 'new-session') this.connection.startNewSession();
    this.term.focus();
  }

  _wireDom(onFocus) {
    const parts = this._parts;
    this.element.addEventListener('focusin', () => onFocus(this));
    this.element.addEventListener('mousedown', () => onFocus(this));
    parts.action.addEventListener('click', () => this._runAction(parts.action.dataset.action));
    parts.session.addEventListener('click', async () => {
      if (!this.sessionId) return;
      const done = await copyText(this.sessionId);
      parts.session.classList.toggle('copied', done);
      setTimeout(() => parts.session.classList.remove('copied'), 1200);
    });
    parts.search.addEventListener('submit', (event) => event.preventDefault());
    parts.searchInput.addEventListener('input', () => this._find('next', true));
    parts.searchInput.addEventListener('keydown', (event) => {
      if (event.key === 'Enter') this._find(event.shiftKey ? 'previous' : 'next');
      else if (event.key === 'Escape') this.closeSearch();
      else return;
      event.preventDefault();
    });
    parts.search.addEventListener('click', (event) => {
      const which = event.target.closest('button')?.dataset.search;
      if (which === 'close') this.closeSearch();
      else if (which) this._find(which);
    });
  }

  _find(direction, incremental = false) {
    const term = this._parts.searchInput.value;
    const options = { decorations: SEARCH_DECORATIONS, incremental };
    if (direction === 'previous') this.search.findPrevious(term, options);
    else this.search.findNext(term, options);
  }

  /** Keys the terminal must leave to the browser; false means "not for xterm". */
  _handleKey(event) {
    if (event.type !== 'keydown' || !event.shiftKey || !(event.ctrlKey || event.metaKey)) return true;
    if (event.code === 'KeyV') return false; // the browser's paste event follows; xterm pastes it
    if (event.code === 'KeyC') {
      if (this.term.hasSelection()) copyText(this.term.getSelection());
      event.preventDefault();
      return false;
    }
    return true;
  }
}
