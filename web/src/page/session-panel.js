// SessionPanel: the list of the caller's own sessions, as JupyterLab's running-terminals panel:
// project, state, size, age, attached clients; open, rename, end. An overlay: showing it does
// not resize any terminal.
import { sessionRow } from './sessions.js';

const ROW_HTML = `
  <div class="session-main">
    <span class="session-title"></span>
    <span class="session-facts"></span>
  </div>
  <div class="session-buttons">
    <button type="button" class="bar-button" data-do="open" title="Show it in a terminal here">open</button>
    <button type="button" class="bar-button" data-do="rename" title="Give it a name">rename</button>
    <button type="button" class="bar-button danger" data-do="end" title="End its shell and programs">end</button>
  </div>`;

export class SessionPanel {
  /**
   * @param {HTMLElement} element the panel (an <aside> with .session-list and .session-note)
   * @param {object} actions
   * @param {() => Promise<object[]>} actions.list
   * @param {(row: object) => void} actions.open
   * @param {(row: object) => boolean} actions.isShownHere  a terminal of this page shows it
   * @param {(key: string, name: string) => Promise<void>} actions.rename
   * @param {(key: string) => Promise<void>} actions.end
   */
  constructor(element, actions) {
    this.element = element;
    this._actions = actions;
    this._list = element.querySelector('.session-list');
    this._note = element.querySelector('.session-note');
    this._rows = [];
    this._timer = null;
    element.querySelector('[data-do=refresh]').addEventListener('click', () => this.refresh());
    element.querySelector('[data-do=close]').addEventListener('click', () => this.toggle(false));
  }

  get isOpen() { return !this.element.hidden; }

  toggle(open = !this.isOpen) {
    this.element.hidden = !open;
    clearInterval(this._timer);
    this._timer = open ? setInterval(() => this.refresh(), 5000) : null;
    if (open) this.refresh();
  }

  /** Show `entries` (GET api/me/sessions) now, or fetch them. */
  async refresh(entries = null) {
    try {
      const listed = entries ?? await this._actions.list();
      this._rows = listed.map((entry) => sessionRow(entry, Date.now()));
      this._note.textContent = this._rows.length ? '' : 'No sessions.';
    } catch (error) {
      this._note.textContent = `Could not list your sessions (${error.message}).`;
    }
    if (this.isOpen && !this._list.querySelector('input')) this._render();
  }

  _render() {
    this._list.replaceChildren(...this._rows.map((row) => this._renderRow(row)));
  }

  _renderRow(row) {
    const item = document.createElement('li');
    item.className = 'session-row';
    item.innerHTML = ROW_HTML;
    item.dataset.key = row.key;
    const title = item.querySelector('.session-title');
    title.textContent = row.title;
    title.title = row.key;
    title.classList.toggle('unnamed', !row.named);
    const here = this._actions.isShownHere(row);
    item.querySelector('.session-facts').textContent = here ? `${row.facts} · shown here` : row.facts;
    const open = item.querySelector('[data-do=open]');
    open.textContent = here ? 'show' : 'open';
    open.addEventListener('click', () => {
      this._actions.open(row);
      this._render();
    });
    item.querySelector('[data-do=rename]').addEventListener('click', () => this._edit(item, row));
    item.querySelector('[data-do=end]').addEventListener('click', () => this._end(row));
    return item;
  }

  _edit(item, row) {
    const input = document.createElement('input');
    input.value = row.named ? row.title : '';
    input.maxLength = 64;
    input.placeholder = 'name (empty: none)';
    input.setAttribute('aria-label', 'Session name');
    item.querySelector('.session-title').replaceWith(input);
    input.focus();
    input.addEventListener('keydown', async (event) => {
      if (event.key === 'Escape') this._render();
      if (event.key !== 'Enter') return;
      try {
        await this._actions.rename(row.key, input.value);
        input.remove();
        await this.refresh();
      } catch (error) {
        this._note.textContent = `Could not rename it (${error.message}).`;
      }
    });
  }

  async _end(row) {
    if (!window.confirm(`End "${row.title}"? Its shell and every program in it are stopped.`)) return;
    try {
      await this._actions.end(row.key);
    } catch (error) {
      this._note.textContent = `Could not end it (${error.message}).`;
    }
    await this.refresh();
  }
}
