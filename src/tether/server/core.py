"""The running server: settings, the session manager, metrics and logs, wired together.

Framework-neutral: a front (:mod:`tether.server.aiohttp_front` today) reads its framework's
requests into plain mappings and talks to :class:`Server` through the small API below, so the
security rules (host, identity, origin, forwarded addresses) are the same for every front.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tether._version import __version__
from tether.errors import ConfigError, Refusal
from tether.protocol.codes import CloseCode
from tether.protocol.messages import (
    ClientMessage,
    MessageError,
    Ping,
    Resize,
    check_subprotocols,
    parse_client_message,
)
from tether.protocol.storm import StormDetector
from tether.server import auth, capacity, hostcheck, logs
from tether.server.clock import Clock, SystemClock
from tether.server.cluster.placement import LOCAL, Placement
from tether.server.config import Settings
from tether.server.front import Front, Upgrade
from tether.server.identity import Identity
from tether.server.manager import Connection, ConnectRequest, SessionManager
from tether.server.metrics import Metrics, close_code_label
from tether.server.pending import PendingConnections
from tether.server.pty import process_rss_bytes
from tether.server.recorder import Recorder
from tether.server.session import Client, Session, SessionState
from tether.server.store import SessionStore
from tether.server.upgrade import Upgrader

if TYPE_CHECKING:  # redis is imported only by a server that joins a cluster
    from tether.server.cluster.node import ClusterNode

LOGIN_FAILURE_WINDOW = 60.0  # seconds: max_login_failures per address within it


@dataclass(frozen=True)
class HostIdentity:
    """Who an embedding application's identity hook says is connecting (None: nobody, 4001)."""

    identity: Identity | None


