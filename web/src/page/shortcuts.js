// The page's keyboard shortcuts. Alt+Shift+letter for the page (browsers keep Ctrl+T, Ctrl+W,
// Ctrl+Shift+T, … for themselves), Ctrl+Shift+F for search as in most terminals. Matched on
// `event.code`, so they work on any keyboard layout and with macOS's Option key.

export const SHORTCUTS = [
  { keys: 'Alt+Shift+N', name: 'new-terminal', label: 'open a new terminal' },
  { keys: 'Alt+Shift+W', name: 'close-terminal', label: 'close this terminal (ends its shell)' },
  { keys: 'Alt+Shift+→', name: 'next-terminal', label: 'next terminal' },
  { keys: 'Alt+Shift+←', name: 'previous-terminal', label: 'previous terminal' },
  { keys: 'Alt+Shift+1…9', name: 'go-to-N', label: 'go to terminal N' },
  { keys: 'Alt+Shift+G', name: 'toggle-layout', label: 'tabs ⇄ grid' },
  { keys: 'Alt+Shift+L', name: 'toggle-theme', label: 'dark ⇄ light theme' },
  { keys: 'Alt+Shift+S', name: 'sessions', label: 'your sessions: open, rename, end' },
  { keys: 'double-click a tab', name: null, label: 'rename its session' },
  { keys: 'Ctrl+Shift+F', name: 'search', label: 'search the scrollback (Enter: next, Shift+Enter: previous)' },
  { keys: 'select', name: null, label: 'copies the selection' },
  { keys: 'Ctrl+Shift+C / V', name: null, label: 'copy / paste (or the context menu)' },
  { keys: 'Alt+Shift+/', name: 'help', label: 'show these shortcuts' },
];

const ALT_SHIFT = {
  KeyN: 'new-terminal', KeyW: 'close-terminal', ArrowRight: 'next-terminal',
  ArrowLeft: 'previous-terminal', KeyG: 'toggle-layout', KeyL: 'toggle-theme', Slash: 'help',
  KeyS: 'sessions',
};

/**
 * The shortcut a keydown event means, or null.
 * @param {{code: string, altKey: boolean, shiftKey: boolean, ctrlKey: boolean, metaKey: boolean}} event
 * @returns {string | null}
 */
export function shortcutFor(event) {
  if (event.altKey && event.shiftKey && !event.ctrlKey && !event.metaKey) {
    const digit = /^Digit([1-9])$/.exec(event.code);
    if (digit) return `go-to-${digit[1]}`;
    return ALT_SHIFT[event.code] ?? null;
  }
  if (event.shiftKey && (event.ctrlKey || event.metaKey) && !event.altKey && event.code === 'KeyF') {
    return 'search';
  }
  return null;
}
