"""SessionManager: create-or-attach by composite key, the order of checks, limits, tombstones,
idle reaping and shutdown. Framework-free: fronts (aiohttp today, ASGI later) call it.

``connect`` runs every check of docs/protocol.md, section 2 in order and creates or attaches in one
synchronous step — no ``await`` between the lookup and the attach — so concurrent connects for one
new key create exactly one shell, and a reconnect storm is counted connect by connect.

The session store is therefore not consulted on that path: the manager's live sessions and its
own tombstone table (monotonic times) are the source of truth for lookups, and the store (async,
possibly remote) is a mirror of them for other processes, kept by a write-behind
:class:`~tether.server.store.writer.StoreWriter`. The manager marks a key when it creates,
attaches, ends or re-creates its session; changes it does not see (input counts, size, state and
activity, made by the front through the session) are found by a sweep every
:data:`RECORD_INTERVAL` seconds that compares each session with what was last written. Either
way the writer coalesces per key: one write of the latest state per burst. Mirrored tombstones
carry wall-clock times; :meth:`SessionManager.flush_store` waits until the store is current.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tether.errors import ConfigError, OutOfResources, Refusal, SpawnError
from tether.protocol.codes import CloseCode
from tether.protocol.ids import composite_key, new_session_id, resolve_session_id
from tether.protocol.messages import ConnectParams, creation_size, parse_connect_params
from tether.protocol.storm import StartFailureBreaker, StormDetector
from tether.server import hostcheck, pty
from tether.server.config import Settings
from tether.server.identity import Identity
from tether.server.session import (
    AttachResult,
    ClientSink,
    EndReason,
    Session,
    SessionInfo,
    SessionState,
)
from tether.server.shellenv import shell_environment, shell_for, switched_uid
from tether.server.store import (
    MemoryStore,
    SessionRecord,
    SessionStore,
    StoreWriter,
    Tombstone,
    TombstoneTable,
)

EventListener = Callable[..., None]
RECORD_INTERVAL = 1.0  # seconds between sweeps for session changes the manager does not see


@functools.lru_cache(maxsize=4096)
def is_loopback(address: str) -> bool:
    """Exactly a loopback address (``::1abc`` is not); cached: it is asked on every connect."""
    return hostcheck.is_loopback_host(address)


@dataclass(frozen=True)
class ConnectRequest:
    """One ``/ws/terminal`` attempt as the front saw it."""

    query: Mapping[str, str]
    address: str
    identity: Identity | None  # None: the credential was missing or invalid (4001)
    origin_ok: bool = True
    subprotocol_error: Refusal | None = None
    owner_limit: int | None = None  # sessions per owner, where auth is on


@dataclass(frozen=True, slots=True)
class Connection:
    """An admitted connection: the session, the client, and the hello to send first."""

    session: Session
    attach: AttachResult
    created: bool


class SessionManager:
    """Owns every live session of this process."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: SessionStore | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        listener: EventListener | None = None,
    ) -> None:
        self.settings = settings
        # The server sets what its limits allow (server/capacity.py); a bare manager trusts
        # the setting.
        self.max_sessions: int = settings.max_sessions or 2000
        self.store: SessionStore = store if store is not None else MemoryStore()
        self.sessions: dict[str, Session] = {}
        self.tombstones = TombstoneTable()  # this process's, in monotonic time; mirrored
        self.writer = StoreWriter(self.store, self._snapshot, on_error=self._on_store_error)
        self.record_interval = RECORD_INTERVAL
        self._written: dict[str, tuple[Any, ...]] = {}  # what the store was last given, by key
        self._sweep_handle: asyncio.TimerHandle | None = None
        self.key_storms = StormDetector(settings.storm_threshold, settings.storm_window)
        self.address_storms = StormDetector(settings.address_storm_threshold, settings.storm_window)
        self.start_failures = StartFailureBreaker()
        self.accepting = True
        self._ending: set[Session] = set()
        self._environments: dict[
            tuple[str, str | None, str], tuple[tuple[str, ...], Mapping[str, str]]
        ] = {}
        self._trim_handle: asyncio.TimerHandle | None = None
        self._clock = clock
        self._wall = wall_clock
        self._listener = listener or (lambda event, **fields: None)
        self._connection_ids = itertools.count(1)
        self.counters: dict[str, int] = {"created": 0, "reaped": 0, "killed": 0, "exited": 0}
        # Told of every session created and ended (crash survival: server/survival.py).
        self.on_created: list[Callable[[Session], None]] = []
        self.on_ended: list[Callable[[Session], None]] = []
        # Told of every session taken over from a previous process, and asked to flush before
        # an upgrade's exec (session recording: server/recording.py).
        self.on_adopted: list[Callable[[Session], None]] = []
        self.on_flush: list[Callable[[], None]] = []

    @property
    def clock(self) -> Callable[[], float]:
        """The monotonic clock this manager and its sessions read."""
        return self._clock

    # ------------------------------------------------------------------ connect
    def connect(self, request: ConnectRequest, sink: ClientSink) -> Connection:
        """Admit or refuse (raise :class:`Refusal`) one connection attempt."""
        now = self._clock()
        address_checked = self._check_address(request.address, now)
        if request.subprotocol_error is not None:
            raise request.subprotocol_error
        params = parse_connect_params(request.query)
        if not self.accepting:
            raise Refusal(CloseCode.GOING_AWAY, "server draining")
        if not request.origin_ok:
            raise Refusal(CloseCode.FORBIDDEN, "origin not allowed")
        identity = request.identity
        if identity is None:
            raise Refusal(CloseCode.UNAUTHORIZED, "missing or invalid credential")
        ref = resolve_session_id(params.session, owner=identity.owner, project=params.project)
        project = self.settings.project(params.project)
        if project is None or not identity.may_use(params.project):
            raise Refusal(CloseCode.FORBIDDEN, f"project not allowed: {params.project}")
        key = composite_key(ref.session_id, params.project) if ref.session_id else None
        if key is not None:
            self._check_key_storm(key, now)
        connection = self._lookup_or_create(key, ref.session_id, params, identity, request, sink)
        if address_checked:
            self.address_storms.record(request.address, now)
        if key is not None:
            self.key_storms.record(key, now)
        heartbeat = self.settings.heartbeat
        connection.attach.hello["heartbeat"] = (
            int(heartbeat) if heartbeat.is_integer() else heartbeat
        )
        if ref.legacy is not None:
            connection.attach.hello["legacy"] = ref.legacy
        return connection

    def _check_address(self, address: str, now: float) -> bool:
        if self.settings.storm_exempt_loopback and is_loopback(address):
            return False
        self._check_storm(self.address_storms, "address", address, now, addr=address)
        return True

    def _check_key_storm(self, key: str, now: float) -> None:
        self._check_storm(self.key_storms, "key", key, now, key=key)

    def _check_storm(
        self, detector: StormDetector, scope: str, name: str, now: float, **fields: Any
    ) -> None:
        decision = detector.check(name, now)
        if not decision.allowed:
            self._emit(
                "storm",
                scope=scope,
                retry_after=decision.retry_after,
                tripped=decision.tripped,
                **fields,
            )
            raise Refusal(CloseCode.STORM, f"retry-after={decision.retry_after}")

    def _lookup_or_create(
        self,
        key: str | None,
        session_id: str | None,
        params: ConnectParams,
        identity: Identity,
        request: ConnectRequest,
        sink: ClientSink,
    ) -> Connection:
        session = self.sessions.get(key) if key else None
        if session is not None and session.state is not SessionState.ENDED:
            if session.info.owner != identity.owner:
                raise Refusal(CloseCode.FORBIDDEN, "session belongs to another owner")
            input_key = params.client or f"conn-{next(self._connection_ids)}"
            result = session.attach(
                sink, params.client, input_key, params.offset, False, params.size
            )
            self.writer.put_record(session.info.key)
            return Connection(session, result, created=False)
        tombstone = self.tombstones.get(key, self._clock()) if key else None
        if tombstone is not None and tombstone.owner != identity.owner:
            raise Refusal(CloseCode.FORBIDDEN, "session belongs to another owner")
        if not params.create:
            if tombstone is not None:
                raise Refusal(tombstone.code, tombstone.reason)
            raise Refusal(CloseCode.NOT_FOUND, "session not found")
        self._check_limits(identity, request)
        return self._create(session_id, params, identity, sink)

    def _check_limits(self, identity: Identity, request: ConnectRequest) -> None:
        if request.owner_limit is not None:
            owned = sum(1 for s in self.sessions.values() if s.info.owner == identity.owner)
            if owned >= request.owner_limit:
                raise Refusal(CloseCode.OWNER_LIMIT, "session limit of this owner reached")
        if len(self.sessions) >= self.max_sessions:
            raise Refusal(CloseCode.TRY_AGAIN_LATER, "server at capacity")

    def _create(
        self, session_id: str | None, params: ConnectParams, identity: Identity, sink: ClientSink
    ) -> Connection:
        now = self._clock()
        retry_after = self.start_failures.check(params.project, now)
        if retry_after is not None:
            raise Refusal(
                CloseCode.TRY_AGAIN_LATER,
                f"shell start failing for project; retry-after={retry_after}",
            )
        session_id = session_id or new_session_id(int(self._wall() * 1000))
        key = composite_key(session_id, params.project)
        project = self.settings.project(params.project)
        assert project is not None
        cols, rows = creation_size(params)
        try:
            argv, env = self._shell_command(identity, params.project)
            directory = str(project.directory)
            owner_uid = switched_uid(argv)
            process = pty.spawn(argv, directory, env, cols, rows, terminal_owner=owner_uid)
        except OutOfResources as exc:  # the machine is full: a capacity refusal, not a failure
            self._emit("capacity", key=key, project=params.project, reason=str(exc))
            raise Refusal(CloseCode.TRY_AGAIN_LATER, f"server at capacity: {exc}") from exc
        except SpawnError as exc:
            self.start_failures.record_failure(params.project, now)
            self._emit("error", key=key, project=params.project, reason=str(exc))
            raise Refusal(CloseCode.INTERNAL_ERROR, f"cannot start shell: {exc}") from exc
        self.start_failures.record_success(params.project)
        self.tombstones.remove(key)
        self.writer.remove_tombstone(key)
        info = SessionInfo(
            key=key,
            session_id=session_id,
            project=params.project,
            owner=identity.owner,
            created_at=self._wall(),
            cols=cols,
            rows=rows,
            pid=process.pid,
            last_activity=now,
        )
        session = Session(info, process, self.settings.buffer_size, self._clock, self._on_exit)
        self.sessions[key] = session
        for hook in self.on_created:
            hook(session)
        self.writer.put_record(key)
        self._watch_records()
        self.counters["created"] += 1
        client_id = params.client
        input_key = client_id or f"conn-{next(self._connection_ids)}"
        result = session.attach(sink, client_id, input_key, None, True, None)
        self._emit(
            "create",
            key=key,
            session=session_id,
            project=params.project,
            owner=identity.owner,
            pid=process.pid,
        )
        return Connection(session, result, created=True)

    def adopt(self, session: Session) -> None:
        """Take over a live session from a previous server process (an upgrade or a crash:
        :mod:`tether.server.survival`); it is detached until its clients come back."""
        key = session.info.key
        session.set_exit_handler(self._on_exit)
        self.sessions[key] = session
        for hook in self.on_adopted:
            hook(session)
        self.writer.put_record(key)
        self._watch_records()
        self._emit("adopt", key=key, session=session.info.session_id, pid=session.info.pid)

    def _shell_command(
        self, identity: Identity, project: str
    ) -> tuple[tuple[str, ...], Mapping[str, str]]:
        # The shell runs as the owner's account where they have one (docs/security.md). Built
        # once per owner, account and project (it reads the account database); spawn copies it.
        cache_key = (identity.owner, identity.account, project)
        found = self._environments.get(cache_key)
        if found is None:
            try:
                argv = shell_for(self.settings.shell, identity.account)
            except ConfigError as exc:  # the account went away since start
                raise SpawnError(f"cannot run as the owner's account: {exc}") from None
            found = (argv, shell_environment(argv, identity.owner, project))
            if len(self._environments) < 1024:
                self._environments[cache_key] = found
        return found

    # ------------------------------------------------------------------ store mirror
    def _snapshot(self, key: str) -> SessionRecord | None:
        """The writer asks for a key's record when it writes it (see the module docstring)."""
        session = self.sessions.get(key)
        if session is None or session.state is SessionState.ENDED:
            return None
        self._written[key] = _fingerprint(session)
        return SessionRecord.from_session(session, now=self._clock(), wall_now=self._wall())

    def _watch_records(self) -> None:
        if self._sweep_handle is None and self.sessions and self.accepting:
            loop = asyncio.get_running_loop()
            self._sweep_handle = loop.call_later(self.record_interval, self._on_sweep_timer)

    def _on_sweep_timer(self) -> None:
        self._sweep_handle = None
        self._mark_changed()
        self._watch_records()

    def _mark_changed(self) -> None:
        for key, session in self.sessions.items():
            if self._written.get(key) != _fingerprint(session):
                self.writer.put_record(key)

    async def flush_store(self) -> None:
        """Mark every session changed since its last write and wait for the writes (one attempt
        each): afterwards the store holds what this manager knows, unless it failed."""
        self._mark_changed()
        for flush in self.on_flush:
            flush()
        await self.writer.flush()

    def _on_store_error(self, key: str | None, error: Exception) -> None:
        self._emit("store_error", key=key, reason=f"{type(error).__name__}: {error}")

    # ------------------------------------------------------------------ ending
    def _on_exit(self, session: Session, code: int | None, signum: int | None) -> None:
        self.counters["exited"] += 1
        self._emit(
            "exit",
            key=session.info.key,
            session=session.info.session_id,
            project=session.info.project,
            owner=session.info.owner,
            pid=session.info.pid,
            code=code,
            signal=signum,
        )
        self._end(session, EndReason.EXITED, (code, signum))

    def _end(
        self, session: Session, reason: EndReason, status: tuple[Any, Any] = (None, None)
    ) -> None:
        key = session.info.key
        for hook in self.on_ended:
            hook(session)
        mirrored = reason is not EndReason.FENCED  # a fenced key's store entries are not ours
        if self.sessions.get(key) is session:
            del self.sessions[key]
            self._written.pop(key, None)
            if mirrored:
                self.writer.remove_record(key)
        if reason is not EndReason.SHUTDOWN:
            owner, ttl = session.info.owner, self.settings.tombstone_ttl
            now, wall = self._clock(), self._wall()
            self.tombstones.put(Tombstone(key, owner, reason.code, reason.reason, now, now + ttl))
            if mirrored:
                self.writer.put_tombstone(
                    Tombstone(key, owner, reason.code, reason.reason, wall, wall + ttl)
                )
        session.end(reason, self.settings.kill_grace, status)
        # Remember it until its processes are gone, so that shutdown can wait for them.
        self._ending.add(session)
        if session.ending is not None:
            session.ending.add_done_callback(lambda _: self._forget_ended(session))

    def _forget_ended(self, session: Session) -> None:
        self._ending.discard(session)
        self.release_memory_soon()

    def release_memory_soon(self) -> None:
        """Ended sessions and closed connections free their buffers, but glibc keeps the pages:
        hand them back, at most once a second (a storm of endings costs one trim)."""
        if self._trim_handle is None:
            loop = asyncio.get_running_loop()
            self._trim_handle = loop.call_later(1.0, self._release_memory)

    def _release_memory(self) -> None:
        self._trim_handle = None
        pty.release_free_memory()

    def kill(self, key: str, reason: EndReason = EndReason.KILLED) -> bool:
        """End a session on an operator's (or, with ``EndReason.ENDED``, its owner's) word: its
        clients get 4013."""
        session = self.sessions.get(key)
        if session is None:
            return False
        self.counters["killed"] += 1
        self._emit(
            "kill",
            key=key,
            session=session.info.session_id,
            project=session.info.project,
            owner=session.info.owner,
            pid=session.info.pid,
            reason=reason.reason,
        )
        self._end(session, reason)
        return True

    def rename(self, key: str, name: str) -> bool:
        """Give a session a display name (validated by the caller); False: no such session."""
        session = self.sessions.get(key)
        if session is None:
            return False
        session.rename(name)
        self.writer.put_record(key)
        self._emit("rename", key=key, session=session.info.session_id, name=name)
        return True

    def fence(self, key: str) -> bool:
        """End a session whose key another cluster node took while this one was lost: its
        clients get 4004 (``docs/scaling.md``); its tombstone stays local (the key is not ours)."""
        session = self.sessions.get(key)
        if session is None:
            return False
        self._emit("fence", key=key, session=session.info.session_id, pid=session.info.pid)
        self._end(session, EndReason.FENCED)
        return True

    def clear(self, project: str | None = None, owner: str | None = None) -> list[str]:
        """Kill every session (of a project / owner); returns their keys."""
        keys = [
            k
            for k, s in self.sessions.items()
            if (project is None or s.info.project == project)
            and (owner is None or s.info.owner == owner)
        ]
        for key in keys:
            self.kill(key)
        self._emit("clear", project=project, count=len(keys))
        return keys

    def reap_idle(self, now: float | None = None) -> list[str]:
        """End sessions detached for longer than the idle timeout; prune old state."""
        now = self._clock() if now is None else now
        idle = [
            s
            for s in self.sessions.values()
            if s.state is SessionState.DETACHED
            and now - s.detached_since >= self.settings.idle_timeout
        ]
        for session in idle:
            self.counters["reaped"] += 1
            self._emit(
                "reap",
                key=session.info.key,
                session=session.info.session_id,
                project=session.info.project,
                owner=session.info.owner,
                pid=session.info.pid,
                duration_ms=int((now - session.detached_since) * 1000),
            )
            self._end(session, EndReason.REAPED)
        self.tombstones.prune(now)
        self.writer.prune(self._wall())
        self.key_storms.prune(now)
        self.address_storms.prune(now)
        return [s.info.key for s in idle]

    async def shutdown(self) -> None:
        """End every session (clients get 1001) and wait until every process is reaped."""
        self.accepting = False
        for session in list(self.sessions.values()):
            self._end(session, EndReason.SHUTDOWN)
        if self._sweep_handle is not None:
            self._sweep_handle.cancel()
            self._sweep_handle = None
        await self.writer.close()
        ending = list(self._ending)
        if ending:
            await asyncio.gather(*(s.terminated.wait() for s in ending))
        if self._trim_handle is not None:
            self._trim_handle.cancel()
            self._trim_handle = None

    def _emit(self, event: str, **fields: Any) -> None:
        self._listener(event, **fields)


def _fingerprint(session: Session) -> tuple[Any, ...]:
    """What changes when a session's record would (cheap to compare on every sweep)."""
    info = session.info
    counts = info.input_counts
    return (
        session.state,
        info.cols,
        info.rows,
        info.last_activity,
        session.input_bytes,
        len(counts),
        info.name,
    )
