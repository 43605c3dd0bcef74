"""HTTP endpoints of docs/protocol.md, section 9: stats, metrics, health, projects, operator API.

Every error is JSON: ``{"error": {"code": "...", "message": "..."}}`` with a 4xx/5xx status.
"""

from __future__ import annotations

import contextlib
from typing import Any

from aiohttp import web

from tether.server import http_api, recording
from tether.server.aiohttp_front import cluster_api
from tether.server.aiohttp_front.context import identify, server_of
from tether.server.http_api import Answer
from tether.server.identity import Identity
from tether.server.session import Session


def answer(result: Answer) -> web.Response:
    """A framework-neutral answer (tether.server.http_api) as aiohttp's response."""
    return web.json_response(result.body, status=result.status)


def json_error(status: int, code: str, message: str) -> web.Response:
    return answer(http_api.error(status, code, message))


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


def caller(request: web.Request, *, operator: bool = False) -> Identity | web.Response:
    """Who sends ``request`` (an operator, with ``operator``), else the 401/403 to answer."""
    found = http_api.checked(identify(request), operator=operator)
    return answer(found) if isinstance(found, Answer) else found


def require_operator(request: web.Request) -> web.Response | None:
    """None when the request carries an operator's credential, else the 401/403 to answer."""
    found = caller(request, operator=True)
    return found if isinstance(found, web.Response) else None


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    return answer(http_api.readiness(server_of(request)))


async def projects(request: web.Request) -> web.Response:
    identity = caller(request)
    if isinstance(identity, web.Response):
        return identity
    return answer(http_api.projects(server_of(request), identity))


async def stats_sessions(request: web.Request) -> web.Response:
    """Every visible session (``?project=``, ``?owner=`` filter), totals, and this process."""
    identity = caller(request)
    if isinstance(identity, web.Response):
        return identity
    return answer(http_api.stats_sessions(server_of(request), identity, request.query))


async def stats_breakers(request: web.Request) -> web.Response:
    """Every server-side breaker and the thresholds in force (a non-operator: its own)."""
    identity = caller(request)
    if isinstance(identity, web.Response):
        return identity
    return answer(http_api.stats_breakers(server_of(request), identity))


_METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


async def metrics(request: web.Request) -> web.Response:
    body = server_of(request).metrics.render()
    return web.Response(body=body, headers={"Content-Type": _METRICS_TYPE})


async def list_sessions(request: web.Request) -> web.Response:
    identity = caller(request, operator=True)
    if isinstance(identity, web.Response):
        return identity
    query = request.query
    sessions = http_api.visible_sessions(server_of(request), identity, query)
    return await _listing(request, sessions, owner=query.get("owner"), project=query.get("project"))


async def _listing(
    request: web.Request, sessions: list[Session], *, owner: str | None, project: str | None
) -> web.Response:
    """``{"sessions": [...]}``: these sessions of this node, oldest first, then in a cluster
    every other node's (with the same ``owner``/``project`` filter: docs/scaling.md)."""
    server = server_of(request)
    entries = http_api.listed_entries(server, sessions)
    if server.cluster is not None and not cluster_api.is_peer_request(request):
        others = await cluster_api.remote_entries(request, owner=owner, project=project)
        if isinstance(others, web.Response):
            return others
        entries.extend(others)
    return web.json_response({"sessions": entries})


def _named_session(request: web.Request) -> Session | web.Response:
    """The session named by ``{key}``, for an operator (401/403/404 otherwise)."""
    key = request.match_info["key"]
    found = http_api.named_session(server_of(request), identify(request), key)
    return answer(found) if isinstance(found, Answer) else found


async def _on_owner_node(request: web.Request) -> web.Response | None:
    """In a cluster, the answer of the node that owns ``{key}`` (None: this node answers)."""
    if server_of(request).cluster is None or require_operator(request) is not None:
        return None
    return await cluster_api.to_owner(request, request.match_info["key"])


