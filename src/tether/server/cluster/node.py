"""One node of a cluster at run time: its registration, the renewal task, claims, placement.

:class:`ClusterNode` is what :class:`~tether.server.core.Server` holds when ``--redis-url`` is
set. Before a connection is admitted the front asks :meth:`ClusterNode.place` where it belongs:

- a key this node serves → ``LOCAL`` (no Redis call while the lease is current: the owner knows
  its sessions; with an expired lease it asks Redis once, and a key another node took meanwhile
  is *fenced*: its shell ends here and the connection is placed again);
- a key another node holds and that node is up → ``FORWARD`` to its advertised URL;
- a key held by a lost node → 4004 ``node lost`` (``create=0``), or taken over (``create=1``);
- a new key → claimed here first (one ``CLAIM`` script: one shell per key cluster-wide), then
  the owner's session count is checked (``SCARD``, the per-owner limit across nodes);
- Redis unreachable → 1013 with a reason for anything that needs the registry.

After each registration (and ``SUCCEED``) the node reports its lease to ``tether serve``'s
supervisor, which renews it while this process is down (crashed, restarting). The node renews
its lease every ``renew_every``; when the lease is lost it registers again and
carries over the claims nobody took (:meth:`RedisRegistry.renew_claim`); the sessions whose keys
another node took are ended here with 4004 (fenced: ``docs/scaling.md``). A session that ends
releases its claim; shutdown releases them all and deregisters.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace

from tether.errors import ConfigError, RegistryUnavailable
from tether.protocol.codes import CloseCode
from tether.server import logs
from tether.server.clock import Clock
from tether.server.cluster.fenced import FencedStore
from tether.server.cluster.lease import LeaseSettings, NodeLease, NodeState
from tether.server.cluster.placement import (
    CLIENT_HEADER,
    LOCAL,
    RELAY_HEADER,
    Placement,
    Route,
    Wanted,
    refuse,
    wanted_from,
)
from tether.server.cluster.registry import Claim, ClaimOutcome, Holder, RedisRegistry, Renewal
from tether.server.cluster.sweeper import NODE_LOST, Sweeper
from tether.server.config import Settings
from tether.server.identity import Identity
from tether.server.store.redis import RedisStore, redis_client
from tether.server.supervisor import ReportedLease, report_lease

# Redis connections per node, opened at start: a fixed number of sockets (a lookup is ~0.2 ms,
# so 8 carry tens of thousands of connects a second).
POOL_SIZE = 8
UNAVAILABLE = "cluster registry unavailable"


@dataclass
class _Counters:
    forwarded: int = 0
    claimed: int = 0
    fenced: int = 0
    refused_unavailable: int = 0
    lookups: int = 0


class ClusterNode:
    """This process's membership of the cluster (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        clock: Clock,
        *,
        secret: str | None,
        registry: RedisRegistry | None = None,
    ) -> None:
        assert settings.redis_url is not None
        self.settings = settings
        self.clock = clock
        self.secret = secret
        self.lease_settings = LeaseSettings(
            settings.cluster_lease, settings.cluster_renew_every, settings.cluster_timeout
        )
        self.client = redis_client(
            settings.redis_url, timeout=settings.cluster_timeout, pool_size=POOL_SIZE
        )
        self.store = RedisStore(self.client, prefix=settings.cluster_prefix)
        self.fenced_store = FencedStore(self.store, self._fence_for)  # the manager's store
        self.registry = registry or RedisRegistry(
            self.client,
            "",
            settings=self.lease_settings,
            clock=clock,
            prefix=settings.cluster_prefix,
        )
        self.sweeper = Sweeper(
            self.registry,
            self.store,
            clock,
            sweep_after=settings.cluster_sweep_after,
            tombstone_ttl=settings.tombstone_ttl,
        )
        self.lease: NodeLease | None = None
        self.claims: dict[str, Claim] = {}
        self._owners: dict[str, str] = {}  # the user each claimed key belongs to
        self._releasing: dict[str, Claim] = {}  # ended here, claim not yet released
        self._claiming: dict[str, asyncio.Future[None]] = {}
        self._to_readopt: set[str] = (
            set()
        )  # claims to carry over to a new registration  # claims being made, by key
        self.counters = _Counters()
        self._fresh: set[str] = set()  # claimed by place(), not yet settled by an admit
        self._sessions: Callable[[], Mapping[str, object]] = dict
        self._fence: Callable[[str], object] = lambda key: None
        self._flush: Callable[[], Awaitable[None]] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._releases: set[asyncio.Task[None]] = set()
        self._unavailable_since: float | None = None  # Redis unreachable since (monotonic)

    @classmethod
    def from_settings(cls, settings: Settings, clock: Clock) -> ClusterNode:
        """A node for ``settings`` (ConfigError: the secret's variable is not set)."""
        secret = None
        if settings.cluster_secret_env:
            secret = os.environ.get(settings.cluster_secret_env, "")
            if len(secret) < 16:
                raise ConfigError(
                    "cluster-secret-env",
                    f"${settings.cluster_secret_env} must hold a secret of 16+ characters",
                )
        return cls(settings, clock, secret=secret)

    @property
    def node_id(self) -> str:
        return self.registry.node

    def bind(
        self,
        sessions: Callable[[], Mapping[str, object]],
        fence: Callable[[str], object],
        flush: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Where the node finds this process's live sessions, how it ends a fenced one, and how
        it waits for the store's pending writes (a tombstone is written before its claim goes,
        so that no node finds the key free and without a tombstone)."""
        self._sessions, self._fence = sessions, fence
        self._flush = flush

    # ------------------------------------------------------------------ membership
    async def join(self, url: str, port: int) -> None:
        """Register (waiting out a previous registration of this node id) and keep renewing."""
        settings = self.settings
        self.registry.url = settings.advertise_url or url
        self.registry.node = settings.node_id or f"{socket.gethostname()}:{port}"
        if self._sessions():
            await self._join_as_successor()
        else:
            await self._register()
        await self._claim_adopted()
        await asyncio.gather(
            *(self.client.ping() for _ in range(POOL_SIZE)), return_exceptions=True
        )
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._maintain()), loop.create_task(self.sweeper.run())]
        logs.log_event("cluster_join", node=self.node_id, url=self.registry.url)

    async def _join_as_successor(self) -> None:
        """This process adopted sessions (restart survival): take the node id over at once,
        with their claims, so that the node is never seen lost (``SUCCEED``)."""
        keys = sorted(self._sessions())
        try:
            self.lease, kept = await self.registry.succeed(keys)
        except RegistryUnavailable as error:
            self._note_unavailable(error)
            await self._register()
            return
        self._report_lease()
        self.claims.update(kept)
        for key, session in self._sessions().items():
            if key in kept:
                self._owners[key] = _owner_of(session)
        logs.log_event("cluster_succeed", node=self.node_id, kept=len(kept), adopted=len(keys))

    async def _claim_adopted(self) -> None:
        """Claim the sessions this process already serves when it joins (adopted from a
        previous process of this node: restart survival) under its new registration."""
        assert self.lease is not None
        for key, session in list(self._sessions().items()):
            if key in self.claims:
                continue
            owner = _owner_of(session)
            with contextlib.suppress(RegistryUnavailable):
                result = await self.registry.claim(key, self.lease, owner=owner, takeover=True)
                if result.claim is not None:
                    self.claims[key], self._owners[key] = result.claim, owner
                elif result.holder is not None and result.holder.state is NodeState.UP:
                    self._fenced(key)  # another live node took it while none of us held it

    async def _register(self) -> None:
        while True:
            try:
                found = await self.registry.register()
            except RegistryUnavailable as error:
                self._note_unavailable(error)
                await self.clock.sleep(self.lease_settings.renew_every)
                continue
            if isinstance(found, NodeLease):
                self.lease = found
                self._note_available()
                self._report_lease()
                return
            await self.clock.sleep(min(max(found, 0.01), self.lease_settings.renew_every))

    async def _maintain(self) -> None:
        """Renew the lease every ``renew_every``; when it is lost, register again."""
        assert self.lease is not None
        delay = self.lease.renewal_delay(self.clock.monotonic())
        while True:
            await self.clock.sleep(delay)
            lease, every = self.lease, self.lease_settings.renew_every
            try:
                found = await self.registry.renew(lease)
            except RegistryUnavailable as error:
                self._note_unavailable(error)
                now = self.clock.monotonic()
                if lease.is_expired(now):
                    await self._rejoin("unreachable")
                    delay = self.lease.renewal_delay(self.clock.monotonic())
                else:
                    delay = min(every, max(0.01, lease.remaining(now)))
                continue
            self._note_available()
            if found is not Renewal.RENEWED:
                await self._rejoin(found.value)
            elif self._to_readopt:  # Redis failed in the middle of the last re-adoption
                await self._readopt()
            delay = self.lease.renewal_delay(self.clock.monotonic())

    async def _rejoin(self, why: str) -> None:
        logs.log_at(logging.WARNING, "cluster_lease_lost", node=self.node_id, why=why)
        await self._register()
        self._to_readopt = set(self.claims)
        await self._readopt()

    async def _readopt(self) -> None:
        """After registering again: keep the claims nobody took, fence the others. What Redis
        failed to answer on the way is retried after the next renewal."""
        assert self.lease is not None
        for key in sorted(self._to_readopt):
            claim = self.claims.get(key)
            if claim is None:  # ended meanwhile
                self._to_readopt.discard(key)
                continue
            try:
                renewed = await self.registry.renew_claim(claim, self.lease)
                if renewed is None:  # gone (a Redis that lost its data) or taken: ask again
                    renewed = await self._reclaim(claim)
            except RegistryUnavailable:
                return
            self._to_readopt.discard(key)
            if renewed is not None:
                self.claims[key] = renewed
            else:
                self._fenced(key)

    async def _reclaim(self, claim: Claim) -> Claim | None:
        """Claim a key anew that nobody holds any more (never one another node took)."""
        assert self.lease is not None
        if await self.registry.lookup(claim.key) is not None:
            return None
        owner = self._owners.get(claim.key, "")
        result = await self.registry.claim(claim.key, self.lease, owner=owner)
        return result.claim

    def _report_lease(self) -> None:
        """Tell the supervisor (``tether serve``'s, not systemd) this registration: it renews
        it while this process is down, so that a crash is not a node loss."""
        assert self.lease is not None and self.settings.redis_url is not None
        report = ReportedLease(
            node=self.node_id,
            epoch=self.lease.epoch,
            redis_url=self.settings.redis_url,
            prefix=self.settings.cluster_prefix,
            lease_ms=self.lease_settings.lease_ms,
            renew_every=self.lease_settings.renew_every,
            timeout=self.lease_settings.timeout,
        )
        report_lease(report)

    def _fence_for(self, key: str) -> tuple[str, int] | None:
        """This node's claim of ``key`` as a fence for the store's writes (a claim being
        released still fences: its record's removal comes before the release)."""
        claim = self.claims.get(key) or self._releasing.get(key)
        return None if claim is None else (self.registry.claim_key(key), claim.token)

    def _note_unavailable(self, error: RegistryUnavailable) -> None:
        """Log once per outage (a node retries every renewal while Redis is down)."""
        if self._unavailable_since is None:
            self._unavailable_since = self.clock.monotonic()
            logs.log_at(logging.WARNING, "cluster_unavailable", reason=str(error)[:200])

    def _note_available(self) -> None:
        if self._unavailable_since is not None:
            down = self.clock.monotonic() - self._unavailable_since
            self._unavailable_since = None
            logs.log_event("cluster_available", node=self.node_id, down_s=round(down, 3))

    def _fenced(self, key: str) -> None:
        self.claims.pop(key, None)
        self._owners.pop(key, None)
        self.counters.fenced += 1
        logs.log_at(logging.WARNING, "cluster_fenced", key=key, node=self.node_id)
        self._fence(key)

    def is_ready(self) -> bool:
        """Registered, and the last renewal reached Redis recently (else ``/readyz`` says no)."""
        lease, now = self.lease, self.clock.monotonic()
        if lease is None or lease.is_expired(now):
            return False
        return now - lease.renewed_at <= 2 * self.lease_settings.renew_every + 0.5

    def _lease_current(self) -> NodeLease | None:
        lease = self.lease
        return lease if lease is not None and not lease.is_expired(self.clock.monotonic()) else None

    async def stop(self) -> None:
        """Release every claim and deregister (a clean shutdown)."""
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._releases:
            await asyncio.gather(*self._releases, return_exceptions=True)
        with contextlib.suppress(RegistryUnavailable):
            for claim in list(self.claims.values()):
                await self.registry.release(claim)
            if self.lease is not None:
                await self.registry.deregister(self.lease)
        self.claims.clear()
        await self.client.aclose(close_connection_pool=True)  # a pool made for it

    # ------------------------------------------------------------------ relays
    def is_relay(self, headers: Mapping[str, str], peer: str) -> bool:
        """A request forwarded by a peer node: it carries the cluster secret (without one, as
        with ``--auth none`` on loopback, only a loopback peer is believed)."""
        offered = headers.get(RELAY_HEADER)
        if offered is None:
            return False
        if self.secret is None:
            return peer.startswith(("127.", "::1", "::ffff:127."))
        return hmac.compare_digest(offered.encode(), self.secret.encode())

    def relay_headers(self, address: str) -> dict[str, str]:
        return {RELAY_HEADER: self.secret or "1", CLIENT_HEADER: address}

    # ------------------------------------------------------------------ placement
    async def place_query(
        self,
        query: Mapping[str, str],
        identity: Identity | None,
        *,
        relayed: bool,
        owner_limit: int | None,
    ) -> Placement:
        """:meth:`place` for a ``/ws/terminal`` query (LOCAL when the manager refuses it)."""
        found = wanted_from(query, identity, self.settings, int(self.clock.time() * 1000))
        if found is None:
            return LOCAL
        wanted, rewritten = found
        placed = await self.place(replace(wanted, relayed=relayed, owner_limit=owner_limit))
        if rewritten is not None and placed.route is Route.LOCAL:
            return replace(placed, query=rewritten)
        return placed

    async def place(self, wanted: Wanted) -> Placement:
        """Where a connection for ``wanted.key`` is served (see the module docstring)."""
        if wanted.key in self._sessions():
            placed = await self._place_owned(wanted)
            if placed is not None:
                return placed
        try:
            return await self._place_elsewhere(wanted)
        except RegistryUnavailable as error:
            self.counters.refused_unavailable += 1
            self._note_unavailable(error)
            return refuse(CloseCode.TRY_AGAIN_LATER, UNAVAILABLE)

    async def _place_owned(self, wanted: Wanted) -> Placement | None:
        """A key with a live session here: LOCAL, unless Redis says another node took it."""
        if self._lease_current() is not None or self._unavailable_since is not None:
            return LOCAL  # ours; or Redis is down, and what this node owns keeps working
        try:
            holder = await self.registry.lookup(wanted.key)
        except RegistryUnavailable:
            return LOCAL  # Redis down: what this node owns keeps working
        claim = self.claims.get(wanted.key)
        if holder is not None and claim is not None and holder.token == claim.token:
            return LOCAL
        if holder is not None and holder.node == self.node_id and claim is None:
            return LOCAL
        self._fenced(wanted.key)
        return None

    async def _place_elsewhere(self, wanted: Wanted) -> Placement:
        self.counters.lookups += 1
        holder = await self.registry.lookup(wanted.key)
        if holder is not None:
            return await self._place_held(wanted, holder)
        if not wanted.create:
            return await self._tombstone_refusal(wanted)
        return await self._claim(wanted, takeover=False)

    async def _place_held(self, wanted: Wanted, holder: Holder) -> Placement:
        lease = self.lease
        if holder.node == self.node_id and lease is not None and holder.epoch == lease.epoch:
            claiming = self._claiming.get(wanted.key)
            if claiming is not None:  # our own claim of it is being made: then decide
                await asyncio.shield(claiming)
                return await self.place(wanted)
            if wanted.key in self.claims or not wanted.create:
                return LOCAL  # being admitted here; or ended here (the manager's tombstone)
            return refuse(CloseCode.TRY_AGAIN_LATER, "session is ending; retry")  # released soon
        if holder.owner != wanted.owner:
            return refuse(CloseCode.FORBIDDEN, "session belongs to another owner")
        if holder.state is NodeState.UP:
            if wanted.relayed:  # the owner moved between two lookups: the client retries
                return refuse(CloseCode.TRY_AGAIN_LATER, "session owner changed; retry")
            self.counters.forwarded += 1
            return Placement(Route.FORWARD, url=holder.url)
        if not wanted.create:
            return refuse(CloseCode.NOT_FOUND, NODE_LOST)
        return await self._claim(wanted, takeover=True)

    async def _tombstone_refusal(self, wanted: Wanted) -> Placement:
        tombstone = await self.store.get_tombstone(wanted.key, self.clock.time())
        if tombstone is None:
            return LOCAL  # the manager answers 4004 (or its own tombstone)
        if tombstone.owner != wanted.owner:
            return refuse(CloseCode.FORBIDDEN, "session belongs to another owner")
        return refuse(tombstone.code, tombstone.reason)

    async def _claim(self, wanted: Wanted, *, takeover: bool) -> Placement:
        lease = self._lease_current()
        if lease is None:
            return refuse(CloseCode.TRY_AGAIN_LATER, UNAVAILABLE)
        if wanted.key in self._claiming:  # another connect of this node is claiming it
            await asyncio.shield(self._claiming[wanted.key])
            return await self.place(wanted)
        claiming = self._claiming[wanted.key] = asyncio.get_running_loop().create_future()
        try:
            return await self._claim_now(wanted, lease, takeover=takeover)
        finally:
            del self._claiming[wanted.key]
            claiming.set_result(None)

    async def _claim_now(self, wanted: Wanted, lease: NodeLease, *, takeover: bool) -> Placement:
        result = await self.registry.claim(wanted.key, lease, owner=wanted.owner, takeover=takeover)
        if result.outcome is ClaimOutcome.STALE:
            return refuse(CloseCode.TRY_AGAIN_LATER, UNAVAILABLE)
        if result.outcome is ClaimOutcome.TAKEN:  # lost a race: the winner serves it
            holder = await self.registry.lookup(wanted.key)
            if holder is None or holder.node == self.node_id or holder.state is not NodeState.UP:
                return refuse(CloseCode.TRY_AGAIN_LATER, "session is being created; retry")
            return await self._place_held(wanted, holder)
        assert result.claim is not None
        self.claims[wanted.key] = result.claim
        self._owners[wanted.key] = wanted.owner
        self._fresh.add(wanted.key)
        self.counters.claimed += 1
        if result.replaced is not None:
            lost = result.replaced[0]
            logs.log_event("cluster_takeover", key=wanted.key, node=self.node_id, lost=lost)
        if wanted.owner_limit is not None:
            count = await self.registry.count_owner_sessions(wanted.owner)
            if count > wanted.owner_limit:
                self.settle(wanted.key)
                return refuse(CloseCode.OWNER_LIMIT, "session limit of this owner reached")
        return Placement(Route.LOCAL, claimed=wanted.key)

    # ------------------------------------------------------------------ ends
    def settle(self, key: str) -> None:
        """After the admit of a connect that claimed ``key``: release the claim unless the
        session was created (the manager refused it: storm, limit, a shell that cannot start)."""
        if key in self._fresh:
            self._fresh.discard(key)
            if key not in self._sessions():
                self.session_ended(key)

    def session_ended(self, key: str) -> None:
        """The session of ``key`` ended here: release its claim (in the background)."""
        self._fresh.discard(key)
        self._owners.pop(key, None)
        claim = self.claims.pop(key, None)
        if claim is None:
            return
        self._releasing[key] = claim
        task = asyncio.get_running_loop().create_task(self._release(claim))
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    async def _release(self, claim: Claim) -> None:
        try:
            if self._flush is not None:
                await self._flush()  # the record's removal and the tombstone come first
            await self.registry.release(claim)
        except RegistryUnavailable as error:  # the claim is swept once this node is lost
            self._note_unavailable(error)
        finally:
            if self._releasing.get(claim.key) is claim:
                del self._releasing[claim.key]

    # ------------------------------------------------------------------ views
    async def cluster_view(self) -> dict[str, object]:
        """The nodes, their liveness and session counts (``/stats/cluster``)."""
        nodes = await self.registry.nodes()
        return {
            "node": self.node_id,
            "ready": self.is_ready(),
            "counters": dataclasses.asdict(self.counters),  # this node's, since it started
            "nodes": [
                {
                    "node": info.node,
                    "state": info.state.value,
                    "url": info.url,
                    "sessions": info.sessions,
                }
                for info in sorted(nodes, key=lambda info: info.node)
            ],
        }


def _owner_of(session: object) -> str:
    """The owner of a live session (a :class:`~tether.server.session.Session`)."""
    info = getattr(session, "info", None)
    return str(getattr(info, "owner", ""))
