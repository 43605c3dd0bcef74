"""The Python client: an asyncio :class:`Terminal` that survives any number of disconnects.

``tether.client.connect(url, project=...)`` (also ``tether.connect``) opens one. The pure rules it
follows (resume offsets, the input ledger, the reconnection policy) live in :mod:`tether.protocol`;
this package is the I/O around them: :mod:`.terminal` (the driver), :mod:`.events` (what a
listener is told), :mod:`.urls` (server URLs and small HTTP requests), :mod:`.attach`
(``tether attach``'s terminal bridge).
"""

from __future__ import annotations

from tether.client.events import (
    ClientEvent,
    Connected,
    Disconnected,
    EventListener,
    Exited,
    Gap,
    Latency,
    Resized,
    ServerError,
)
from tether.client.terminal import Terminal, connect, new_client_id
from tether.client.urls import fetch_json, fetch_projects, http_url, websocket_url

__all__ = [
    "ClientEvent",
    "Connected",
    "Disconnected",
    "EventListener",
    "Exited",
    "Gap",
    "Latency",
    "Resized",
    "ServerError",
    "Terminal",
    "connect",
    "fetch_json",
    "fetch_projects",
    "http_url",
    "new_client_id",
    "websocket_url",
]
