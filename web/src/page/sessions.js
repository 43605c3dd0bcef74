// The session list (the caller's own sessions, GET api/me/sessions) and the names the page
// shows for terminals: what each row and tab says. Pure: tested under node.

/** "45 s", "12 min", "3 h", "2 d": how long ago `iso` was, at `now` (milliseconds). */
export function describeAge(iso, now) {
  const then = Date.parse(iso);
  if (Number.isNaN(then)) return '–';
  const secondsAgo = Math.max(0, Math.floor((now - then) / 1000));
  if (secondsAgo < 60) return `${secondsAgo} s`;
  if (secondsAgo < 3600) return `${Math.floor(secondsAgo / 60)} min`;
  if (secondsAgo < 86400) return `${Math.floor(secondsAgo / 3600)} h`;
  return `${Math.floor(secondsAgo / 86400)} d`;
}

/**
 * One row of the list.
 * @param {object} entry an entry of GET api/me/sessions
 * @param {number} now milliseconds
 */
export function sessionRow(entry, now) {
  const clients = entry.clients;
  const facts = [
    entry.project ?? '?',
    entry.state ?? 'unknown',
    entry.cols && entry.rows ? `${entry.cols}×${entry.rows}` : null,
    `started ${describeAge(entry.created_at, now)} ago`,
    clients === undefined ? null : `${clients} client${clients === 1 ? '' : 's'}`,
    entry.node_state && entry.node_state !== 'up' ? `node ${entry.node} ${entry.node_state}` : null,
  ];
  return {
    key: entry.key,
    session: entry.session ?? entry.key.split(':')[0],
    project: entry.project ?? entry.key.split(':').slice(1).join(':'),
    title: entry.name || entry.session || entry.key,
    named: Boolean(entry.name),
    facts: facts.filter(Boolean).join(' · '),
  };
}

/** A terminal's label: the name its owner gave the session, else the shell's title (OSC 0/2),
 * else its number and project. */
export function terminalLabel({ name, title, index, project }) {
  return name || title || `${index + 1} · ${project}`;
}

/** The browser tab's title for the active terminal. */
export function pageTitle(label) {
  return label ? `${label} · tether` : 'tether';
}
