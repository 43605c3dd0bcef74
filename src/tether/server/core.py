"""The running server: settings, the session manager, metrics and logs, wired together.

Framework-neutral glue used by the aiohttp front
(:mod:`tether.server.aiohttp_front.app`, :mod:`tether.server.aiohttp_front.ws`); the
security rules (identity, origin) live here so that any front applies the same ones.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from tether import __version__
from tether.errors import Refusal
from tether.protocol.codes import CloseCode
from tether.server import auth, hostcheck, logs
from tether.server.config import Settings
from tether.server.identity import Identity
from tether.server.manager import Connection, SessionManager
from tether.server.metrics import Metrics, close_code_label
from tether.server.pty import process_rss_bytes
from tether.server.session import SessionState
from tether.server.store import SessionStore

if TYPE_CHECKING:
    from tether.server.aiohttp_front.ws import TerminalConnection

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
        self.authenticator = auth.from_settings(settings)  # ConfigError: bad tokens file, key
        # Sessions per owner apply only with auth on: without it everyone is one owner.
        self.owner_limit: int | None = (
            settings.max_sessions_per_owner if self.authenticator.enabled else None
        )
        self.host_policy = hostcheck.HostPolicy.for_bind(settings.host, settings.allowed_hosts)
        self._trusted_proxies = hostcheck.parse_networks(settings.trusted_proxies)
        self._drain_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ identity / origin
    def identify(self, request: web.Request) -> Identity | None:
        """The principal behind a request; None when its credential is missing or invalid."""
        credential = auth.credential_from(request.headers, request.cookies, request.query)
        return self.authenticator.authenticate(credential)

    def origin_allowed(self, request: web.Request) -> bool:
        """Non-browser clients send no Origin; a browser's must be ours or configured."""
        headers, allowed = request.headers, self.settings.allowed_origins
        return hostcheck.origin_allowed(headers.get("Origin"), headers.get("Host"), allowed)

    def host_allowed(self, request: web.Request) -> bool:
        """The Host header names us (DNS rebinding defence, see :mod:`tether.server.hostcheck`)."""
        return self.host_policy.allows(request.headers.get("Host"))

    def client_address(self, request: web.Request) -> str:
        """The peer, or the forwarded client address when the peer is a trusted proxy."""
        forwarded = request.headers.get("X-Forwarded-For")
        return hostcheck.forwarded_client(request.remote or "", forwarded, self._trusted_proxies)

    # ------------------------------------------------------------------ events
    def log(self, event: str, **fields: Any) -> None:
        logs.log_event(event, **fields)

    def _on_event(self, event: str, **fields: Any) -> None:
        if event == "storm":
            self._on_storm(fields)
            return
        if event in {"exit", "reap", "kill"}:
            self.metrics.sessions_ended.labels(event).inc()
            self.metrics.activity.forget_session(str(fields.get("key")))
            session = self.manager.sessions.get(str(fields.get("key")))
            if session is not None:
                fields["age_s"] = round(time.time() - session.info.created_at, 3)
            if event == "reap":
                self.metrics.idle_reaps.inc()
        elif event == "create":
            self.metrics.sessions_created.inc()
        elif event == "error":
            self.metrics.spawn_failures.inc()
        self.log(event, **fields)
        if event in {"create", "error"} and fields.get("project"):
            self._on_project_start(str(fields["project"]), succeeded=event == "create")

    def _on_storm(self, fields: dict[str, Any]) -> None:
        scope = str(fields.get("scope", "key"))
        self.metrics.storm_rejections.labels(scope).inc()
        if not fields.get("tripped"):
            logs.log_at(logging.DEBUG, "storm", **fields)  # a storm must not flood the log
            return
        self.metrics.breaker_opens.labels(scope).inc()
        name = str(fields.get("key") if scope == "key" else fields.get("addr"))
        now = self.manager_clock()
        self.metrics.activity.breaker_opened(scope, name, now, now)
        logs.log_at(logging.WARNING, "storm", **fields)
        self._log_breaker(scope, name, "open", retry_after=fields.get("retry_after"))

    def _on_project_start(self, project: str, *, succeeded: bool) -> None:
        activity = self.metrics.activity
        if succeeded:
            if activity.breaker_closed("project", project):
                self._log_breaker("project", project, "closed")
            return
        now = self.manager_clock()
        for breaker in self.manager.start_failures.snapshot(now):
            is_open = breaker.project == project and breaker.state.value == "open"
            if (
                is_open
                and breaker.opened_at is not None
                and activity.breaker_opened("project", project, breaker.opened_at, now)
            ):
                self.metrics.breaker_opens.labels("project").inc()
                self._log_breaker(
                    "project",
                    project,
                    "open",
                    failures=breaker.failures,
                    retry_after=breaker.retry_after,
                )

    def _log_breaker(self, scope: str, name: str, state: str, **fields: Any) -> None:
        """One ``breaker`` line per change: open at warning, closed (trial passed) at info."""
        field = {"key": "key", "address": "addr", "project": "project"}[scope]
        level = logging.WARNING if state == "open" else logging.INFO
        logs.log_at(level, "breaker", scope=scope, state=state, **{field: name}, **fields)

    def on_refused(self, refusal: Refusal, address: str) -> None:
        self.metrics.connection_attempts.inc()
        self.metrics.refusals.labels(close_code_label(refusal.code)).inc()
        level = logging.DEBUG if refusal.code == CloseCode.STORM else logging.INFO
        logs.log_at(level, "refuse", addr=address, code=refusal.code, reason=refusal.reason)

    def on_admitted(
        self, connection: Connection, front: TerminalConnection, elapsed: float
    ) -> None:
        self.metrics.connection_attempts.inc()
        hello, info = connection.attach.hello, connection.session.info
        kind = "create" if connection.created else "attach"
        self.metrics.connections_opened.labels(kind).inc()
        now = time.monotonic()
        activity = self.metrics.activity
        activity.connection_started(id(connection.attach.client), now)
        if connection.created:
            self.metrics.connect_latency.observe(elapsed)
        else:
            self.metrics.reconnects.inc()
            self.metrics.reattach_latency.observe(elapsed)
            activity.record_reattach(info.key, now)
            if "offset" in front.request.query:
                self.metrics.resumes.labels("true" if hello["gap"] else "false").inc()
        for scope, name in (("key", info.key), ("address", front.address)):
            if activity.breaker_closed(scope, name):
                self._log_breaker(scope, name, "closed")
        self.log(
            "connect",
            key=info.key,
            session=info.session_id,
            project=info.project,
            owner=info.owner,
            client=connection.attach.client.client_id,
            addr=front.address,
            pid=info.pid,
            kind=kind,
            replay_from=hello["replay_from"],
            gap=hello["gap"],
            head=hello["head"],
            clients=len(connection.session.clients),
            duration_ms=round(elapsed * 1000, 3),
        )

    def _close_code(self, connection: Connection, front: TerminalConnection) -> int | None:
        """The code that ended a connection: the server's when it closed first, else the peer's.

        (The socket's own ``close_code`` is the code the peer answered with, which need not
        echo ours.)
        """
        final = connection.attach.client.final
        if final is not None:  # the session ended: exit, kill, reap, shutdown
            return final[1]
        if not self.manager.accepting:
            return int(CloseCode.GOING_AWAY)  # drain tells every client 1001
        return front.ws.close_code

    def on_detached(self, connection: Connection, front: TerminalConnection) -> None:
        code = self._close_code(connection, front)
        self.metrics.connections_closed.labels(close_code_label(code)).inc()
        lasted = self.metrics.activity.connection_ended(
            id(connection.attach.client), time.monotonic()
        )
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
            clients=len(connection.session.clients),
            duration_ms=None if lasted is None else round(lasted * 1000, 3),
        )
        self.manager.release_memory_soon()

    # ------------------------------------------------------------------ facts
    def snapshot(self) -> dict[str, Any]:
        """Live facts for the metrics collector, read at scrape time."""
        sessions = list(self.manager.sessions.values())
        states = {state.value: 0 for state in SessionState}
        for session in sessions:
            states[session.state.value] += 1
        now = self.manager_clock()
        detached = [now - s.detached_since for s in sessions if s.state is SessionState.DETACHED]
        manager = self.manager
        projects = manager.start_failures.snapshot(now)
        return {
            "states": states,
            "clients": sum(len(s.clients) for s in sessions),
            "buffered_bytes": sum(s.ring.size for s in sessions),
            "memory_bytes": sum(s.memory_bytes for s in sessions),
            "breakers_open": {
                "key": manager.key_storms.open_count(now),
                "address": manager.address_storms.open_count(now),
                "project": sum(1 for b in projects if b.state.value == "open"),
            },
            "breakers_tripped": {
                "key": sum(1 for b in manager.key_storms.snapshot(now) if b.trips),
                "address": sum(1 for b in manager.address_storms.snapshot(now) if b.trips),
                "project": sum(1 for b in projects if b.state.value != "closed"),
            },
            "detached_oldest_seconds": max(detached, default=0.0),
            "idle_timeout_seconds": self.settings.idle_timeout,
            "max_sessions": self.settings.max_sessions,
            "ready": manager.accepting,
        }

    def manager_clock(self) -> float:
        return time.monotonic()

    def process_facts(self) -> dict[str, Any]:
        """This server process: pid, RSS, CPU (seconds, and percent since the last call)."""
        times = os.times()
        cpu = times.user + times.system
        uptime = time.time() - self.started_at
        percent = self.metrics.activity.cpu_percent(time.monotonic(), cpu)
        if percent is None:  # first call: the average over the process's life
            percent = 100 * cpu / uptime if uptime > 0 else 0.0
        return {
            "pid": os.getpid(),
            "version": __version__,
            "rss_bytes": process_rss_bytes(os.getpid()),
            "cpu_seconds": round(cpu, 3),
            "cpu_percent": round(percent, 1),
            "uptime_seconds": round(uptime, 3),
            "connections": len(self.connections),
            "ready": self.manager.accepting,
        }

    async def heartbeat(self) -> None:
        """One timer for every connection (not a task each): ping, or drop the silent ones."""
        while True:
            await asyncio.sleep(self.settings.heartbeat)
            for connection in list(self.connections):
                connection.heartbeat_tick()

    # ------------------------------------------------------------------ drain
    async def drain(self) -> None:
        """Stop accepting, tell every client 1001, end the shells after the drain grace."""
        if self.begin_drain():
            self._drain_task = asyncio.get_running_loop().create_task(self._end_after_grace())

    def begin_drain(self) -> bool:
        """Stop accepting and tell every client 1001; False when already draining."""
        if not self.manager.accepting:
            return False
        self.manager.accepting = False
        self.log("drain", grace=self.settings.drain_grace)
        for connection in list(self.connections):
            connection.close(CloseCode.GOING_AWAY, "server draining")
        return True

    async def _end_after_grace(self) -> None:
        await asyncio.sleep(self.settings.drain_grace)
        await self.manager.shutdown()

    async def shutdown(self) -> None:
        """End every session now (a drain in progress is cut short) and wait for the reaping."""
        if self._drain_task is not None and not self._drain_task.done():
            self._drain_task.cancel()
        self.begin_drain()
        await self.manager.shutdown()


SERVER_KEY = web.AppKey("server", Server)
