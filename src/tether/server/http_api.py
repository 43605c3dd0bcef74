"""The HTTP API of docs/protocol.md, section 9, without a web framework: one place for every front.

Each endpoint is a function of the server, the caller's identity (already established by the
front: None for a missing or invalid credential) and the request's parameters that returns an
:class:`Answer`, a status and a JSON value; the fronts (aiohttp, ASGI) only read requests and
write answers. What only ``tether serve`` does (asking the other nodes of a cluster) stays in its
front, around these functions.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tether.protocol.storm import BreakerSnapshot
from tether.server import recorder
from tether.server.core import Server
from tether.server.entries import iso, session_entry
from tether.server.identity import Identity
from tether.server.session import Session, SessionState
from tether.server.state import EndReason
from tether.server.store.record import check_display_name


@dataclass(frozen=True)
class Answer:
    """An HTTP answer: its status and its JSON body."""

    status: int
    body: Any


def ok(body: Any, status: int = 200) -> Answer:
    return Answer(status, body)


def error(status: int, code: str, message: str) -> Answer:
    """The JSON error of section 9: ``{"error": {"code": ..., "message": ...}}``."""
    return Answer(status, {"error": {"code": code, "message": message}})


def checked(identity: Identity | None, *, operator: bool = False) -> Identity | Answer:
    """The caller when it may go on (an operator, with ``operator``), else the 401/403."""
    if identity is None:
        return error(401, "unauthorized", "missing or invalid credential")
    if operator and not identity.operator:
        return error(403, "forbidden", "operator role required")
    return identity


def not_found(key: str) -> Answer:
    return error(404, "not_found", f"no session {key[:140]}")


def readiness(server: Server) -> Answer:
    """``/readyz``: 200 while accepting new sessions (and, in a cluster, holding a lease)."""
    if not server.manager.accepting:
        return error(503, "draining", "not accepting new sessions")
    if not server.is_ready():  # a cluster node without a current lease (Redis unreachable)
        return error(503, "registry_unavailable", "cluster registry unavailable")
    return ok({"status": "ready"})


# ----------------------------------------------------------------------------- projects
def projects(server: Server, identity: Identity) -> Answer:
    """The projects the caller may use; their directories for an operator only."""
    listed: list[dict[str, str]] = []
    for project in server.settings.projects:
        if identity.may_use(project.id):
            item = {"id": project.id} | ({"name": project.name} if project.name else {})
            if identity.operator:
                item["directory"] = str(project.directory)
            listed.append(item)
    return ok(listed)


# ----------------------------------------------------------------------------- sessions
def visible_sessions(server: Server, identity: Identity, query: Mapping[str, str]) -> list[Session]:
    """Every session an operator may see (a caller's own otherwise), with the ``project`` and
    ``owner`` filters of ``query``."""
    project, owner = query.get("project"), query.get("owner")
    return [
        s
        for s in server.manager.sessions.values()
        if (identity.operator or s.info.owner == identity.owner)
        and (project is None or s.info.project == project)
        and (owner is None or s.info.owner == owner)
    ]


def entries(server: Server, sessions: Iterable[Session]) -> list[dict[str, Any]]:
    """``sessions`` as the APIs show them, oldest first."""
    now_m, now_w = server.clock.monotonic(), server.clock.time()
    ordered = sorted(sessions, key=lambda s: (s.info.created_at, s.info.key))
    return [session_entry(s, now_m, now_w) for s in ordered]


def listed_entries(server: Server, sessions: Iterable[Session]) -> list[dict[str, Any]]:
    """``sessions`` as ``/api/sessions`` lists them: with the node that holds them."""
    return [e | {"node": server.node_name, "node_state": "up"} for e in entries(server, sessions)]


def own_sessions(server: Server, identity: Identity) -> list[Session]:
    return [s for s in server.manager.sessions.values() if s.info.owner == identity.owner]


def session_answer(server: Server, session: Session) -> Answer:
    """One session (``GET /api/sessions/{key}``, a rename's answer)."""
    return ok(entries(server, [session])[0])


def named_session(server: Server, identity: Identity | None, key: str) -> Session | Answer:
    """The session ``key``, for an operator (401/403/404 otherwise)."""
    caller = checked(identity, operator=True)
    if isinstance(caller, Answer):
        return caller
    session = server.manager.sessions.get(key)
    return not_found(key) if session is None else session


def kill(server: Server, identity: Identity | None, key: str) -> Answer:
    """End a session (operator API): its clients get 4013."""
    session = named_session(server, identity, key)
    if isinstance(session, Answer):
        return session
    server.manager.kill(session.info.key)
    return ok({"killed": session.info.key})


def clear_target(server: Server, query_project: str | None, body: bytes) -> str | Answer | None:
    """The project ``POST /api/sessions/clear`` ends the sessions of (None: every project):
    ``?project=``, else the body's ``{"project": ...}``; 400/404 when it is no project."""
    project = query_project
    if project is None and body:
        try:
            request = json.loads(body)
        except ValueError:
            request = None
        if not isinstance(request, dict):
            return error(400, "bad_json", "body must be a JSON object")
        project = request.get("project")
        if project is not None and not isinstance(project, str):
            return error(400, "bad_field", "project must be a string")
    if project is not None and server.settings.project(project) is None:
        return error(404, "not_found", f"no project {project[:64]}")
    return project


def cleared(keys: list[str]) -> Answer:
    return ok({"cleared": keys, "count": len(keys)})


async def drain(server: Server) -> Answer:
    """Stop accepting, close every client with 1001, end the shells after the grace."""
    await server.drain()
    return ok({"draining": True, "grace": server.settings.drain_grace}, status=202)


# ----------------------------------------------------------------------------- own sessions
# ``/api/me/sessions``: another owner's key is answered 404 exactly as an unknown one, so that its
# existence is not revealed.
def own_session(server: Server, identity: Identity, key: str) -> Session | Answer:
    session = server.manager.sessions.get(key)
    if session is None or session.info.owner != identity.owner:
        return not_found(key)
    return session


def requested_name(body: bytes) -> str | Answer:
    """The display name of a ``PATCH /api/me/sessions/{key}`` body ``{"name": "..."}``."""
    try:
        change = json.loads(body or b"null")
    except ValueError:
        change = None
    if not isinstance(change, dict) or set(change) != {"name"}:
        return error(400, "bad_json", 'body must be {"name": "..."}')
    problem = check_display_name(change["name"])
    if problem is not None:
        return error(400, "bad_field", problem)
    name: str = change["name"]
    return name


def rename(server: Server, session: Session, name: str) -> Answer:
    server.manager.rename(session.info.key, name)
    return session_answer(server, session)


def end_own(server: Server, session: Session) -> Answer:
    """End one of the caller's sessions: its clients get 4013 "session ended by its owner"."""
    server.manager.kill(session.info.key, EndReason.ENDED)
    return ok({"ended": session.info.key})


# ----------------------------------------------------------------------------- stats
_STATES = tuple(state.value for state in SessionState)


def _totals(listed: list[dict[str, Any]]) -> dict[str, Any]:
    by_state = dict.fromkeys(_STATES, 0)
    for entry in listed:
        by_state[entry["state"]] += 1
    return {
        "sessions": len(listed),
        **by_state,
        "by_state": by_state,
        "clients": sum(e["clients"] for e in listed),
        "buffered_bytes": sum(e["buffered_bytes"] for e in listed),
        "memory_bytes": sum(e["memory_bytes"] for e in listed),
    }


def stats_sessions(server: Server, identity: Identity, query: Mapping[str, str]) -> Answer:
    """Every visible session (``?project=``, ``?owner=`` filter), totals, and this process."""
    listed = entries(server, visible_sessions(server, identity, query))
    return ok({"totals": _totals(listed), "server": server.process_facts(), "sessions": listed})


def wall_iso(monotonic_at: float | None, now_m: float, now_w: float) -> str | None:
    """A monotonic instant as a wall-clock time (None stays None)."""
    return None if monotonic_at is None else iso(now_w - (now_m - monotonic_at))


def _storm_rows(snapshots: list[BreakerSnapshot], now_m: float, now_w: float) -> list[Any]:
    return [
        {
            "key": b.key,
            "state": b.state.value,
            "attempts": b.attempts_in_window,
            "trips": b.trips,
            "delay": b.delay,
            "retry_after": b.retry_after,
            "opened_at": wall_iso(b.opened_at, now_m, now_w),
        }
        for b in snapshots
    ]


def _thresholds(server: Server) -> dict[str, Any]:
    settings, manager = server.settings, server.manager
    storms = manager.key_storms
    return {
        "key": {
            "threshold": settings.storm_threshold,
            "window": settings.storm_window,
            "max_delay": storms.max_delay,
            "forget_after": storms.forget_after,
        },
        "address": {
            "threshold": settings.address_storm_threshold,
            "window": settings.storm_window,
            "max_delay": manager.address_storms.max_delay,
            "forget_after": manager.address_storms.forget_after,
            "loopback_exempt": settings.storm_exempt_loopback,
        },
        "project": {
            "failures": manager.start_failures.failures,
            "open_for": manager.start_failures.open_for,
        },
    }


def stats_breakers(server: Server, identity: Identity) -> Answer:
    """Every server-side breaker (per key, address, project) and the thresholds in force.

    A non-operator sees the key breakers of its own sessions only, the project breakers of the
    projects it may use, and no addresses.
    """
    manager, now_m, now_w = server.manager, server.clock.monotonic(), server.clock.time()
    keys = manager.key_storms.snapshot(now_m)
    if not identity.operator:
        keys = [
            b
            for b in keys
            if b.key in manager.sessions and manager.sessions[b.key].info.owner == identity.owner
        ]
    addresses = manager.address_storms.snapshot(now_m) if identity.operator else []
    project_rows = [
        {
            "project": b.project,
            "state": b.state.value,
            "failures": b.failures,
            "retry_after": b.retry_after,
            "opened_at": wall_iso(b.opened_at, now_m, now_w),
        }
        for b in manager.start_failures.snapshot(now_m)
        if identity.operator or identity.may_use(b.project)
    ]
    key_rows, address_rows = _storm_rows(keys, now_m, now_w), _storm_rows(addresses, now_m, now_w)
    groups = {"key": key_rows, "address": address_rows, "project": project_rows}
    opened = {
        scope: sum(1 for row in rows if row["state"] == "open") for scope, rows in groups.items()
    }
    return ok({"thresholds": _thresholds(server), "open": opened, **groups})


# ----------------------------------------------------------------------------- recording
def recording_parts(server: Server, identity: Identity | None, key: str) -> list[Path] | Answer:
    """The files of ``key``'s recording in this server's ``--record-dir``, for an operator
    (401/403, and 404 when there is none)."""
    caller = checked(identity, operator=True)
    if isinstance(caller, Answer):
        return caller
    running = server.recorder
    paths = recorder.part_paths(running.directory, key) if running is not None else []
    return paths or error(404, "not_found", f"no recording of {key[:140]}")


async def recording_chunks(paths: list[Path]) -> AsyncGenerator[bytes]:
    """The recording's parts merged into one asciicast v2 stream, read off the event loop.
    Use it under ``contextlib.aclosing``: a download cut short then closes its files at once."""
    chunks = recorder.iter_merged(paths)
    try:
        while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
            yield chunk
    finally:
        chunks.close()