class Server:
    """One tether server process (or one embedded instance in tests).

    What a front calls, and nothing else:

    - for any HTTP request: :meth:`host_allowed`, :meth:`identify`, :meth:`client_address`;
    - for a terminal connection, in order: :meth:`serving` (for its whole life),
      :meth:`admit`, :meth:`on_admitted` once the hello can be sent, :meth:`on_detached`;
      :meth:`on_refused` for a refusal the front makes itself;
    - for the process: :meth:`heartbeat` and :meth:`reaper` (run as tasks), :meth:`drain`,
      :meth:`begin_drain`, :meth:`wait_drained`, :meth:`shutdown`.

    The HTTP API reads ``settings``, ``manager``, ``metrics``, ``clock`` and
    :meth:`process_facts`.
    """

    def __init__(
        self, settings: Settings, store: SessionStore | None = None, *, clock: Clock | None = None
    ) -> None:
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        # With --redis-url: this node's membership; the store is then the shared Redis one.
        self.cluster: ClusterNode | None = None
        if settings.redis_url:
            from tether.server.cluster.node import ClusterNode  # redis: only in a cluster

            self.cluster = ClusterNode.from_settings(settings, self.clock)
        if self.cluster is not None and store is None:
            store = self.cluster.fenced_store  # records written only while the key is ours
        self.manager = SessionManager(
            settings,
            store=store,
            clock=self.clock.monotonic,
            wall_clock=self.clock.time,
            listener=self._on_event,
        )
        # What the fds and PTYs allow; the fd soft limit is raised to fit (docs/operations.md).
        self.capacity = capacity.prepare(settings.max_sessions)
        self.manager.max_sessions = self.capacity.max_sessions
        if self.cluster is not None:
            manager = self.manager
            self.cluster.bind(lambda: manager.sessions, manager.fence, manager.writer.flush)
            self.manager.record_interval = settings.cluster_record_interval
        self.metrics = Metrics(self.snapshot, self.clock)
        self.metrics.info.labels(__version__).set(1)
        # --record-dir: every session's output as asciicast (docs/operations.md).
        self.recorder: Recorder | None = None
        if settings.record_dir is not None:
            self.recorder = Recorder.from_settings(
                settings,
                self.clock.monotonic,
                self.clock.time,
                on_dropped=self.metrics.recording_dropped.inc,
                on_error=self.metrics.recording_errors.inc,
            )
            self.recorder.watch(self.manager)
        self.connections: set[Front] = set()
        self.started_at = self.clock.time()
        self.authenticator = auth.from_settings(settings)  # ConfigError: bad tokens file, key
        # Sessions per owner apply only with auth on: without it everyone is one owner.
        self.owner_limit: int | None = (
            settings.max_sessions_per_owner if self.authenticator.enabled else None
        )
        self.host_policy = hostcheck.HostPolicy.for_bind(settings.host, settings.allowed_hosts)
        self._trusted_proxies = hostcheck.parse_networks(settings.trusted_proxies)
        # The schemes a browser reaches us by: ours, or both behind a TLS-terminating proxy.
        self._own_schemes: tuple[str, ...] = (
            ("https",) if settings.certfile is not None else ("http",)
        ) + (("https",) if settings.trusted_proxies and settings.certfile is None else ())
        self._drain_task: asyncio.Task[None] | None = None
        # Surviving the server process (server/upgrade.py, server/survival.py): grows with
        # every upgrade in place or crash recovery; the upgrader is set once listening.
        self.generation = 1
        self.upgrader: Upgrader | None = None
        self.last_upgrade_error: str | None = None
        self.pending = PendingConnections(settings.max_pending_per_address, self._is_pending_exempt)
        # Failed logins per address: a few a minute, then a doubling pause (up to 5 minutes).
        self._login_failures = StormDetector(
            settings.max_login_failures, LOGIN_FAILURE_WINDOW, max_delay=300, forget_after=600
        )

    # ------------------------------------------------------------------ any request
    def identify(
        self,
        headers: Mapping[str, str],
        cookies: Mapping[str, str],
        query: Mapping[str, str],
        address: str | None = None,
    ) -> Identity | None:
        """The principal behind a request; None when its credential is missing or invalid.

        A credential presented and refused counts as a failed login of ``address``.
        """
        credential = auth.credential_from(headers, cookies, query)
        identity = self.authenticator.authenticate(credential)
        failed = identity is None and credential is not None
        if failed and address is not None and self._login_limited(address):
            self._login_failures.record(address, self.clock.monotonic())
        return identity

    def login_retry_after(self, address: str) -> int | None:
        """Seconds ``address`` must wait after too many failed logins; None: it may try."""
        if not self._login_limited(address):
            return None
        decision = self._login_failures.check(address, self.clock.monotonic())
        if decision.tripped:
            logs.log_at(
                logging.WARNING, "login_failures", addr=address, retry_after=decision.retry_after
            )
        return None if decision.allowed else decision.retry_after

    def _is_pending_exempt(self, peer: str) -> bool:
        """Loopback (as for the storm rule) and trusted proxies may hold any number of
        connections that have not sent their headers yet."""
        if self.settings.storm_exempt_loopback and hostcheck.is_loopback_host(peer):
            return True
        return hostcheck.is_in_networks(peer, self._trusted_proxies)

    def _login_limited(self, address: str) -> bool:
        exempt = self.settings.storm_exempt_loopback and hostcheck.is_loopback_host(address)
        return self.authenticator.enabled and not exempt

    def reload(self) -> bool:
        """Re-read the tokens file, keys and deny list (SIGHUP); sessions are not touched.

        On an error the credentials in force stay, and the error is logged: False.
        """
        try:
            self.authenticator = auth.from_settings(self.settings)
        except ConfigError as error:
            logs.log_at(logging.ERROR, "reload", ok=False, reason=str(error))
            return False
        self.log("reload", ok=True)
        return True

    def origin_allowed(self, headers: Mapping[str, str]) -> bool:
        """Non-browser clients send no Origin; a browser's must be ours or configured."""
        allowed = self.settings.allowed_origins
        return hostcheck.origin_allowed(
            headers.get("Origin"), headers.get("Host"), allowed, self._own_schemes
        )

    def host_allowed(self, headers: Mapping[str, str]) -> bool:
        """The Host header names us (DNS rebinding defence, see :mod:`tether.server.hostcheck`)."""
        return self.host_policy.allows(headers.get("Host"))

    def client_address(self, peer: str, forwarded_for: Sequence[str] = ()) -> str:
        """The peer, or the forwarded client address when the peer is a trusted proxy.

        ``forwarded_for`` holds every ``X-Forwarded-For`` line in order: a proxy may append
        its own line after one the client sent, and the walk from the right must see it.
        """
        forwarded = ", ".join(forwarded_for) or None
        return hostcheck.forwarded_client(peer, forwarded, self._trusted_proxies)

    # ------------------------------------------------------------------ terminal connections
    @contextlib.contextmanager
    def serving(self, front: Front) -> Iterator[None]:
        """While the block runs, ``front`` gets heartbeats and is told 1001 on drain."""
        self.connections.add(front)
        try:
            yield
        finally:
            self.connections.discard(front)

    async def place(self, address: str, upgrade: Upgrade, *, relayed: bool) -> Placement:
        """Where a ``/ws/terminal`` attempt is served: here, unless this node is one of a
        cluster and another node owns the key (:mod:`tether.server.cluster.node`)."""
        if self.cluster is None:
            return LOCAL
        credential = auth.credential_from(upgrade.headers, upgrade.cookies, upgrade.query)
        identity = self.authenticator.authenticate(credential)
        limit = self.owner_limit
        return await self.cluster.place_query(
            upgrade.query, identity, relayed=relayed, owner_limit=limit
        )

    @property
    def node_name(self) -> str:
        """This node's id: the cluster's, else ``--node-id`` or the host name."""
        if self.cluster is not None and self.cluster.node_id:
            return self.cluster.node_id
        return self.settings.node_id or socket.gethostname()

    async def join_cluster(self, url: str, port: int) -> None:
        """Once listening (``url``, ``port``: where, as bound): register with the cluster."""
        if self.cluster is not None:
            await self.cluster.join(url, port)

    def is_relay(self, headers: Mapping[str, str], peer: str) -> bool:
        """A request a peer node forwarded (its client's address is then believed)."""
        return self.cluster is not None and self.cluster.is_relay(headers, peer)

    def admit(
        self,
        front: Front,
        upgrade: Upgrade,
        *,
        claimed: str | None = None,
        host_identity: HostIdentity | None = None,
    ) -> Connection:
        """Create or attach a session for a ``/ws/terminal`` attempt, before the upgrade.

        Raises :class:`Refusal` (already counted and logged): the front closes with its code.
        ``claimed``: the key :meth:`place` claimed for it, released unless a session was made.
        ``host_identity``: who an embedding application says is connecting (its identity hook);
        None: the request's credential decides, under tether's own auth settings.
        """
        try:
            return self._admit(front, upgrade, host_identity)
        finally:
            if self.cluster is not None and claimed is not None:
                self.cluster.settle(claimed)

    def _admit(self, front: Front, upgrade: Upgrade, host: HostIdentity | None) -> Connection:
        retry_after = self.login_retry_after(front.address)
        if retry_after is not None:
            refusal = Refusal(CloseCode.STORM, f"retry-after={retry_after}")
            self.on_refused(refusal, front.address)
            raise refusal
        try:
            check_subprotocols(list(upgrade.subprotocols))
        except Refusal as refusal:
            subprotocol_error: Refusal | None = refusal
        else:
            subprotocol_error = None
        request = ConnectRequest(
            query=upgrade.query,
            address=front.address,
            identity=host.identity
            if host is not None
            else self.identify(upgrade.headers, upgrade.cookies, upgrade.query, front.address),
            origin_ok=self.origin_allowed(upgrade.headers),
            subprotocol_error=subprotocol_error,
            owner_limit=self.owner_limit,
        )
        try:
            return self.manager.connect(request, front)
        except Refusal as refusal:
            self.on_refused(refusal, front.address)
            if refusal.code == CloseCode.INTERNAL_ERROR:
                # The log has the cause; the client must not learn the server's paths.
                raise Refusal(refusal.code, "cannot start shell") from None
            raise

    def output_sent(self, session: Session, client: Client, count: int) -> None:
        """A front sent ``count`` more bytes of the stream to ``client``: its position moves,
        and the session may read its PTY again if flow control had paused it."""
        client.position += count
        self.metrics.output_bytes.inc(count)
        session.client_progressed()

    def take_text(self, front: Front, session: Session, client: Client, text: str) -> ClientMessage:
        """A client's text frame, answered the same on every front: a resize is applied and
        logged, a ping answered, a malformed message answered with its error. The parsed message
        is returned: an ``Input`` is the front's to write (in order with binary input)."""
        message = parse_client_message(text)
        if isinstance(message, Resize):
            session.resize(message.cols, message.rows, origin=client)
            self.log(
                "resize",
                key=session.info.key,
                cols=message.cols,
                rows=message.rows,
                addr=front.address,
                client=client.client_id,
            )
        elif isinstance(message, Ping):
            front.send_message({"type": "pong", "t": message.t})
        elif isinstance(message, MessageError):
            front.send_message(message.to_wire())
        return message

    def on_refused(self, refusal: Refusal, address: str) -> None:
        self.metrics.connection_attempts.inc()
        self.metrics.refused_by_code(close_code_label(refusal.code)).inc()
        level = logging.DEBUG if refusal.code == CloseCode.STORM else logging.INFO
        logs.log_at(level, "refuse", addr=address, code=refusal.code, reason=refusal.reason)

    def on_admitted(
        self, front: Front, upgrade: Upgrade, connection: Connection, elapsed: float
    ) -> None:
        """The upgrade was answered: count and log the connection (``elapsed``: since the
        attempt arrived, measured by the front)."""
        self.metrics.connection_attempts.inc()
        hello, info = connection.attach.hello, connection.session.info
        kind = "create" if connection.created else "attach"
        self.metrics.opened_by_kind(kind).inc()
        now = self.clock.monotonic()
        activity = self.metrics.activity
        activity.connection_started(id(connection.attach.client), now)
        if connection.created:
            self.metrics.connect_latency.observe(elapsed)
        else:
            self.metrics.reconnects.inc()
            self.metrics.reattach_latency.observe(elapsed)
            activity.record_reattach(info.key, now)
            if "offset" in upgrade.query:
                self.metrics.resumes_by_gap("true" if hello["gap"] else "false").inc()
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

    def on_detached(self, front: Front, connection: Connection, peer_code: int | None) -> None:
        """The connection is closed and its client detached (``peer_code``: the close code the
        peer sent, None when it vanished)."""
        code = self._close_code(connection, peer_code)
        self.metrics.closed_by_code(close_code_label(code)).inc()
        lasted = self.metrics.activity.connection_ended(
            id(connection.attach.client), self.clock.monotonic()
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

    def _close_code(self, connection: Connection, peer_code: int | None) -> int | None:
        """The code that ended a connection: the server's when it closed first, else the peer's.

        (The code the peer answered a close with need not echo ours.)
        """
        final = connection.attach.client.final
        if final is not None:  # the session ended: exit, kill, reap, shutdown
            return final[1]
        if not self.manager.accepting:
            return int(CloseCode.GOING_AWAY)  # drain tells every client 1001
        return peer_code

    # ------------------------------------------------------------------ events
    def log(self, event: str, **fields: Any) -> None:
        logs.log_event(event, **fields)

    def _on_event(self, event: str, **fields: Any) -> None:
        if event == "storm":
            self._on_storm(fields)
            return
        if event in {"exit", "reap", "kill", "fence"} and self.cluster is not None:
            self.cluster.session_ended(str(fields.get("key")))
        if event in {"exit", "reap", "kill"}:
            self.metrics.sessions_ended.labels(event).inc()
            self.metrics.activity.forget_session(str(fields.get("key")))
            session = self.manager.sessions.get(str(fields.get("key")))
            if session is not None:
                fields["age_s"] = round(self.clock.time() - session.info.created_at, 3)
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
        now = self.clock.monotonic()
        self.metrics.activity.breaker_opened(scope, name, now, now)
        logs.log_at(logging.WARNING, "storm", **fields)
        self._log_breaker(scope, name, "open", retry_after=fields.get("retry_after"))

    def _on_project_start(self, project: str, *, succeeded: bool) -> None:
        activity = self.metrics.activity
        if succeeded:
            if activity.breaker_closed("project", project):
                self._log_breaker("project", project, "closed")
            return
        now = self.clock.monotonic()
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

    # ------------------------------------------------------------------ facts
    def snapshot(self) -> dict[str, Any]:
        """Live facts for the metrics collector, read at scrape time."""
        sessions = list(self.manager.sessions.values())
        states = {state.value: 0 for state in SessionState}
        for session in sessions:
            states[session.state.value] += 1
        now = self.clock.monotonic()
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
            "max_sessions": self.manager.max_sessions,
            "ready": self.is_ready(),
        }

    def is_ready(self) -> bool:
        """Accepting new sessions, and (in a cluster) holding a current lease."""
        return self.manager.accepting and (self.cluster is None or self.cluster.is_ready())

    def process_facts(self) -> dict[str, Any]:
        """This server process: pid, RSS, CPU (seconds, and percent since the last call)."""
        times = os.times()
        cpu = times.user + times.system
        uptime = self.clock.time() - self.started_at
        percent = self.metrics.activity.cpu_percent(self.clock.monotonic(), cpu)
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
            "generation": self.generation,
        }

    # ------------------------------------------------------------------ timers
    async def heartbeat(self) -> None:
        """One timer for every connection (not a task each): ping, or drop the silent ones."""
        while True:
            await self.clock.sleep(self.settings.heartbeat)
            for front in list(self.connections):
                front.heartbeat_tick()

    async def reaper(self) -> None:
        """End sessions detached for longer than the idle timeout, a few times per timeout."""
        interval = max(0.05, min(30.0, self.settings.idle_timeout / 4))
        while True:
            await self.clock.sleep(interval)
            self.manager.reap_idle()

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
        for front in list(self.connections):
            front.close(CloseCode.GOING_AWAY, "server draining")
        return True

    async def wait_drained(self) -> None:
        """Return once a :meth:`drain` has ended the shells (at once if none was started)."""
        if self._drain_task is not None:
            await asyncio.wait({self._drain_task})  # ended, failed or cut short: all the same

    async def _end_after_grace(self) -> None:
        # The grace is for shells that run: with none, stop at once (Ctrl-C on an idle server).
        if self.manager.sessions:
            await self.clock.sleep(self.settings.drain_grace)
        await self.manager.shutdown()

    async def shutdown(self) -> None:
        """End every session now (a drain in progress is cut short) and wait for the reaping."""
        if self._drain_task is not None and not self._drain_task.done():
            self._drain_task.cancel()
        self.begin_drain()
        await self.manager.shutdown()
        if self.recorder is not None:  # what the shells printed last, on disk
            await asyncio.to_thread(self.recorder.close)
        if self.cluster is not None:
            await self.cluster.stop()
