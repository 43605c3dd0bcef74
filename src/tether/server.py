"""The running server: settings, the session manager, metrics and logs, wired together.

Framework-neutral glue used by the aiohttp front (:mod:`tether.app`, :mod:`tether.ws`); the
security rules (identity, origin) live here so that any front applies the same ones.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from tether import __version__, logs
from tether.codes import CloseCode
from tether.config import Settings
from tether.errors import Refusal
from tether.identity import ANONYMOUS, Identity
from tether.manager import Connection, SessionManager, is_loopback
from tether.metrics import Metrics
from tether.pty import process_rss_bytes
from tether.session import SessionState
from tether.store import SessionStore

if TYPE_CHECKING:
    from tether.ws import TerminalConnection

_REFUSAL_EVENTS = {CloseCode.STORM: "storm"}


class Server:
    """One tether server process (or one embedded instance in tests)."""

    def __init__(self, settings: Settings, store: SessionStore | None = None) -> None:
        self.settings = settings
        self.manager = SessionManager(settings, store=store, listener=self._on_event)
        self.metrics = Metrics(self.snapshot)
        self.metrics.info.labels(__version__).set(1)
        self.connections: set[TerminalConnection] = set()
        self.started_at = time.time()
        self.owner_limit: int | None = None  # sessions per owner apply only with auth on
        self._drain_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ identity / origin
    def identify(self, request: web.Request) -> Identity | None:
        """The principal behind a request (authentication is off: the local anonymous user)."""
        return ANONYMOUS

    def origin_allowed(self, request: web.Request) -> bool:
        """Non-browser clients send no Origin; a browser's must be ours or configured."""
        origin = request.headers.get("Origin")
        if origin is None:
            return True
        if origin in self.settings.allowed_origins:
            return True
        host = request.headers.get("Host", "")
        return origin in (f"http://{host}", f"https://{host}")

    def client_address(self, request: web.Request) -> str:
        peer = request.remote or ""
        if peer in self.settings.trusted_proxies:
            forwarded = request.headers.get("X-Forwarded-For", "")
            hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
            if hops:
                return hops[-1]
        return peer

    # ------------------------------------------------------------------ events
    def log(self, event: str, **fields: Any) -> None:
        logs.log_event(event, **fields)

    def _on_event(self, event: str, **fields: Any) -> None:
        if event == "create":
            self.metrics.sessions_created.inc()
        elif event in {"exit", "reap", "kill"}:
            self.metrics.sessions_ended.labels(event).inc()
            if event == "reap":
                self.metrics.idle_reaps.inc()
        elif event == "storm" and fields.get("tripped"):
            self.metrics.breaker_opens.labels(fields.get("scope", "key")).inc()
        elif event == "error":
            self.metrics.spawn_failures.inc()
        self.log(event, **fields)

    def on_refused(self, refusal: Refusal, address: str) -> None:
        self.metrics.connection_attempts.inc()
        self.metrics.refusals.labels(str(refusal.code)).inc()
        self.metrics.connections_closed.labels(str(refusal.code)).inc()
        if refusal.code == CloseCode.STORM:
            scope = "address" if not is_loopback(address) else "key"
            self.metrics.storm_rejections.labels(scope).inc()
        self.log("refuse", addr=address, code=refusal.code, reason=refusal.reason)

    def on_admitted(
        self, connection: Connection, front: TerminalConnection, elapsed: float
    ) -> None:
        self.metrics.connection_attempts.inc()
        hello = connection.attach.hello
        kind = "create" if connection.created else "attach"
        self.metrics.connections_opened.labels(kind).inc()
        if connection.created:
            self.metrics.connect_latency.observe(elapsed)
        else:
            self.metrics.reconnects.inc()
            self.metrics.reattach_latency.observe(elapsed)
            if "offset" in front.request.query:
                self.metrics.resumes.labels("true" if hello["gap"] else "false").inc()
        info = connection.session.info
        self.log(
            "attach",
            key=info.key,
            session=info.session_id,
            project=info.project,
            owner=info.owner,
            client=connection.attach.client.client_id,
            addr=front.address,
            pid=info.pid,
            created=connection.created,
            replay_from=hello["replay_from"],
            gap=hello["gap"],
            duration_ms=round(elapsed * 1000, 3),
        )

    def on_detached(self, connection: Connection, front: TerminalConnection) -> None:
        code = front.ws.close_code
        self.metrics.connections_closed.labels(str(code if code is not None else 1006)).inc()
        info = connection.session.info
        self.log(
            "detach",
            key=info.key,
            session=info.session_id,
            project=info.project,
            owner=info.owner,
            client=connection.attach.client.client_id,
            addr=front.address,
            pid=info.pid,
            code=code,
        )

    # ------------------------------------------------------------------ facts
    def snapshot(self) -> dict[str, Any]:
        sessions = list(self.manager.sessions.values())
        states = {state.value: 0 for state in SessionState}
        for session in sessions:
            states[session.state.value] += 1
        now = self.manager_clock()
        return {
            "states": states,
            "clients": sum(len(s.clients) for s in sessions),
            "buffered_bytes": sum(s.ring.size for s in sessions),
            "breakers_open": {
                "key": self.manager.key_storms.open_count(now),
                "address": self.manager.address_storms.open_count(now),
                "project": sum(
                    1 for b in self.manager.start_failures.snapshot(now) if b.state.value == "open"
                ),
            },
            "ready": self.manager.accepting,
        }

    def manager_clock(self) -> float:
        return time.monotonic()

    def process_facts(self) -> dict[str, Any]:
        times = os.times()
        return {
            "pid": os.getpid(),
            "rss_bytes": process_rss_bytes(os.getpid()),
            "cpu_seconds": round(times.user + times.system, 3),
            "uptime_seconds": round(time.time() - self.started_at, 3),
        }

    # ------------------------------------------------------------------ drain
    async def drain(self) -> None:
        """Stop accepting, tell every client 1001, end the shells after the drain grace."""
        if not self.manager.accepting:
            return
        self.manager.accepting = False
        self.log("drain", grace=self.settings.drain_grace)
        for connection in list(self.connections):
            connection.close(CloseCode.GOING_AWAY, "server draining")
        loop = asyncio.get_running_loop()
        self._drain_task = loop.create_task(self._end_after_grace())

    async def _end_after_grace(self) -> None:
        await asyncio.sleep(self.settings.drain_grace)
        await self.manager.shutdown()


SERVER_KEY = web.AppKey("server", Server)
