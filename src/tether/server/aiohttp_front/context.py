"""Where aiohttp handlers find the :class:`~tether.server.core.Server`, and a request's facts
read into the plain mappings the core takes (the one place that does so)."""

from __future__ import annotations

from aiohttp import web

from tether.server.cluster.placement import CLIENT_HEADER
from tether.server.core import Server
from tether.server.front import Upgrade
from tether.server.identity import Identity

SERVER_KEY = web.AppKey("server", Server)


def server_of(request: web.Request) -> Server:
    return request.app[SERVER_KEY]


def identify(request: web.Request) -> Identity | None:
    """The principal behind ``request``; None when its credential is missing or invalid.

    Raises 429 (``Retry-After``) while the client's address has too many failed logins.
    """
    server, address = server_of(request), client_address(request)
    retry_after = server.login_retry_after(address)
    if retry_after is not None:
        raise web.HTTPTooManyRequests(headers={"Retry-After": str(retry_after)})
    return server.identify(request.headers, request.cookies, request.query, address)


def client_address(request: web.Request) -> str:
    """The peer, or the client it forwards for when it is a trusted proxy."""
    server, peer = server_of(request), request.remote or ""
    if server.is_relay(request.headers, peer):  # a peer node forwards its client's address
        return request.headers.get(CLIENT_HEADER) or peer
    forwarded = request.headers.getall("X-Forwarded-For", ())
    return server.client_address(peer, forwarded)


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
