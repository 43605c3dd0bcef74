// The tether page: several terminals (tabs or a grid), a project picker, themes, shortcuts.
// Everything it loads comes from the server that served it: no other origin, no CDN.
import { newClientId, terminalUrl } from './tether-client.js';
import { TerminalPane } from './page/pane.js';
import { FONT_SIZES, PageStorage } from './page/storage.js';
import { initialThemeName } from './page/themes.js';
import { SHORTCUTS, shortcutFor } from './page/shortcuts.js';
import { SOFT_KEYS, withCtrl } from './page/softkeys.js';
import { pageTitle, terminalLabel } from './page/sessions.js';
import { endSession, listMySessions, renameSession } from './page/my-sessions.js';
import { SessionPanel } from './page/session-panel.js';

const params = new URLSearchParams(location.search);
const storage = new PageStorage();
const elements = {
  tabs: document.querySelector('#tabs'),
  panes: document.querySelector('#panes'),
  project: document.querySelector('#project'),
  add: document.querySelector('#add'),
  layout: document.querySelector('#layout'),
  theme: document.querySelector('#theme'),
  help: document.querySelector('#help'),
  shortcuts: document.querySelector('#shortcuts'),
  shortcutList: document.querySelector('#shortcut-list'),
  notice: document.querySelector('#notice'),
  fontSize: document.querySelector('#font-size'),
  sessions: document.querySelector('#sessions'),
  sessionPanel: document.querySelector('#session-panel'),
  softkeys: document.querySelector('#softkeys'),
};

const page = {
  /** One client id per page load (a browser tab): it keys exactly-once input. */
  clientId: newClientId(),
  url: terminalUrl(location.href),
  timeScale: Number(params.get('timescale')) > 0 ? Number(params.get('timescale')) : 1,
  /** @type {TerminalPane[]} */
  terminals: [],
  active: 0,
  layout: params.get('layout') ?? storage.loadLayout() ?? 'tabs',
  theme: initialThemeName(storage.loadTheme(), matchMedia('(prefers-color-scheme: dark)').matches),
  projects: [],
  fontSize: storage.loadFontSize(),
  /** Display names of sessions by key (GET api/me/sessions; shared with other windows). */
  names: new Map(),
  /** The phone's sticky Ctrl: applies to the next key typed, then lets go. */
  ctrl: false,
};

const panel = new SessionPanel(elements.sessionPanel, {
  list: () => refreshNames(),
  open: (row) => openSession(row),
  isShownHere: (row) => page.terminals.some((pane) => pane.sessionId === row.session),
  rename: (key, name) => rename(key, name),
  end: (key) => endSession(key),
});

// -- terminals ---------------------------------------------------------------------------

function addTerminal({ project = elements.project.value || 'default', session = null } = {}) {
  const pane = new TerminalPane({
    project, session, url: page.url, clientId: page.clientId, theme: page.theme,
    timeScale: page.timeScale, fontSize: page.fontSize, transformInput: applyStickyCtrl,
    onChange: () => saveAndRender(), onFocus: (p) => activate(indexOf(p), false),
  });
  pane.connection.on('hello', () => refreshNamesSoon());
  page.terminals.push(pane);
  setColumns(); // before it opens: it connects with the size it will have
  pane.open(elements.panes);
  activate(page.terminals.length - 1);
  return pane;
}

/** Close a terminal; `end: false` keeps its shell running (the session list reopens it). */
function closeTerminal(index = page.active, { end = true } = {}) {
  const pane = page.terminals[index];
  if (!pane) return;
  const key = pane.key;
  pane.dispose();
  page.terminals.splice(index, 1);
  if (key && end) endSession(key).catch(() => {}); // else the idle timeout ends it
  if (page.terminals.length === 0) addTerminal();
  else activate(Math.min(index, page.terminals.length - 1));
}

/** Show a session of the list: its terminal if one is open here, else a new one on it. */
function openSession({ session, project }) {
  const open = page.terminals.findIndex((pane) => pane.sessionId === session);
  if (open >= 0) activate(open);
  else addTerminal({ project, session });
}

function indexOf(pane) {
  return page.terminals.indexOf(pane);
}

function activate(index, focus = true) {
  if (index < 0 || index >= page.terminals.length) return;
  const changed = index !== page.active;
  page.active = index;
  saveAndRender();
  const pane = page.terminals[index];
  if (changed || focus) requestAnimationFrame(() => pane.fitToContainer());
  if (focus) pane.focus();
}

function cycle(step) {
  const count = page.terminals.length;
  activate((page.active + step + count) % count);
}

// -- names, titles, settings -------------------------------------------------------------

/** Fetch the caller's sessions; remember their names; returns the entries. */
async function refreshNames() {
  const entries = await listMySessions();
  page.names = new Map(entries.map((entry) => [entry.key, entry.name ?? '']));
  render();
  return entries;
}

let namesTimer = null;
function refreshNamesSoon() {
  clearTimeout(namesTimer);
  namesTimer = setTimeout(() => {
    refreshNames()
      .then((entries) => { if (panel.isOpen) panel.refresh(entries); })
      .catch(() => {}); // no listing (another front, an older server): tabs keep their titles
  }, 200);
}

