"""Servers the client tests talk to over real WebSockets on 127.0.0.1.

- :class:`FakeServer` speaks the wire protocol itself; its "shell" echoes input back as output,
  so a test can check the exact output stream and exactly-once input. It can refuse connects,
  withhold acks or input, send a hello of the test's choosing and inject any text frame.
- :class:`Relay` sits in front of a real tether server and relays every frame both ways; it can
  inject a text frame towards the client (a proxy that corrupts the stream).

Both tell listeners (``add_listener``) about every change, so tests wait on conditions, never on
sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

Outbox = asyncio.Queue[bytes | str | None]


async def until(predicate: Callable[[], bool], *sources: Any, timeout: float = 10) -> None:
    """Wait until ``predicate()`` holds, checking it again whenever a source reports a change.

    Sources are anything with ``add_listener(callback) -> remove`` (a Terminal, a FakeServer).
    """
    changed = asyncio.Event()
    removers = [source.add_listener(lambda *_: changed.set()) for source in sources]
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                await changed.wait()
                changed.clear()
    finally:
        for remove in removers:
            remove()


class _Notifier:
    def __init__(self) -> None:
        self._listeners: list[Callable[[], None]] = []

    def add_listener(self, listener: Callable[..., None]) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def _changed(self) -> None:
        for listener in list(self._listeners):
            listener()


@dataclass
class FakeSession:
    session_id: str
    output: bytearray = field(default_factory=bytearray)
    input_counts: dict[str, int] = field(default_factory=dict)
    clients: list[Outbox] = field(default_factory=list)
    dropped: int = 0  # output bytes no longer buffered (for gaps)
    fresh: bool = True  # no connection has attached yet: the next hello says ``created``

    def append(self, data: bytes) -> None:
        self.output += data
        for queue in self.clients:
            queue.put_nowait(bytes(data))


class FakeServer(_Notifier):
    """Start with ``await FakeServer().start()``; stop with ``await server.stop()``."""

    def __init__(self) -> None:
        super().__init__()
        self.sessions: dict[str, FakeSession] = {}
        self.refusals: list[tuple[int, str]] = []  # close codes for the next connects, in order
        self.hellos: list[str] = []  # raw first frames for the next admitted connects, in order
        self.send_acks = True
        self.accept_input = True
        self.connects: list[dict[str, str]] = []
        self.input_frames = 0  # binary frames received
        self.close_codes: list[int | None] = []  # how each served connection ended
        self.sockets: list[web.WebSocketResponse] = []
        self._queues: list[Outbox] = []
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def start(self) -> FakeServer:
        app = web.Application()
        app.router.add_get("/ws/terminal", self._handle)
        app.router.add_get("/api/projects", self._projects)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        await self.drop_all()
        assert self._runner is not None
        await self._runner.cleanup()

    async def drop_all(self, code: int | None = None) -> None:
        """Close every connection: with ``code``, or abruptly (the client sees 1006)."""
        for ws in list(self.sockets):
            if code is None:
                transport = ws._req.transport if ws._req else None
                if transport is not None:
                    transport.abort()
            else:
                await ws.close(code=code, message=b"test")

    def inject(self, text: str) -> None:
        """Send ``text`` as a text frame to every connected client (after what is queued)."""
        for queue in self._queues:
            queue.put_nowait(text)

    async def _projects(self, request: web.Request) -> web.Response:
        return web.json_response([{"id": "default"}, {"id": "other"}])

    async def _handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=("tether.v1",))
        await ws.prepare(request)
        query = dict(request.query)
        self.connects.append(query)
        self._changed()
        if self.refusals:
            code, reason = self.refusals.pop(0)
            await ws.close(code=code, message=reason.encode())
            return ws
        session = self._find_or_create(query)
        if session is None:
            await ws.close(code=4004, message=b"session not found")
            return ws
        self.sockets.append(ws)
        try:
            await self._serve(ws, session, query)
        finally:
            self.sockets.remove(ws)
            self.close_codes.append(ws.close_code)
            self._changed()
        return ws

    def _find_or_create(self, query: dict[str, str]) -> FakeSession | None:
        session_id = query.get("session")
        if session_id in self.sessions:
            return self.sessions[session_id]
        if query.get("create") == "0":
            return None
        session_id = session_id or f"session_1754900000000_fake{next(self._ids):016d}"
        session = self.sessions[session_id] = FakeSession(session_id)
        return session

    def _hello(self, session: FakeSession, query: dict[str, str], created: bool) -> dict[str, Any]:
        offset = int(query["offset"]) if "offset" in query and not created else None
        replay_from = session.dropped if offset is None else max(offset, session.dropped)
        gap = replay_from - offset if offset is not None else 0
        client = query.get("client", "")
        return {
            "type": "hello", "protocol": 1, "session": session.session_id, "project": "default",
            "key": f"{session.session_id}:{query.get('project')}", "created": created,
            "replay_from": replay_from, "gap": gap, "head": len(session.output),
            "input_acked": session.input_counts.get(client, 0), "restore": "",
            "cols": int(query.get("cols", 80)), "rows": int(query.get("rows", 24)),
            "heartbeat": 25,
        }  # fmt: skip

    async def _serve(
        self, ws: web.WebSocketResponse, session: FakeSession, query: dict[str, str]
    ) -> None:
        created, session.fresh = session.fresh, False
        hello = self._hello(session, query, created)
        queue: Outbox = asyncio.Queue()
        await ws.send_str(self.hellos.pop(0) if self.hellos else json.dumps(hello))
        backlog = bytes(session.output[hello["replay_from"] :])
        if backlog:
            queue.put_nowait(backlog)
        session.clients.append(queue)
        self._queues.append(queue)
        sender = asyncio.create_task(self._send_loop(ws, queue))
        try:
            async for message in ws:
                self._receive(session, query.get("client", ""), message, queue)
                self._changed()
        finally:
            session.clients.remove(queue)
            self._queues.remove(queue)
            queue.put_nowait(None)
            with contextlib.suppress(Exception):
                await sender

    async def _send_loop(self, ws: web.WebSocketResponse, queue: Outbox) -> None:
        while (item := await queue.get()) is not None:
            with contextlib.suppress(Exception):
                if isinstance(item, bytes):
                    await ws.send_bytes(item)
                else:
                    await ws.send_str(item)

    def _receive(self, session: FakeSession, client: str, message: Any, queue: Outbox) -> None:
        if message.type.name == "BINARY":
            self.input_frames += 1
            if not self.accept_input:
                return
            session.input_counts[client] = session.input_counts.get(client, 0) + len(message.data)
            if self.send_acks:  # before the echo: a client that read the echo has the ack
                ack = {"type": "ack", "input": session.input_counts[client]}
                queue.put_nowait(json.dumps(ack))
            session.append(message.data)
        elif message.type.name == "TEXT":
            data = json.loads(message.data)
            if data["type"] == "ping":
                queue.put_nowait(json.dumps({"type": "pong", "t": data["t"]}))
            elif data["type"] == "resize":
                queue.put_nowait(json.dumps({"type": "error", "code": "seen", "message": "ok"}))


class Relay(_Notifier):
    """A WebSocket relay in front of ``upstream`` (a real server's ``ws://…/ws/terminal``)."""

    def __init__(self, upstream: str) -> None:
        super().__init__()
        self.upstream = upstream
        self.connects = 0
        self._clients: list[web.WebSocketResponse] = []
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/terminal"

    async def __aenter__(self) -> Relay:
        app = web.Application()
        app.router.add_get("/ws/terminal", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._http = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for ws in list(self._clients):
            await ws.close()
        assert self._runner is not None and self._http is not None
        await self._runner.cleanup()
        await self._http.close()

    async def inject(self, text: str) -> None:
        """Send ``text`` to every client, between two frames the server sent."""
        for ws in list(self._clients):
            await ws.send_str(text)

    async def _handle(self, request: web.Request) -> web.WebSocketResponse:
        assert self._http is not None
        client = web.WebSocketResponse(protocols=("tether.v1",))
        await client.prepare(request)
        async with self._http.ws_connect(
            self.upstream, params=dict(request.query), protocols=("tether.v1",)
        ) as server:
            self.connects += 1
            self._clients.append(client)
            self._changed()
            try:
                await asyncio.gather(self._pump(server, client), self._pump(client, server))
            finally:
                self._clients.remove(client)
        return client

    @staticmethod
    async def _pump(source: Any, target: Any) -> None:
        """Relay frames from ``source`` to ``target``; a close ends both sides."""
        with contextlib.suppress(Exception):
            async for message in source:
                if message.type is aiohttp.WSMsgType.BINARY:
                    await target.send_bytes(message.data)
                elif message.type is aiohttp.WSMsgType.TEXT:
                    await target.send_str(message.data)
        with contextlib.suppress(Exception):
            await target.close(code=source.close_code or 1006)
