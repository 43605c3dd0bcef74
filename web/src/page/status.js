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

/** The ending sentence for an `ended` state: what happened, then the server's reason. */
export function describeEnding({ code, reason, exit }) {
  if (code === 4012) return describeExit(exit);
  const known = ENDINGS[code] ?? `ended (code ${code})`;
  return reason ? `${known} (${reason})` : known;
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
      if (info.trial) return { tone: 'busy', text: 'trying to reconnect…', action: null };
      return { tone: 'busy', text: info.attempt > 0 ? `reconnecting (attempt ${info.attempt})…` : 'connecting…', action: null };
    case 'connected':
      return { tone: 'ok', text: 'connected', action: null };
    case 'reconnecting':
      return {
        tone: 'wait', text: `connection lost, reconnecting in ${seconds(info.at - now)} s`,
        action: 'retry', actionLabel: 'retry now',
      };
    case 'paused':
      return {
        tone: 'paused',
        text: `paused after ${info.failures} failed attempts, next try at ${clock(info.at)} (${seconds(info.at - now)} s)`,
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