async def get_session(request: web.Request) -> web.Response:
    answered = await _on_owner_node(request)
    if answered is not None:
        return answered
    session = _named_session(request)
    if isinstance(session, web.Response):
        return session
    return answer(http_api.session_answer(server_of(request), session))


async def kill_session(request: web.Request) -> web.Response:
    """End a session (operator API): its clients get 4013."""
    answered = await _on_owner_node(request)
    if answered is not None:
        return answered
    key = request.match_info["key"]
    return answer(http_api.kill(server_of(request), identify(request), key))


async def get_recording(request: web.Request) -> web.StreamResponse:
    """A session's recording (operator API): its parts merged into one asciicast v2 stream,
    live or ended, from this node's ``--record-dir`` (docs/operations.md)."""
    key = request.match_info["key"]
    paths = http_api.recording_parts(server_of(request), identify(request), key)
    if isinstance(paths, Answer):
        return answer(paths)
    response = web.StreamResponse(headers={"Content-Type": recording.CONTENT_TYPE})
    await response.prepare(request)
    async with contextlib.aclosing(http_api.recording_chunks(paths)) as chunks:
        async for chunk in chunks:
            await response.write(chunk)
    await response.write_eof()
    return response


async def clear_sessions(request: web.Request) -> web.Response:
    denied = require_operator(request)
    if denied is not None:
        return denied
    server, body = server_of(request), await request.read()
    project = http_api.clear_target(server, request.query.get("project"), body)
    if isinstance(project, Answer):
        return answer(project)
    keys = server.manager.clear(project=project)
    if server.cluster is not None:  # and every other node's
        keys += await cluster_api.clear_others(request, {"project": project} if project else {})
    return answer(http_api.cleared(keys))


# ----------------------------------------------------------------------------- own sessions
# ``/api/me/sessions``: any signed-in caller's own sessions (the page's session list).
_ME = "/api/me/sessions/"


async def my_sessions(request: web.Request) -> web.Response:
    """The caller's own sessions, every node's in a cluster, oldest first."""
    identity = caller(request)
    if isinstance(identity, web.Response):
        return identity
    mine = http_api.own_sessions(server_of(request), identity)
    return await _listing(request, mine, owner=identity.owner, project=None)


async def _my_target(
    request: web.Request, body: dict[str, Any] | None = None
) -> Session | web.Response:
    """The caller's own session named by ``{key}``, or the answer to give: 401, 404 (someone
    else's or unknown), or in a cluster the owner node's answer to the same request."""
    identity = caller(request)
    if isinstance(identity, web.Response):
        return identity
    server, key = server_of(request), request.match_info["key"]
    if server.cluster is not None:
        answered = await cluster_api.to_owner(
            request, key, owner=identity.owner, path=_ME, body=body
        )
        if answered is not None:
            return answered
    found = http_api.own_session(server, identity, key)
    return answer(found) if isinstance(found, Answer) else found


async def rename_my_session(request: web.Request) -> web.Response:
    """``PATCH`` ``{"name": "..."}``: the session's display name (empty: none)."""
    name = http_api.requested_name(await request.read())
    if isinstance(name, Answer):
        return answer(name)
    session = await _my_target(request, {"name": name})
    if isinstance(session, web.Response):
        return session
    return answer(http_api.rename(server_of(request), session, name))


async def end_my_session(request: web.Request) -> web.Response:
    """End one of the caller's sessions: its clients get 4013 "session ended by its owner"."""
    session = await _my_target(request)
    if isinstance(session, web.Response):
        return session
    return answer(http_api.end_own(server_of(request), session))


async def stats_cluster(request: web.Request) -> web.Response:
    """The cluster's nodes, their liveness and session counts (``/stats/cluster``)."""
    denied = require_operator(request)
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
    denied = require_operator(request)
    if denied is not None:
        return denied
    return answer(await http_api.drain(server_of(request)))
