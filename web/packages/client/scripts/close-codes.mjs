// Writes src/close-codes-table.js from the server's table, src/tether/protocol/close_codes.json
// (the one place close codes are defined), so that the package imports nothing from outside its
// folder. Run by the page's build (web/build.mjs) and by this package's `prepack`/`typecheck`.
import { readFile, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';

const SOURCE = new URL('../../../../src/tether/protocol/close_codes.json', import.meta.url);
const TARGET = new URL('../src/close-codes-table.js', import.meta.url);

/** Generate the table module; returns its path. */
export async function writeCloseCodeTable() {
  const table = JSON.parse(await readFile(SOURCE, 'utf8'));
  const text = [
    '// Generated from src/tether/protocol/close_codes.json by scripts/close-codes.mjs: do not edit.',
    "/** @type {import('./close-codes.js').CloseCodeTable} */",
    `export const TABLE = ${JSON.stringify(table, null, 2)};`,
    '',
  ].join('\n');
  await writeFile(TARGET, text);
  return fileURLToPath(TARGET);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await writeCloseCodeTable();
