// The page's pure parts: status lines, shortcuts, storage, themes, soft keys, the session list.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { describeEnding, describeExit, describeStatus } from '../../web/src/page/status.js';
import { shortcutFor } from '../../web/src/page/shortcuts.js';
import { DEFAULT_FONT_SIZE, PageStorage } from '../../web/src/page/storage.js';
import { softKeyBytes, withCtrl } from '../../web/src/page/softkeys.js';
import { describeAge, pageTitle, sessionRow, terminalLabel } from '../../web/src/page/sessions.js';
import { initialThemeName } from '../../web/src/page/themes.js';

describe('status lines', () => {
  const now = 1_000_000;
  test('connected, connecting, reconnecting in N s', () => {
    assert.equal(describeStatus({ state: 'connected' }, now).text, 'connected');
    assert.equal(describeStatus({ state: 'connecting', attempt: 0 }, now).text, 'connecting…');
    assert.equal(describeStatus({ state: 'connecting', attempt: 3 }, now).text, 'reconnecting (attempt 3)…');
    const waiting = describeStatus({ state: 'reconnecting', at: now + 3500, code: 1006, reason: '' }, now);
    assert.equal(waiting.text, 'reconnecting in 4 s · connection lost', 'the countdown first');
    assert.equal(waiting.action, 'retry');
  });

  test('paused offers retry now', () => {
    const view = describeStatus({ state: 'paused', failures: 5, at: now + 30000 }, now);
    assert.match(view.text, /^paused, next try in 30 s \(.+\) after 5 failed attempts$/);
    assert.deepEqual([view.action, view.actionLabel, view.tone], ['retry', 'retry now', 'paused']);
  });

  test("the server's reason shows next to the countdown, the pause and the next attempt", () => {
    const refused = { code: 1011, reason: 'cannot start shell' };
    const waiting = describeStatus({ state: 'reconnecting', at: now + 2000, ...refused }, now);
    assert.equal(waiting.text, 'reconnecting in 2 s · cannot start shell');
    const paused = describeStatus({ state: 'paused', failures: 5, at: now + 30000, ...refused }, now);
    assert.match(paused.text, /^paused, next try in 30 s .* · cannot start shell$/);
    const trying = describeStatus({ state: 'connecting', attempt: 2, lastReason: 'cannot start shell' }, now);
    assert.equal(trying.text, 'reconnecting (attempt 2)… · cannot start shell');
    assert.equal(describeStatus({ state: 'connecting', attempt: 0, lastReason: 'x' }, now).text, 'connecting…');
  });

  test('an ending never repeats itself', () => {
    const operator = { code: 4013, reason: 'session terminated by an operator' };
    assert.equal(describeEnding(operator), 'session terminated by an operator');
    assert.equal(describeEnding({ code: 4013, reason: 'session ended by its owner' }), 'session ended by its owner');
    assert.equal(describeEnding({ code: 4013, reason: '' }), 'session terminated by an operator');
  });

  test('ended offers a new session, or reconnecting here after a takeover', () => {
    const exited = describeStatus({ state: 'ended', code: 4012, exit: { code: 0, signal: null } }, now);
    assert.deepEqual([exited.text, exited.action], ['shell exited (code 0)', 'new-session']);
    const gone = describeStatus({ state: 'ended', code: 4004, reason: 'no session' }, now);
    assert.equal(gone.text, 'session not found: it ended or was reaped (no session)');
    assert.equal(describeStatus({ state: 'ended', code: 4009 }, now).action, 'reconnect');
    assert.equal(describeEnding({ code: 4050, reason: '' }), 'ended (code 4050)');
    assert.equal(describeExit({ code: null, signal: 9 }), 'shell killed by signal 9');
    assert.equal(describeExit(null), 'shell exited');
  });
});

describe('shortcuts', () => {
  const key = (code, mods = {}) => ({ code, altKey: false, shiftKey: false, ctrlKey: false, metaKey: false, ...mods });
  test('Alt+Shift for the page, Ctrl+Shift+F for search', () => {
    assert.equal(shortcutFor(key('KeyN', { altKey: true, shiftKey: true })), 'new-terminal');
    assert.equal(shortcutFor(key('Digit3', { altKey: true, shiftKey: true })), 'go-to-3');
    assert.equal(shortcutFor(key('ArrowLeft', { altKey: true, shiftKey: true })), 'previous-terminal');
    assert.equal(shortcutFor(key('KeyF', { ctrlKey: true, shiftKey: true })), 'search');
    assert.equal(shortcutFor(key('KeyF', { metaKey: true, shiftKey: true })), 'search');
  });
  test('everything else belongs to the terminal', () => {
    assert.equal(shortcutFor(key('KeyN', { altKey: true })), null);
    assert.equal(shortcutFor(key('KeyN', { ctrlKey: true, shiftKey: true })), null);
    assert.equal(shortcutFor(key('KeyF', { ctrlKey: true })), null);
    assert.equal(shortcutFor(key('Digit0', { altKey: true, shiftKey: true })), null);
  });
});