async function rename(key, name) {
  await renameSession(key, name);
  page.names.set(key, name);
  render();
}

function labelOf(pane, index) {
  return terminalLabel({ name: page.names.get(pane.key), title: pane.title, index, project: pane.project });
}

function setFontSize(size) {
  page.fontSize = FONT_SIZES.includes(size) ? size : page.fontSize;
  storage.saveFontSize(page.fontSize);
  elements.fontSize.value = String(page.fontSize);
  page.terminals.forEach((pane) => pane.setFontSize(page.fontSize));
}

function applyStickyCtrl(data) {
  if (!page.ctrl) return data;
  setCtrl(false);
  return withCtrl(data);
}

function setCtrl(on) {
  page.ctrl = on;
  elements.softkeys.querySelector('[data-key=ctrl]')?.setAttribute('aria-pressed', String(on));
}

function pressSoftKey(key) {
  const pane = page.terminals[page.active];
  if (key === 'ctrl') setCtrl(!page.ctrl);
  else if (pane) {
    pane.sendKey(key, { ctrl: page.ctrl });
    setCtrl(false);
  }
}

function fillSoftKeys() {
  elements.softkeys.replaceChildren(...SOFT_KEYS.map(({ key, label, title }) => {
    const button = document.createElement('button');
    button.type = 'button';
    button.dataset.key = key;
    button.textContent = label;
    button.title = title;
    if (key === 'ctrl') button.setAttribute('aria-pressed', 'false');
    return button;
  }));
  // Keep the terminal focused (and a phone's keyboard up) while a soft key is tapped.
  elements.softkeys.addEventListener('pointerdown', (event) => event.preventDefault());
  elements.softkeys.addEventListener('mousedown', (event) => event.preventDefault());
  elements.softkeys.addEventListener('click', (event) => {
    const key = event.target.closest('button')?.dataset.key;
    if (key) pressSoftKey(key);
  });
}

// -- layout, theme, rendering ------------------------------------------------------------

function setLayout(layout) {
  page.layout = layout === 'grid' ? 'grid' : 'tabs';
  storage.saveLayout(page.layout);
  render();
  requestAnimationFrame(() => page.terminals.forEach((pane) => pane.fitToContainer()));
}

function setTheme(theme) {
  page.theme = theme === 'light' ? 'light' : 'dark';
  storage.saveTheme(page.theme);
  document.documentElement.dataset.theme = page.theme;
  page.terminals.forEach((pane) => pane.setTheme(page.theme));
  render();
}

function saveAndRender() {
  storage.saveTerminals(page.terminals.map((pane) => ({ project: pane.project, session: pane.sessionId })));
  storage.saveActive(page.active);
  render();
}

function setColumns() {
  const count = page.terminals.length;
  elements.panes.style.setProperty('--columns', String(Math.ceil(Math.sqrt(count)) || 1));
}

function render() {
  elements.panes.dataset.layout = page.layout;
  setColumns();
  elements.layout.textContent = page.layout === 'grid' ? 'tabs' : 'grid';
  elements.layout.title = `Show the terminals as ${elements.layout.textContent} (Alt+Shift+G)`;
  elements.theme.textContent = page.theme === 'dark' ? 'light' : 'dark';
  page.terminals.forEach((pane, index) => pane.element.classList.toggle('active', index === page.active));
  if (!elements.tabs.querySelector('input')) elements.tabs.replaceChildren(...page.terminals.map(renderTab));
  const active = page.terminals[page.active];
  document.title = pageTitle(active ? labelOf(active, page.active) : '');
}

function renderTab(pane, index) {
  const tab = document.createElement('button');
  tab.type = 'button';
  tab.className = 'tab';
  tab.setAttribute('role', 'tab');
  tab.setAttribute('aria-selected', String(index === page.active));
  tab.dataset.state = pane.state;
  tab.title = `${pane.sessionId ?? 'new session'} — ${pane.statusText()} (double-click to rename)`;
  tab.innerHTML = '<span class="tab-dot"></span><span class="tab-title"></span><span class="tab-close" title="Close (Alt+Shift+W)">×</span>';
  tab.querySelector('.tab-title').textContent = labelOf(pane, index);
  tab.addEventListener('click', (event) => {
    if (event.target.closest('.tab-close')) closeTerminal(index);
    else if (index !== page.active) activate(index); // (re-rendering the active one would lose a double-click)
  });
  tab.addEventListener('dblclick', (event) => {
    if (!event.target.closest('.tab-close')) editTabName(tab, pane);
  });
  return tab;
}

