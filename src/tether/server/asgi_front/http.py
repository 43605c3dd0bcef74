"""The HTTP side of the ASGI front: the page, its assets, probes and the JSON API.

Served: ``/`` (the page), ``/static/…``, ``/healthz``, ``/readyz``, ``/metrics``, and the API
of docs/protocol.md, section 9 as :mod:`tether.server.http_api` answers it: projects, the
caller's own sessions, the operator's sessions (list, one, end, clear, recording), the stats
and drain. What only ``tether serve`` does (``/api/restart``, ``/stats/cluster``) answers 404
here (docs/embedding.md); every error is the JSON body of section 9.
"""

from __future__ import annotations

import contextlib
import json
import mimetypes
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from tether.server import http_api, recording
from tether.server.asgi_front.scope import Headers, Scope, query_of, route_of
from tether.server.asgi_front.terminal import Receive, Send
from tether.server.core import Server
from tether.server.http_api import Answer
from tether.server.identity import Identity

STATIC_DIR = Path(str(resources.files("tether").joinpath("web/static")))
_METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_ALL, _ME = "/api/sessions", "/api/me/sessions"
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


@dataclass(frozen=True)
class Stream:
    """A 200 whose body is sent as it is read (a recording)."""

    content_type: str
    chunks: AsyncGenerator[bytes]


@dataclass(frozen=True)
class Request:
    """What the API reads of a request."""

    method: str
    route: str
    query: dict[str, str]
    body: bytes


def json_response(value: Any, status: int = 200) -> Response:
    return Response(status, json.dumps(value).encode())


def answer(result: Answer) -> Response:
    """A framework-neutral answer (tether.server.http_api) as this front's response."""
    return json_response(result.body, result.status)


def json_error(status: int, code: str, message: str) -> Response:
    return answer(http_api.error(status, code, message))


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


async def send_response(send: Send, response: Response | Stream, *, head: bool = False) -> None:
    if isinstance(response, Stream):
        await _send_stream(send, response, head=head)
        return
    headers = [(b"content-type", response.content_type.encode())]
    headers.append((b"content-length", str(len(response.body)).encode()))
    headers += [(k.lower().encode(), v.encode("latin-1")) for k, v in response.headers.items()]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else response.body})


async def _send_stream(send: Send, stream: Stream, *, head: bool) -> None:
    start = {"type": "http.response.start", "status": 200}
    await send(start | {"headers": [(b"content-type", stream.content_type.encode())]})
    async with contextlib.aclosing(stream.chunks) as chunks:  # a cut download: files closed
        if not head:
            async for chunk in chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def respond(
    server: Server, scope: Scope, headers: Headers, body: bytes, identify: Identify
) -> Response | Stream:
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
    found = await _api(server, Request(method, route, query_of(scope), body), identify)
    if found is not None:
        return found
    if route in _ROUTES:
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


async def _caller(identify: Identify, *, operator: bool = False) -> Identity | Response:
    """The caller (an operator, with ``operator``), else the 401/403/429 to answer."""
    found = await identify()
    if isinstance(found, RetryAfter):
        response = json_error(429, "too_many_requests", "too many failed logins")
        response.headers["Retry-After"] = str(found.seconds)
        return response
    checked = http_api.checked(found, operator=operator)
    return answer(checked) if isinstance(checked, Answer) else checked


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
    return answer(http_api.readiness(server))


# ----------------------------------------------------------------------------- the JSON API
Query = dict[str, str]


def _sessions(server: Server, caller: Identity, query: Query) -> Answer:
    """``GET /api/sessions``: this process's sessions (a cluster is ``tether serve``'s)."""
    listed = http_api.visible_sessions(server, caller, query)
    return http_api.ok({"sessions": http_api.listed_entries(server, listed)})


def _my_sessions(server: Server, caller: Identity, query: Query) -> Answer:
    """``GET /api/me/sessions``: the caller's own sessions, oldest first."""
    mine = http_api.own_sessions(server, caller)
    return http_api.ok({"sessions": http_api.listed_entries(server, mine)})


