"""The HTTP side of the ASGI front: the page, its assets, probes and the JSON session API.

Served: ``/`` (the page), ``/static/…``, ``/healthz``, ``/readyz``, ``/metrics``,
``/api/projects``, the caller's own sessions (``/api/me/sessions``: list, rename, end) and the
operator's ``DELETE /api/sessions/{key}``. Other endpoints of docs/protocol.md, section 9 answer
404 here (docs/embedding.md lists them); every error is the JSON body of section 9.
"""

from __future__ import annotations

import json
import mimetypes
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from tether.server.asgi_front.scope import Headers, Scope, route_of
from tether.server.asgi_front.terminal import Receive, Send
from tether.server.core import Server
from tether.server.entries import session_entry
from tether.server.identity import Identity
from tether.server.session import Session
from tether.server.state import EndReason
from tether.server.store.record import check_display_name

STATIC_DIR = Path(str(resources.files("tether").joinpath("web/static")))
_METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_ME = "/api/me/sessions"
MAX_BODY = 1024 * 1024

# The caller's identity (None: missing or invalid credential), or the seconds to wait after too
# many failed logins.
Identify = Callable[[], Awaitable["Identity | RetryAfter | None"]]


@dataclass(frozen=True)
class RetryAfter:
    seconds: int


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def json_response(value: Any, status: int = 200) -> Response:
    return Response(status, json.dumps(value).encode())


def json_error(status: int, code: str, message: str) -> Response:
    return json_response({"error": {"code": code, "message": message}}, status)


