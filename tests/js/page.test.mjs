// The page's pure parts: status lines, shortcuts, storage, themes.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { describeEnding, describeExit, describeStatus } from '../../web/src/page/status.js';
import { shortcutFor } from '../../web/src/page/shortcuts.js';
import { PageStorage } from '../../web/src/page/storage.js';
import { initialThemeName } from '../../web/src/page/themes.js';

describe('status lines', () => {
  const now = 1_000_000;
  test('connected, connecting, reconnecting in N s', () => {
    assert.equal(describeStatus({ state: 'connected' }, now).text, 'connected');
    assert.equal(describeStatus({ state: 'connecting', attempt: 0 }, now).text, 'connecting…');
    assert.equal(describeStatus({ state: 'connecting', attempt: 3 }, now).text, 'reconnecting (attempt 3)…');
    const waiting = describeStatus({ state: 'reconnecting', at: now + 3500 }, now);
    assert.equal(waiting.text, 'connection lost, reconnecting in 4 s');
    assert.equal(waiting.action, 'retry');
  });

  test('paused offers retry now', () => {
    const view = describeStatus({ state: 'paused', failures: 5, at: now + 30000 }, now);
    assert.match(view.text, /^paused after 5 failed attempts, next try at .+ \(30 s\)$/);
    assert.deepEqual([view.action, view.actionLabel, view.tone], ['retry', 'retry now', 'paused']);
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