def _projects(server: Server, caller: Identity, query: Query) -> Answer:
    return http_api.projects(server, caller)


def _breakers(server: Server, caller: Identity, query: Query) -> Answer:
    return http_api.stats_breakers(server, caller)


async def _clear(server: Server, request: Request) -> Answer:
    project = http_api.clear_target(server, request.query.get("project"), request.body)
    if isinstance(project, Answer):
        return project
    return http_api.cleared(server.manager.clear(project=project))


async def _drain(server: Server, request: Request) -> Answer:
    return await http_api.drain(server)


# GET routes, with whether they are an operator's only, and what they answer the caller.
_READS: dict[str, tuple[bool, Callable[[Server, Identity, Query], Answer]]] = {
    "/api/projects": (False, _projects),
    _ME: (False, _my_sessions),
    _ALL: (True, _sessions),
    "/stats/sessions": (False, http_api.stats_sessions),
    "/stats/circuit-breaker": (False, _breakers),
}
# POST routes (an operator's).
_ACTIONS: dict[str, Callable[[Server, Request], Awaitable[Answer]]] = {
    _ALL + "/clear": _clear,
    "/api/drain": _drain,
}
_ROUTES = frozenset({"/", "/healthz", "/readyz", "/metrics", *_READS, *_ACTIONS})


async def _api(server: Server, request: Request, identify: Identify) -> Response | Stream | None:
    """The JSON API's answer, or None when no route of it has this path and method."""
    method, route = request.method, request.route
    if route in _READS and method in ("GET", "HEAD"):
        operator, read = _READS[route]
        caller = await _caller(identify, operator=operator)
        if isinstance(caller, Response):
            return caller
        return answer(read(server, caller, request.query))
    if route in _ACTIONS and method == "POST":
        caller = await _caller(identify, operator=True)
        if isinstance(caller, Response):
            return caller
        return answer(await _ACTIONS[route](server, request))
    if route.startswith(_ME + "/") and method in ("PATCH", "DELETE"):
        return await _my_session(server, request, unquote(route[len(_ME) + 1 :]), identify)
    if route.startswith(_ALL + "/"):
        return await _session(server, request, route[len(_ALL) + 1 :], identify)
    return None


async def _session(
    server: Server, request: Request, rest: str, identify: Identify
) -> Response | Stream | None:
    """An operator's ``/api/sessions/{key}`` (GET, DELETE) and ``…/{key}/recording`` (GET)."""
    key, _, below = rest.partition("/")
    key, method = unquote(key), request.method
    served = ("GET", "HEAD") if below == "recording" else ("GET", "HEAD", "DELETE")
    if below not in ("", "recording") or method not in served:
        return None
    caller = await _caller(identify, operator=True)
    if isinstance(caller, Response):
        return caller
    if below == "recording":
        parts = http_api.recording_parts(server, caller, key)
        if isinstance(parts, Answer):
            return answer(parts)
        return Stream(recording.CONTENT_TYPE, http_api.recording_chunks(parts))
    if method == "DELETE":
        return answer(http_api.kill(server, caller, key))
    session = http_api.named_session(server, caller, key)
    if isinstance(session, Answer):
        return answer(session)
    return answer(http_api.session_answer(server, session))


async def _my_session(server: Server, request: Request, key: str, identify: Identify) -> Response:
    """``PATCH {"name": …}`` renames one of the caller's sessions, ``DELETE`` ends it (its
    clients get 4013); someone else's is as unknown (404)."""
    caller = await _caller(identify)
    if isinstance(caller, Response):
        return caller
    session = http_api.own_session(server, caller, key)
    if isinstance(session, Answer):
        return answer(session)
    if request.method == "DELETE":
        return answer(http_api.end_own(server, session))
    name = http_api.requested_name(request.body)
    if isinstance(name, Answer):
        return answer(name)
    return answer(http_api.rename(server, session, name))
