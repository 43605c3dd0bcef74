// What a client does after a close code: the one shared table, src/tether/protocol/close_codes.json,
// generated into close-codes-table.js at build (scripts/close-codes.mjs), so that the server, the
// Python client and this module agree and the package imports nothing from outside its folder.
import { TABLE as table } from './close-codes-table.js';

/** @typedef {'stop' | 'retry' | 'retry_now'} CloseAction */
/**
 * @typedef {object} CloseCodeTable
 * @property {string} [_comment]
 * @property {Record<string, {name: string, action: CloseAction, meaning: string}>} codes
 * @property {{from: number, to: number, action: CloseAction}[]} ranges
 * @property {CloseAction} default_action
 */

const RETRY_AFTER = /retry-after=(\d+)/;

/**
 * The action docs/protocol.md, section 6 prescribes for `code`.
 * @param {number} code
 * @returns {CloseAction}
 */
export function actionFor(code) {
  const entry = table.codes[String(code)];
  if (entry) return entry.action;
  for (const span of table.ranges) {
    if (span.from <= code && code <= span.to) return span.action;
  }
  return table.default_action;
}

/** @param {number} code */
export function isStopCode(code) {
  return actionFor(code) === 'stop';
}

/**
 * The `retry-after=N` seconds carried by a close reason, or null.
 * @param {string | undefined} reason
 * @returns {number | null}
 */
export function retryAfterSeconds(reason) {
  const match = RETRY_AFTER.exec(reason || '');
  return match ? Number(match[1]) : null;
}

/**
 * The short name of a code (`not_found`, `exited`, …), or null for a code the table lacks.
 * @param {number} code
 */
export function closeCodeName(code) {
  return table.codes[String(code)]?.name ?? null;
}

/**
 * A human sentence for a code, for status lines.
 * @param {number} code
 */
export function closeCodeMeaning(code) {
  return table.codes[String(code)]?.meaning ?? `closed with code ${code}`;
}
