// What a terminal's status line says for each connection state. Pure: tested under node.

/**
 * @typedef {object} StatusView
 * @property {'ok' | 'busy' | 'wait' | 'paused' | 'ended'} tone
 * @property {string} text
 * @property {null | 'retry' | 'new-session' | 'reconnect'} action
 * @property {string} [actionLabel]
 */

const ENDINGS = {
  1000: 'closed',
  1009: 'ended: a message was too big',
  4000: 'refused: bad request',
  4001: 'refused: not signed in',
  4003: 'refused: forbidden',
  4004: 'session not found: it ended or was reaped',
  4009: 'taken over by another window',
  4010: 'refused: your session limit is reached',
  4013: 'session terminated by an operator',
};

function seconds(ms) {
  return Math.max(0, Math.ceil(ms / 1000));
}

function clock(ms) {
  return new Date(ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

/** How a shell's end reads: "shell exited (code 0)", "shell killed by signal 9". */
export function describeExit(exit) {
  if (!exit) return 'shell exited';
  if (exit.signal !== null && exit.signal !== undefined) return `shell killed by signal ${exit.signal}`;
  return exit.code === null || exit.code === undefined ? 'shell exited' : `shell exited (code ${exit.code})`;
}

// Codes whose server reason is a whole sentence of its own (who ended the session): shown
// instead of the generic one, never after it ("terminated (terminated)").
const REASON_SAYS_IT = new Set([4013]);

/** The ending sentence for an `ended` state: what happened, then the server's reason. */
export function describeEnding({ code, reason, exit }) {
  if (code === 4012) return describeExit(exit);
  const known = ENDINGS[code] ?? `ended (code ${code})`;
  if (!reason || known.includes(reason)) return known;
  return REASON_SAYS_IT.has(code) ? reason : `${known} (${reason})`;
}

/** Why the last attempt failed, as the server said it (a 1006 drop says nothing). */
function why(info) {
  return info.reason || info.lastReason || '';
}

function withReason(text, info, fallback = '') {
  const reason = why(info) || fallback;
  return reason ? `${text} · ${reason}` : text;
}

/**
 * @param {{state: string, [key: string]: any}} info a TetherConnection state event
 * @param {number} now milliseconds
 * @returns {StatusView}
 */
export function describeStatus(info, now) {
  switch (info.state) {
    case 'idle':
    case 'connecting':
      if (info.trial) return { tone: 'busy', text: withReason('trying to reconnect…', info), action: null };
      if (!(info.attempt > 0)) return { tone: 'busy', text: 'connecting…', action: null };
      return { tone: 'busy', text: withReason(`reconnecting (attempt ${info.attempt})…`, info), action: null };
    case 'connected':
      return { tone: 'ok', text: 'connected', action: null };
    case 'reconnecting':
      // The countdown first: a narrow pane cuts the end of the line, not the number.
      return {
        tone: 'wait', text: withReason(`reconnecting in ${seconds(info.at - now)} s`, info, 'connection lost'),
        action: 'retry', actionLabel: 'retry now',
      };
    case 'paused':
      return {
        tone: 'paused',
        text: withReason(
          `paused, next try in ${seconds(info.at - now)} s (${clock(info.at)}) after ${info.failures} failed attempts`, info,
        ),
        action: 'retry', actionLabel: 'retry now',
      };
    case 'ended':
      return info.code === 4009
        ? { tone: 'ended', text: describeEnding(info), action: 'reconnect', actionLabel: 'reconnect here' }
        : { tone: 'ended', text: describeEnding(info), action: 'new-session', actionLabel: 'start a new session' };
    default:
      return { tone: 'ended', text: 'closed', action: null };
  }
}
