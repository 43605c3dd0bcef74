"""What a connection front gives the core: the :class:`Front` protocol and an :class:`Upgrade`.

A front carries one client's connection: the aiohttp WebSocket handler today
(:class:`tether.server.aiohttp_front.ws.TerminalConnection`), an ASGI handler or a stream
forwarded from another node next. The core (:class:`tether.server.core.Server`, the session)
refers to fronts only through this protocol, never to a framework's types; a front reads its
framework's request into an :class:`Upgrade` of plain mappings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from tether.server.session import ClientSink


class Front(ClientSink, Protocol):
    """One client connection as the core sees it.

    The session reaches the client through :class:`ClientSink` (``wake`` when output is ready,
    ``send_message`` for a JSON control message, ``close(code, reason)``); the server also
    reads ``address`` (for limits and logs) and calls :meth:`heartbeat_tick` every heartbeat.
    Every call is made on the event loop and must not block: a front queues and returns.
    """

    @property
    def address(self) -> str:
        """The client's address: the peer, or the forwarded client behind a trusted proxy."""
        ...

    def heartbeat_tick(self) -> None:
        """Send a ping, or drop the connection when the peer left two pings unanswered (the
        session stays, detached)."""

    @property
    def close_sent(self) -> bool:
        """Whether the close frame this front was told to send is in the kernel, or its
        connection is gone: an upgrade may then exec without waiting for the peer's answer.
        False where a front cannot tell (the upgrade then waits until it ends)."""
        ...


@dataclass(frozen=True)
class Upgrade:
    """A ``/ws/terminal`` request as a front read it, with no framework type left.

    ``headers`` must look names up case-insensitively (as every framework's header object
    does); the core reads one line of each header it uses here. (``X-Forwarded-For``, whose
    lines all count, goes to :meth:`~tether.server.core.Server.client_address` whole.)
    """

    headers: Mapping[str, str]
    cookies: Mapping[str, str]
    query: Mapping[str, str]
    subprotocols: Sequence[str] = ()  # offered in Sec-WebSocket-Protocol, in order
