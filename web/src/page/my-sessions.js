// The caller's own sessions over HTTP (docs/protocol.md, section 9: /api/me/sessions): list,
// rename, end. Relative URLs, so that the page works behind a path prefix.

const JSON_HEADERS = { Accept: 'application/json', 'Content-Type': 'application/json' };

async function answer(response) {
  const body = await response.json().catch(() => null);
  if (!response.ok) throw new Error(body?.error?.message ?? `HTTP ${response.status}`);
  return body;
}

/** @returns {Promise<object[]>} the entries of GET api/me/sessions, oldest first */
export async function listMySessions() {
  const body = await answer(await fetch('api/me/sessions', { headers: { Accept: 'application/json' } }));
  return Array.isArray(body?.sessions) ? body.sessions : [];
}

/** Name a session (an empty name clears it); resolves to the session's entry. */
export async function renameSession(key, name) {
  const path = `api/me/sessions/${encodeURIComponent(key)}`;
  return answer(await fetch(path, { method: 'PATCH', headers: JSON_HEADERS, body: JSON.stringify({ name }) }));
}

/** End a session: its shell and programs are stopped, its clients told "ended by its owner". */
export async function endSession(key) {
  return answer(await fetch(`api/me/sessions/${encodeURIComponent(key)}`, { method: 'DELETE' }));
}
