"""Where aiohttp handlers find the :class:`~tether.server.core.Server`, and a request's facts
read into the plain mappings the core takes (the one place that does so)."""

from __future__ import annotations

from aiohttp import web

from tether.server.core import Server
from tether.server.front import Upgrade
from tether.server.identity import Identity

SERVER_KEY = web.AppKey("server", Server)


def server_of(request: web.Request) -> Server:
    return request.app[SERVER_KEY]


def identify(request: web.Request) -> Identity | None:
    """The principal behind ``request``; None when its credential is missing or invalid."""
    return server_of(request).identify(request.headers, request.cookies, request.query)


def client_address(request: web.Request) -> str:
    """The peer, or the client it forwards for when it is a trusted proxy."""
    forwarded = request.headers.getall("X-Forwarded-For", ())
    return server_of(request).client_address(request.remote or "", forwarded)


def upgrade_of(request: web.Request) -> Upgrade:
    """A ``/ws/terminal`` request as the core takes it."""
    # The first line only, as aiohttp reads it when it picks the subprotocol of the answer.
    offered = request.headers.get("Sec-WebSocket-Protocol", "")
    return Upgrade(
        headers=request.headers,
        cookies=request.cookies,
        query=request.query,
        subprotocols=tuple(item.strip() for item in offered.split(",") if item.strip()),
    )