describe('soft keys', () => {
  test('Esc, Tab and arrows, in the cursor-key mode the program asked for', () => {
    assert.equal(softKeyBytes('escape'), '\x1b');
    assert.equal(softKeyBytes('tab'), '\t');
    assert.equal(softKeyBytes('up'), '\x1b[A');
    assert.equal(softKeyBytes('left', { applicationCursor: true }), '\x1bOD');
    assert.equal(softKeyBytes('right', { ctrl: true, applicationCursor: true }), '\x1b[1;5C');
    assert.equal(softKeyBytes('nothing'), '');
  });
  test('the sticky Ctrl turns the next character into its control code', () => {
    assert.equal(withCtrl('c'), '\x03');
    assert.equal(withCtrl('D'), '\x04');
    assert.equal(withCtrl('['), '\x1b');
    assert.equal(withCtrl('?'), '\x7f');
    assert.equal(withCtrl('1'), '1');
    assert.equal(withCtrl('paste'), 'paste');
  });
});

describe('session list and labels', () => {
  const now = Date.parse('2026-11-30T12:00:00Z');
  test('ages', () => {
    assert.equal(describeAge('2026-11-30T11:59:15Z', now), '45 s');
    assert.equal(describeAge('2026-11-30T11:48:00Z', now), '12 min');
    assert.equal(describeAge('2026-11-30T09:00:00Z', now), '3 h');
    assert.equal(describeAge('2026-11-28T12:00:00Z', now), '2 d');
    assert.equal(describeAge('not a date', now), '–');
  });
  test('a row says project, state, size, age and clients', () => {
    const entry = {
      key: 'session_1:web', session: 'session_1', project: 'web', state: 'detached', cols: 80,
      rows: 24, clients: 0, created_at: '2026-11-30T11:00:00Z', name: '', node: 'a', node_state: 'up',
    };
    const row = sessionRow(entry, now);
    assert.deepEqual([row.title, row.named, row.session, row.project], ['session_1', false, 'session_1', 'web']);
    assert.equal(row.facts, 'web · detached · 80×24 · started 1 h ago · 0 clients');
    const named = sessionRow({ ...entry, name: 'db', clients: 1, node_state: 'lost' }, now);
    assert.equal(named.title, 'db');
    assert.match(named.facts, /1 client · node a lost$/);
    const remote = sessionRow({ key: 'session_2:api', owner: 'me', node: 'b', node_state: 'up' }, now);
    assert.deepEqual([remote.session, remote.project], ['session_2', 'api']);
  });
  test("a terminal is labelled by its session's name, else the shell's title", () => {
    assert.equal(terminalLabel({ name: 'db', title: 'vim', index: 0, project: 'web' }), 'db');
    assert.equal(terminalLabel({ name: '', title: 'vim', index: 0, project: 'web' }), 'vim');
    assert.equal(terminalLabel({ name: undefined, title: '', index: 2, project: 'web' }), '3 · web');
    assert.equal(pageTitle('vim'), 'vim · tether');
    assert.equal(pageTitle(''), 'tether');
  });
});

describe('storage', () => {
  class MemoryStorage {
    constructor() { this.map = new Map(); }
    getItem(key) { return this.map.has(key) ? this.map.get(key) : null; }
    setItem(key, value) { this.map.set(key, String(value)); }
  }
  test('terminals round-trip; junk is ignored', () => {
    const session = new MemoryStorage();
    const storage = new PageStorage(session, new MemoryStorage());
    assert.deepEqual(storage.loadTerminals(), []);
    storage.saveTerminals([{ project: 'default', session: 's1' }, { project: 'web', session: null }]);
    assert.deepEqual(storage.loadTerminals(), [{ project: 'default', session: 's1' }, { project: 'web', session: null }]);
    session.setItem('tether.terminals', '{broken');
    assert.deepEqual(storage.loadTerminals(), []);
  });
  test('the font size is kept in localStorage; an unknown size is the default', () => {
    const local = new MemoryStorage();
    const storage = new PageStorage(new MemoryStorage(), local);
    assert.equal(storage.loadFontSize(), DEFAULT_FONT_SIZE);
    storage.saveFontSize(18);
    assert.equal(new PageStorage(new MemoryStorage(), local).loadFontSize(), 18);
    storage.saveFontSize(7);
    assert.equal(storage.loadFontSize(), DEFAULT_FONT_SIZE);
  });
  test('no storage at all still works', () => {
    const storage = new PageStorage(undefined, undefined);
    storage.saveTheme('dark');
    assert.equal(storage.loadTheme(), null);
  });
  test('theme: the stored choice, else the system preference', () => {
    assert.equal(initialThemeName('light', true), 'light');
    assert.equal(initialThemeName(null, true), 'dark');
    assert.equal(initialThemeName('bogus', false), 'light');
  });
});