async def read_body(receive: Receive, limit: int = MAX_BODY) -> bytes | None:
    """The request's body, read whole; None when it is over ``limit`` bytes."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b""  # the client went away: nothing to answer
        chunk = bytes(message.get("body") or b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def send_response(send: Send, response: Response, *, head: bool = False) -> None:
    headers = [(b"content-type", response.content_type.encode())]
    headers.append((b"content-length", str(len(response.body)).encode()))
    headers += [(k.lower().encode(), v.encode("latin-1")) for k, v in response.headers.items()]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else response.body})


async def respond(
    server: Server, scope: Scope, headers: Headers, body: bytes, identify: Identify
) -> Response:
    """The answer to one HTTP request (``body``: the request's, read whole)."""
    if not server.host_allowed(headers):
        return json_error(403, "host_not_allowed", "host not allowed")
    method, route = str(scope.get("method") or "GET").upper(), route_of(scope)
    if method not in _SAFE_METHODS:  # the WebSocket's origin rule; a body must be JSON (CSRF)
        if not server.origin_allowed(headers):
            return json_error(403, "forbidden_origin", "origin not allowed")
        if body and headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return json_error(415, "unsupported_media_type", "a request body must be JSON")
    if route == "/" and method in ("GET", "HEAD"):
        return _file(STATIC_DIR / "index.html", no_cache=True)
    if route.startswith("/static/") and method in ("GET", "HEAD"):
        return _static(route[len("/static/") :])
    if route in ("/healthz", "/readyz", "/metrics") and method in ("GET", "HEAD"):
        return await _probe(server, route, identify)
    if route == "/api/projects" and method in ("GET", "HEAD"):
        return await _projects(server, identify)
    if route == _ME and method in ("GET", "HEAD"):
        return await _my_sessions(server, identify)
    if route.startswith(_ME + "/") and method in ("PATCH", "DELETE"):
        key = unquote(route[len(_ME) + 1 :])
        return await _my_session(server, key, method, body, identify)
    if route.startswith("/api/sessions/") and method == "DELETE":
        return await _kill(server, unquote(route[len("/api/sessions/") :]), identify)
    if route in ("/", "/healthz", "/readyz", "/metrics", "/api/projects"):
        return json_error(405, "method_not_allowed", "method not allowed")
    return json_error(404, "not_found", "not found")


def _file(path: Path, *, no_cache: bool = False) -> Response:
    if not path.is_file():
        return json_error(503, "not_built", "web assets are not built: run ./dev setup")
    kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    if kind.startswith("text/") or kind.endswith("javascript"):
        kind += "; charset=utf-8"
    headers = {"Cache-Control": "no-cache"} if no_cache else {}
    return Response(200, path.read_bytes(), kind, headers)


def _static(name: str) -> Response:
    root = STATIC_DIR.resolve()
    path = (root / name).resolve()
    if not path.is_relative_to(root) or not path.is_file():  # no way out of the folder
        return json_error(404, "not_found", "not found")
    return _file(path)


async def _caller(identify: Identify) -> Identity | Response:
    found = await identify()
    if isinstance(found, RetryAfter):
        response = json_error(429, "too_many_requests", "too many failed logins")
        response.headers["Retry-After"] = str(found.seconds)
        return response
    if found is None:
        return json_error(401, "unauthorized", "missing or invalid credential")
    return found


async def _probe(server: Server, route: str, identify: Identify) -> Response:
    settings = server.settings
    gated = settings.metrics_auth if route == "/metrics" else settings.healthz_auth
    if gated:
        caller = await _caller(identify)
        if isinstance(caller, Response):
            return caller
    if route == "/metrics":
        return Response(200, server.metrics.render(), _METRICS_TYPE)
    if route == "/healthz":
        return json_response({"status": "ok"})
    if not server.manager.accepting:
        return json_error(503, "draining", "not accepting new sessions")
    return json_response({"status": "ready"})


async def _projects(server: Server, identify: Identify) -> Response:
    caller = await _caller(identify)
    if isinstance(caller, Response):
        return caller
    listed: list[dict[str, str]] = []
    for project in server.settings.projects:
        if caller.may_use(project.id):
            item = {"id": project.id} | ({"name": project.name} if project.name else {})
            if caller.operator:
                item["directory"] = str(project.directory)
            listed.append(item)
    return json_response(listed)


async def _kill(server: Server, key: str, identify: Identify) -> Response:
    """End a session (operator API): its clients get 4013."""
    caller = await _caller(identify)
    if isinstance(caller, Response):
        return caller
    if not caller.operator:
        return json_error(403, "forbidden", "operator role required")
    if key not in server.manager.sessions:
        return json_error(404, "not_found", f"no session {key[:140]}")
    server.manager.kill(key)
    return json_response({"killed": key})


def _entry(server: Server, session: Session) -> dict[str, Any]:
    entry = session_entry(session, server.clock.monotonic(), server.clock.time())
    return entry | {"node": server.node_name, "node_state": "up"}


async def _my_sessions(server: Server, identify: Identify) -> Response:
    """The caller's own sessions, oldest first."""
    caller = await _caller(identify)
    if isinstance(caller, Response):
        return caller
    mine = [s for s in server.manager.sessions.values() if s.info.owner == caller.owner]
    mine.sort(key=lambda s: (s.info.created_at, s.info.key))
    return json_response({"sessions": [_entry(server, s) for s in mine]})


async def _my_session(
    server: Server, key: str, method: str, body: bytes, identify: Identify
) -> Response:
    """``PATCH {"name": …}`` renames one of the caller's sessions, ``DELETE`` ends it (its
    clients get 4013); someone else's is as unknown (404)."""
    caller = await _caller(identify)
    if isinstance(caller, Response):
        return caller
    session = server.manager.sessions.get(key)
    if session is None or session.info.owner != caller.owner:
        return json_error(404, "not_found", f"no session {key[:140]}")
    if method == "DELETE":
        server.manager.kill(key, EndReason.ENDED)
        return json_response({"ended": key})
    try:
        change = json.loads(body or b"null")
    except ValueError:
        change = None
    if not isinstance(change, dict) or set(change) != {"name"}:
        return json_error(400, "bad_json", 'body must be {"name": "..."}')
    problem = check_display_name(change["name"])
    if problem is not None:
        return json_error(400, "bad_field", problem)
    server.manager.rename(key, change["name"])
    return json_response(_entry(server, session))
