// The soft keys of a phone or tablet (Esc, Tab, a sticky Ctrl, arrows), as mobile terminal apps
// have them: the bytes each sends. Pure: tested under node.

/** @type {{key: string, label: string, title: string}[]} in the order they are shown */
export const SOFT_KEYS = [
  { key: 'escape', label: 'Esc', title: 'Escape' },
  { key: 'tab', label: 'Tab', title: 'Tab' },
  { key: 'ctrl', label: 'Ctrl', title: 'Ctrl: applies to the next key (tap again to cancel)' },
  { key: 'left', label: '←', title: 'Left' },
  { key: 'up', label: '↑', title: 'Up' },
  { key: 'down', label: '↓', title: 'Down' },
  { key: 'right', label: '→', title: 'Right' },
];

const ARROWS = { up: 'A', down: 'B', right: 'C', left: 'D' };

/**
 * The bytes a soft key sends.
 * @param {string} key one of SOFT_KEYS' keys but 'ctrl'
 * @param {{applicationCursor?: boolean, ctrl?: boolean}} modes the terminal's cursor-key mode
 *   (DECCKM, set by full-screen programs) and whether the sticky Ctrl is down
 */
export function softKeyBytes(key, { applicationCursor = false, ctrl = false } = {}) {
  if (key === 'escape') return '\x1b';
  if (key === 'tab') return '\t';
  const final = ARROWS[key];
  if (!final) return '';
  if (ctrl) return `\x1b[1;5${final}`;
  return applicationCursor ? `\x1bO${final}` : `\x1b[${final}`;
}

const CONTROL_PUNCTUATION = { '@': 0, ' ': 0, '[': 27, '\\': 28, ']': 29, '^': 30, _: 31, '?': 127 };

/** What typing `data` with Ctrl held sends: a letter becomes its control character; anything
 * that has no control form (or more than one character: a paste) is sent as it is. */
export function withCtrl(data) {
  if (data.length !== 1) return data;
  if (/[a-z]/i.test(data)) return String.fromCharCode(data.toUpperCase().charCodeAt(0) & 0x1f);
  const code = CONTROL_PUNCTUATION[data];
  return code === undefined ? data : String.fromCharCode(code);
}
