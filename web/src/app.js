// The tether page: several terminals (tabs or a grid), a project picker, themes, shortcuts.
// Everything it loads comes from the server that served it: no other origin, no CDN.
import { newClientId, terminalUrl } from './tether-client.js';
import { TerminalPane } from './page/pane.js';
import { PageStorage } from './page/storage.js';
import { initialThemeName } from './page/themes.js';
import { SHORTCUTS, shortcutFor } from './page/shortcuts.js';

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
};

// -- terminals ---------------------------------------------------------------------------

function addTerminal({ project = elements.project.value || 'default', session = null } = {}) {
  const pane = new TerminalPane({
    project, session, url: page.url, clientId: page.clientId, theme: page.theme,
    timeScale: page.timeScale, onChange: () => saveAndRender(), onFocus: (p) => activate(indexOf(p), false),
  });
  page.terminals.push(pane);
  pane.open(elements.panes);
  activate(page.terminals.length - 1);
  return pane;
}

function closeTerminal(index = page.active) {
  const pane = page.terminals[index];
  if (!pane) return;
  const key = pane.connection.hello?.key;
  pane.dispose();
  page.terminals.splice(index, 1);
  // Closing a terminal ends its shell; where the server refuses (auth), the idle timeout will.
  if (key) fetch(`api/sessions/${encodeURIComponent(key)}`, { method: 'DELETE' }).catch(() => {});
  if (page.terminals.length === 0) addTerminal();
  else activate(Math.min(index, page.terminals.length - 1));
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

function render() {
  const count = page.terminals.length;
  elements.panes.dataset.layout = page.layout;
  elements.panes.style.setProperty('--columns', String(Math.ceil(Math.sqrt(count)) || 1));
  elements.layout.textContent = page.layout === 'grid' ? 'tabs' : 'grid';
  elements.layout.title = `Show the terminals as ${elements.layout.textContent} (Alt+Shift+G)`;
  elements.theme.textContent = page.theme === 'dark' ? 'light' : 'dark';
  page.terminals.forEach((pane, index) => pane.element.classList.toggle('active', index === page.active));
  elements.tabs.replaceChildren(...page.terminals.map(renderTab));
}

function renderTab(pane, index) {
  const tab = document.createElement('button');
  tab.type = 'button';
  tab.className = 'tab';
  tab.setAttribute('role', 'tab');
  tab.setAttribute('aria-selected', String(index === page.active));
  tab.dataset.state = pane.state;
  tab.title = `${pane.sessionId ?? 'new session'} — ${pane.statusText()}`;
  tab.innerHTML = '<span class="tab-dot"></span><span class="tab-title"></span><span class="tab-close" title="Close (Alt+Shift+W)">×</span>';
  tab.querySelector('.tab-title').textContent = `${index + 1} · ${pane.project}`;
  tab.addEventListener('click', (event) => {
    if (event.target.closest('.tab-close')) closeTerminal(index);
    else activate(index);
  });
  return tab;
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
  addTerminal, closeTerminal, activate, setLayout, setTheme,
  ready: start(),
};