function editTabName(tab, pane) {
  const key = pane.key;
  if (!key) return; // no session yet
  const input = document.createElement('input');
  input.className = 'tab-name';
  input.value = page.names.get(key) ?? '';
  input.maxLength = 64;
  input.placeholder = pane.title || 'name';
  input.setAttribute('aria-label', 'Session name');
  tab.querySelector('.tab-title').replaceWith(input);
  input.focus();
  let finished = false;
  const finish = async (save) => {
    if (finished) return; // removing the input blurs it: once is enough
    finished = true;
    input.remove();
    if (save) {
      await rename(key, input.value.trim()).catch((error) => {
        elements.notice.textContent = `Could not rename the session (${error.message}).`;
        elements.notice.hidden = false;
      });
    }
    render();
    if (panel.isOpen) panel.refresh();
  };
  input.addEventListener('keydown', (event) => {
    event.stopPropagation();
    if (event.key === 'Enter') finish(true);
    else if (event.key === 'Escape') finish(false);
  });
  input.addEventListener('blur', () => finish(true));
}

// -- shortcuts ---------------------------------------------------------------------------

const ACTIONS = {
  'new-terminal': () => addTerminal(),
  'close-terminal': () => closeTerminal(),
  'next-terminal': () => cycle(1),
  'previous-terminal': () => cycle(-1),
  'toggle-layout': () => setLayout(page.layout === 'grid' ? 'tabs' : 'grid'),
  'toggle-theme': () => setTheme(page.theme === 'dark' ? 'light' : 'dark'),
  search: () => page.terminals[page.active]?.openSearch(),
  sessions: () => panel.toggle(),
  help: () => toggleHelp(),
};

function onKeyDown(event) {
  const shortcut = shortcutFor(event);
  if (!shortcut) return;
  event.preventDefault();
  event.stopPropagation();
  if (shortcut.startsWith('go-to-')) activate(Number(shortcut.slice(6)) - 1);
  else ACTIONS[shortcut]();
}

function fillShortcutList() {
  elements.shortcutList.replaceChildren(...SHORTCUTS.map(({ keys, label }) => {
    const row = document.createElement('tr');
    row.append(document.createElement('th'), document.createElement('td'));
    row.cells[0].textContent = keys;
    row.cells[1].textContent = label;
    return row;
  }));
}

function toggleHelp() {
  if (elements.shortcuts.open) elements.shortcuts.close();
  else elements.shortcuts.showModal();
}

// -- start -------------------------------------------------------------------------------

async function loadProjects() {
  try {
    const response = await fetch('api/projects', { headers: { Accept: 'application/json' } });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const projects = await response.json();
    if (!Array.isArray(projects) || projects.length === 0) throw new Error('no project configured');
    return projects;
  } catch (error) {
    elements.notice.textContent = `Could not list the projects (${error.message}); using "default".`;
    elements.notice.hidden = false;
    return [{ id: 'default' }];
  }
}

function fillProjectPicker(projects) {
  elements.project.replaceChildren(...projects.map((project) => {
    const option = document.createElement('option');
    option.value = project.id;
    option.textContent = project.name ? `${project.name} (${project.id})` : project.id;
    return option;
  }));
  const wanted = params.get('project') ?? storage.loadProject();
  if (projects.some((project) => project.id === wanted)) elements.project.value = wanted;
}

// Where authentication is on, a link may carry the credential in its fragment
// (`/#token=…`): it becomes the `tether_token` cookie that every request and WebSocket of this
// origin then sends, and is removed from the address bar. Fragments never reach a server log.
function adoptTokenFromFragment() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  const token = fragment.get('token');
  if (!token) return;
  const secure = location.protocol === 'https:' ? '; Secure' : '';
  document.cookie = `tether_token=${encodeURIComponent(token)}; Path=/; SameSite=Strict${secure}`;
  fragment.delete('token');
  const rest = fragment.toString();
  history.replaceState(null, '', location.pathname + location.search + (rest ? `#${rest}` : ''));
}

async function start() {
  adoptTokenFromFragment();
  document.documentElement.dataset.theme = page.theme;
  fillShortcutList();
  page.projects = await loadProjects();
  fillProjectPicker(page.projects);
  elements.project.addEventListener('change', () => storage.saveProject(elements.project.value));
  elements.add.addEventListener('click', () => addTerminal());
  elements.layout.addEventListener('click', ACTIONS['toggle-layout']);
  elements.theme.addEventListener('click', ACTIONS['toggle-theme']);
  elements.help.addEventListener('click', toggleHelp);
  elements.sessions.addEventListener('click', ACTIONS.sessions);
  elements.fontSize.replaceChildren(...FONT_SIZES.map((size) => new Option(`${size} px`, String(size))));
  elements.fontSize.value = String(page.fontSize);
  elements.fontSize.addEventListener('change', () => setFontSize(Number(elements.fontSize.value)));
  fillSoftKeys();
  window.addEventListener('keydown', onKeyDown, true);
  const saved = storage.loadTerminals();
  const wantedActive = storage.loadActive();
  for (const entry of saved.length ? saved : [{}]) addTerminal(entry);
  activate(Math.min(wantedActive, page.terminals.length - 1));
}

// A small hook for tests and for the curious, in the console: window.tether.terminals[0].text()
window.tether = {
  get terminals() { return page.terminals; },
  get active() { return page.active; },
  get clientId() { return page.clientId; },
  addTerminal, closeTerminal, activate, setLayout, setTheme, setFontSize,
  sessionPanel: panel,
  ready: start(),
};
