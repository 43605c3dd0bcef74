"""HTTP endpoints of docs/protocol.md, section 9: stats, metrics, health, projects, operator API.

Every error is JSON: ``{"error": {"code": "...", "message": "..."}}`` with a 4xx/5xx status.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from tether.protocol.storm import BreakerSnapshot
from tether.server.aiohttp_front import cluster_api
from tether.server.aiohttp_front.context import identify, server_of
from tether.server.core import Server
from tether.server.session import Session, SessionState


def json_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def session_entry(session: Session, now_monotonic: float, now_wall: float) -> dict[str, Any]:
    """One session as ``/stats/sessions`` and ``/api/sessions`` show it."""
    entry = session.stats()
    entry["created_at"] = _iso(session.info.created_at)
    entry["last_activity"] = _iso(now_wall - (now_monotonic - session.info.last_activity))
    return entry


_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def cross_site_refusal(request: web.Request) -> web.Response | None:
    """The WebSocket's origin rule on every state-changing request (CSRF).

    A page on another site can send a ``text/plain`` POST without a preflight, and the browser
    adds the cookie: a foreign or ``null`` Origin gets 403, and a body must be JSON (which a
    cross-site page cannot send without a preflight). No Origin and no body (programs): as before.
    """
    if request.method in _SAFE_METHODS:
        return None
    if not server_of(request).origin_allowed(request.headers):
        return json_error(403, "forbidden_origin", "origin not allowed")
    if request.body_exists and request.content_type != "application/json":
        return json_error(415, "unsupported_media_type", "a request body must be application/json")
    return None


def _require_operator(request: web.Request) -> web.Response | None:
    identity = identify(request)
    if identity is None:
        return json_error(401, "unauthorized", "missing or invalid credential")
    if not identity.operator:
        return json_error(403, "forbidden", "operator role required")
    return None


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    server = server_of(request)
    if not server.manager.accepting:
        return json_error(503, "draining", "not accepting new sessions")
    if not server.is_ready():  # a cluster node without a current lease (Redis unreachable)
        return json_error(503, "registry_unavailable", "cluster registry unavailable")
    return web.json_response({"status": "ready"})


async def projects(request: web.Request) -> web.Response:
    server = server_of(request)
    identity = identify(request)
    if identity is None:
        return json_error(401, "unauthorized", "missing or invalid credential")
    listed = []
    for project in server.settings.projects:
        if not identity.may_use(project.id):
            continue
        item: dict[str, Any] = {"id": project.id}
        if project.name:
            item["name"] = project.name
        if identity.operator:
            item["directory"] = str(project.directory)
        listed.append(item)
    return web.json_response(listed)


def _visible_sessions(request: web.Request) -> list[Session] | web.Response:
    server = server_of(request)
    identity = identify(request)
    if identity is None:
        return json_error(401, "unauthorized", "missing or invalid credential")
    project, owner = request.query.get("project"), request.query.get("owner")
    return [
        s
        for s in server.manager.sessions.values()
        if (identity.operator or s.info.owner == identity.owner)
        and (project is None or s.info.project == project)
        and (owner is None or s.info.owner == owner)
    ]


_STATES = tuple(state.value for state in SessionState)


def _totals(entries: list[dict[str, Any]]) -> dict[str, Any]:
    by_state = dict.fromkeys(_STATES, 0)
    for entry in entries:
        by_state[entry["state"]] += 1
    return {
        "sessions": len(entries),
        **by_state,
        "by_state": by_state,
        "clients": sum(e["clients"] for e in entries),
        "buffered_bytes": sum(e["buffered_bytes"] for e in entries),
        "memory_bytes": sum(e["memory_bytes"] for e in entries),
    }


async def stats_sessions(request: web.Request) -> web.Response:
    """Every visible session (``?project=``, ``?owner=`` filter), totals, and this process."""
    sessions = _visible_sessions(request)
    if isinstance(sessions, web.Response):
        return sessions
    server = server_of(request)
    now_m, now_w = server.clock.monotonic(), server.clock.time()
    ordered = sorted(sessions, key=lambda s: (s.info.created_at, s.info.key))
    entries = [session_entry(s, now_m, now_w) for s in ordered]
    return web.json_response(
        {"totals": _totals(entries), "server": server.process_facts(), "sessions": entries}
    )


def _wall_iso(monotonic_at: float | None, now_m: float, now_w: float) -> str | None:
    return None if monotonic_at is None else _iso(now_w - (now_m - monotonic_at))


def _storm_rows(snapshots: list[BreakerSnapshot], now_m: float, now_w: float) -> list[Any]:
    return [
        {
            "key": b.key,
            "state": b.state.value,
            "attempts": b.attempts_in_window,
            "trips": b.trips,
            "delay": b.delay,
            "retry_after": b.retry_after,
            "opened_at": _wall_iso(b.opened_at, now_m, now_w),
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


async def stats_breakers(request: web.Request) -> web.Response:
    """Every server-side breaker (per key, address, project) and the thresholds in force.

    A non-operator sees the key breakers of its own sessions only, the project breakers of the
    projects it may use, and no addresses.
    """
    server = server_of(request)
    identity = identify(request)
    if identity is None:
        return json_error(401, "unauthorized", "missing or invalid credential")
    manager, now_m, now_w = server.manager, server.clock.monotonic(), server.clock.time()
    keys = manager.key_storms.snapshot(now_m)
    if not identity.operator:
        keys = [
            b
            for b in keys
            if b.key in manager.sessions and manager.sessions[b.key].info.owner == identity.owner
        ]
    addresses = manager.address_storms.snapshot(now_m) if identity.operator else []
    projects = [
        {
            "project": b.project,
            "state": b.state.value,
            "failures": b.failures,
            "retry_after": b.retry_after,
            "opened_at": _wall_iso(b.opened_at, now_m, now_w),
        }
        for b in manager.start_failures.snapshot(now_m)
        if identity.operator or identity.may_use(b.project)
    ]
    key_rows, address_rows = _storm_rows(keys, now_m, now_w), _storm_rows(addresses, now_m, now_w)
    groups = {"key": key_rows, "address": address_rows, "project": projects}
    return web.json_response(
        {
            "thresholds": _thresholds(server),
            "open": {
                scope: sum(1 for row in rows if row["state"] == "open")
                for scope, rows in groups.items()
            },
            **groups,
        }
    )


_METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


async def metrics(request: web.Request) -> web.Response:
    body = server_of(request).metrics.render()
    return web.Response(body=body, headers={"Content-Type": _METRICS_TYPE})


async def list_sessions(request: web.Request) -> web.Response:
    denied = _require_operator(request)
    if denied is not None:
        return denied
    sessions = _visible_sessions(request)
    if isinstance(sessions, web.Response):
        return sessions
    server = server_of(request)
    now_m, now_w = server.clock.monotonic(), server.clock.time()
    ordered = sorted(sessions, key=lambda s: (s.info.created_at, s.info.key))
    entries = [session_entry(s, now_m, now_w) for s in ordered]
    for entry in entries:  # every node's sessions in a cluster: docs/scaling.md
        entry.update(node=server.node_name, node_state="up")
    if server.cluster is not None and not cluster_api.is_peer_request(request):
        query = request.query
        others = await cluster_api.remote_entries(
            request, owner=query.get("owner"), project=query.get("project")
        )
        if isinstance(others, web.Response):
            return others
        entries.extend(others)
    return web.json_response({"sessions": entries})


def _named_session(request: web.Request) -> Session | web.Response:
    """The session named by ``{key}``, for an operator (401/403/404 otherwise)."""
    denied = _require_operator(request)
    if denied is not None:
        return denied
    key = request.match_info["key"]
    session = server_of(request).manager.sessions.get(key)
    if session is None:
        return json_error(404, "not_found", f"no session {key[:140]}")
    return session


async def _on_owner_node(request: web.Request) -> web.Response | None:
    """In a cluster, the answer of the node that owns ``{key}`` (None: this node answers)."""
    if server_of(request).cluster is None or _require_operator(request) is not None:
        return None
    return await cluster_api.to_owner(request, request.match_info["key"])


async def get_session(request: web.Request) -> web.Response:
    answered = await _on_owner_node(request)
    if answered is not None:
        return answered
    session = _named_session(request)
    if isinstance(session, web.Response):
        return session
    clock = server_of(request).clock
    return web.json_response(session_entry(session, clock.monotonic(), clock.time()))


async def kill_session(request: web.Request) -> web.Response:
    """End a session (operator API): its clients get 4013."""
    answered = await _on_owner_node(request)
    if answered is not None:
        return answered
    session = _named_session(request)
    if isinstance(session, web.Response):
        return session
    server_of(request).manager.kill(session.info.key)
    return web.json_response({"killed": session.info.key})


async def clear_sessions(request: web.Request) -> web.Response:
    denied = _require_operator(request)
    if denied is not None:
        return denied
    project = request.query.get("project")
    if project is None and request.body_exists:
        try:
            body = await request.json()
        except ValueError:
            return json_error(400, "bad_json", "body must be a JSON object")
        if not isinstance(body, dict):
            return json_error(400, "bad_json", "body must be a JSON object")
        project = body.get("project")
        if project is not None and not isinstance(project, str):
            return json_error(400, "bad_field", "project must be a string")
    server = server_of(request)
    if project is not None and server.settings.project(project) is None:
        return json_error(404, "not_found", f"no project {project[:64]}")
    keys = server.manager.clear(project=project)
    if server.cluster is not None:  # and every other node's
        keys += await cluster_api.clear_others(request, {"project": project} if project else {})
    return web.json_response({"cleared": keys, "count": len(keys)})


async def stats_cluster(request: web.Request) -> web.Response:
    """The cluster's nodes, their liveness and session counts (``/stats/cluster``)."""
    denied = _require_operator(request)
    if denied is not None:
        return denied
    server = server_of(request)
    if server.cluster is None:  # one node: itself
        node = {"node": server.node_name, "state": "up", "url": "", "sessions": 0}
        node["sessions"] = len(server.manager.sessions)
        body = {"node": server.node_name, "ready": server.is_ready(), "nodes": [node]}
        return web.json_response({**body, "cluster": False})
    return await cluster_api.stats_cluster(request)


async def drain(request: web.Request) -> web.Response:
    denied = _require_operator(request)
    if denied is not None:
        return denied
    server = server_of(request)
    await server.drain()
    return web.json_response({"draining": True, "grace": server.settings.drain_grace}, status=202)
