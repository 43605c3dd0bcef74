// The page's two themes, for xterm.js and (through data-theme) for the CSS.

export const FONT_FAMILY = [
  '"JetBrains Mono"', '"Cascadia Mono"', '"Fira Code"', '"SF Mono"', 'Menlo', 'Consolas',
  '"DejaVu Sans Mono"', '"Liberation Mono"', '"Noto Sans Mono"', 'monospace',
].join(', ');

export const THEMES = {
  dark: {
    background: '#16181d', foreground: '#d7dae0', cursor: '#f0c674', cursorAccent: '#16181d',
    selectionBackground: '#3e4a5f', selectionInactiveBackground: '#2f3747',
    black: '#1d1f24', red: '#e06c75', green: '#98c379', yellow: '#e5c07b',
    blue: '#61afef', magenta: '#c678dd', cyan: '#56b6c2', white: '#c8ccd4',
    brightBlack: '#5c6370', brightRed: '#ef8891', brightGreen: '#b5e08f', brightYellow: '#f2d398',
    brightBlue: '#8cc8ff', brightMagenta: '#de9cf0', brightCyan: '#7fd1dc', brightWhite: '#ffffff',
  },
  light: {
    background: '#fbfbfa', foreground: '#2b2f36', cursor: '#5b4bd6', cursorAccent: '#fbfbfa',
    selectionBackground: '#c9d7f2', selectionInactiveBackground: '#dde5f3',
    black: '#2b2f36', red: '#c4302b', green: '#3d7d1f', yellow: '#986801',
    blue: '#2e5fc7', magenta: '#a626a4', cyan: '#0b7a8a', white: '#d4d6da',
    brightBlack: '#6b717c', brightRed: '#e0443e', brightGreen: '#4f9a2a', brightYellow: '#b07a07',
    brightBlue: '#4378e6', brightMagenta: '#bf3dbd', brightCyan: '#1495a8', brightWhite: '#ffffff',
  },
};

/** The theme to start with: the stored choice, else the system's preference. */
export function initialThemeName(stored, prefersDark) {
  if (stored === 'dark' || stored === 'light') return stored;
  return prefersDark ? 'dark' : 'light';
}
