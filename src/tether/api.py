"""HTTP endpoints of PROTOCOL.md section 9: stats, metrics, health, projects, operator API.

Every error is JSON: ``{"error": {"code": "...", "message": "..."}}`` with a 4xx/5xx status.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from tether.server import SERVER_KEY, Server
from tether.session import Session


def json_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def _server(request: web.Request) -> Server:
    server: Server = request.app[SERVER_KEY]
    return server


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def session_entry(session: Session, now_monotonic: float, now_wall: float) -> dict[str, Any]:
    """One session as ``/stats/sessions`` and ``/api/sessions`` show it."""
    entry = session.stats()
    entry["created_at"] = _iso(session.info.created_at)
    entry["last_activity"] = _iso(now_wall - (now_monotonic - session.info.last_activity))
    return entry


def _require_operator(request: web.Request) -> web.Response | None:
    identity = _server(request).identify(request)
    if identity is None:
        return json_error(401, "unauthorized", "missing or invalid credential")
    if not identity.operator:
        return json_error(403, "forbidden", "operator role required")
    return None


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    if not _server(request).manager.accepting:
        return json_error(503, "draining", "not accepting new sessions")
    return web.json_response({"status": "ready"})


async def projects(request: web.Request) -> web.Response:
    server = _server(request)
    identity = server.identify(request)
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
    server = _server(request)
    identity = server.identify(request)
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


async def stats_sessions(request: web.Request) -> web.Response:
    sessions = _visible_sessions(request)
    if isinstance(sessions, web.Response):
        return sessions
    now_m, now_w = time.monotonic(), time.time()
    entries = [session_entry(s, now_m, now_w) for s in sessions]
    states = {"starting": 0, "attached": 0, "detached": 0, "ended": 0}
    for entry in entries:
        states[entry["state"]] += 1
    totals = {
        "sessions": len(entries),
        "attached": states["attached"],
        "detached": states["detached"],
        "starting": states["starting"],
        "ended": states["ended"],
        "clients": sum(e["clients"] for e in entries),
        "buffered_bytes": sum(e["buffered_bytes"] for e in entries),
        "memory_bytes": sum(e["memory_bytes"] for e in entries),
    }
    server = _server(request)
    return web.json_response(
        {"totals": totals, "server": server.process_facts(), "sessions": entries}
    )


async def stats_breakers(request: web.Request) -> web.Response:
    server = _server(request)
    identity = server.identify(request)
    if identity is None:
        return json_error(401, "unauthorized", "missing or invalid credential")
    manager, now = server.manager, time.monotonic()
    settings = server.settings

    def rows(snapshots: list[Any]) -> list[dict[str, Any]]:
        return [
            {
                "key": b.key,
                "state": b.state.value,
                "attempts": b.attempts_in_window,
                "trips": b.trips,
                "retry_after": b.retry_after,
                "opened_at": _iso(time.time() - (now - b.opened_at)) if b.opened_at else None,
            }
            for b in snapshots
        ]

    keys = manager.key_storms.snapshot(now)
    if not identity.operator:
        keys = [
            b
            for b in keys
            if b.key in manager.sessions and manager.sessions[b.key].info.owner == identity.owner
        ]
    return web.json_response(
        {
            "thresholds": {
                "key": {"threshold": settings.storm_threshold, "window": settings.storm_window},
                "address": {
                    "threshold": settings.address_storm_threshold,
                    "window": settings.storm_window,
                    "loopback_exempt": settings.storm_exempt_loopback,
                },
                "project": {
                    "failures": manager.start_failures.failures,
                    "open_for": manager.start_failures.open_for,
                },
            },
            "key": rows(keys),
            "address": rows(manager.address_storms.snapshot(now)) if identity.operator else [],
            "project": [
                {
                    "project": b.project,
                    "state": b.state.value,
                    "failures": b.failures,
                    "retry_after": b.retry_after,
                }
                for b in manager.start_failures.snapshot(now)
            ],
        }
    )


async def metrics(request: web.Request) -> web.Response:
    body = _server(request).metrics.render()
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})


async def list_sessions(request: web.Request) -> web.Response:
    denied = _require_operator(request)
    if denied is not None:
        return denied
    now_m, now_w = time.monotonic(), time.time()
    sessions = _server(request).manager.sessions.values()
    return web.json_response({"sessions": [session_entry(s, now_m, now_w) for s in sessions]})


async def kill_session(request: web.Request) -> web.Response:
    denied = _require_operator(request)
    if denied is not None:
        return denied
    key = request.match_info["key"]
    if not _server(request).manager.kill(key):
        return json_error(404, "not_found", f"no session {key[:140]}")
    return web.json_response({"killed": key})


async def clear_sessions(request: web.Request) -> web.Response:
    denied = _require_operator(request)
    if denied is not None:
        return denied
    project = request.query.get("project")
    if project is None and request.can_read_body:
        try:
            body = await request.json()
        except ValueError:
            return json_error(400, "bad_json", "body must be a JSON object")
        if not isinstance(body, dict):
            return json_error(400, "bad_json", "body must be a JSON object")
        project = body.get("project")
        if project is not None and not isinstance(project, str):
            return json_error(400, "bad_field", "project must be a string")
    keys = _server(request).manager.clear(project=project)
    return web.json_response({"cleared": keys, "count": len(keys)})


async def drain(request: web.Request) -> web.Response:
    denied = _require_operator(request)
    if denied is not None:
        return denied
    server = _server(request)
    await server.drain()
    return web.json_response({"draining": True, "grace": server.settings.drain_grace}, status=202)
