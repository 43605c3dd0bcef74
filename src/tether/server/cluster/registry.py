"""The node registry in Redis: which nodes are up, and which node owns each session key.

A node registers (:meth:`RedisRegistry.register`: a lease, and an *epoch* that numbers this
registration) and renews its lease at most once a second (:meth:`~RedisRegistry.renew`, or
:meth:`~RedisRegistry.keep_renewing`). It claims each key before it starts a shell for it
(:meth:`~RedisRegistry.claim`): one Lua script that either records the node, its epoch and a new
fencing token, or answers who holds the key and whether that node is up. A claim lives as long as
the registration it was made under: a lost node's claims read ``lost`` at once, with no per-key
renewal. Renewing a claim under a new registration, releasing it and fenced writes need its
token (:mod:`tether.server.cluster.lease` states the rules; :mod:`~tether.server.cluster.scripts`
the scripts' contracts). Every connect-path call is one script, O(1) in Redis; listings (the
cluster view, ``GET /api/sessions``) walk index sets with ``SSCAN``, never the keyspace.

Keys, with ``P`` the prefix (``tether:`` by default; ``docs/scaling.md`` has their lifetimes):
``P node:N`` (hash: epoch, url, since; ``PX`` lease), ``P nodes`` (set of node ids),
``P epochs`` and ``P fence`` (counters), ``P claim:K`` (hash: node, epoch, token, owner, and
fenced fields), ``P node-claims:N`` and ``P owner-claims:O`` (sets of keys).

Connection failures and timeouts raise :class:`~tether.errors.RegistryUnavailable`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from tether.errors import RegistryUnavailable
from tether.server.clock import Clock, SystemClock
from tether.server.cluster import scripts
from tether.server.cluster.lease import LeaseSettings, NodeLease, NodeState
from tether.server.store.redis import DEFAULT_PREFIX, require_decoded, translated_errors

_BATCH = 500
_SCRIPTS = [
    "REGISTER",
    "SUCCEED",
    "RENEW",
    "DEREGISTER",
    "CLAIM",
    "RENEW_CLAIM",
    "RELEASE",
    "WRITE",
    "LOOKUP",
    "SWEEP",
    "FORGET",
]
_CLAIM_FIELDS = frozenset({"node", "epoch", "token", "owner"})


class Renewal(enum.Enum):
    """What a lease renewal found."""

    RENEWED = "renewed"
    LOST = "lost"  # the lease had expired: the node was declared lost; register again
    REPLACED = "replaced"  # a newer registration holds the node id


class ClaimOutcome(enum.Enum):
    CLAIMED = "claimed"  # the key is now this node's, under a new token
    HELD = "held"  # it already was, under this registration (a retried claim)
    TAKEN = "taken"  # another node (or an older registration of this one) holds it
    STALE = "stale"  # this node's registration is not current: register again first


@dataclass(frozen=True)
class Claim:
    """A key held by a node: what renew, release and fenced writes present."""

    key: str
    node: str
    epoch: int
    token: int


@dataclass(frozen=True)
class Holder:
    """Who holds a key, as any node sees it."""

    key: str
    node: str
    epoch: int
    token: int
    owner: str  # the user whose session it is
    state: NodeState
    url: str = ""  # the node's advertised URL ('' when lost or unknown)
    fields: Mapping[str, str] = field(default_factory=dict)  # fenced writes


@dataclass(frozen=True)
class ClaimResult:
    outcome: ClaimOutcome
    claim: Claim | None = None  # CLAIMED, HELD
    holder: Holder | None = None  # TAKEN
    replaced: tuple[str, int] | None = None  # CLAIMED over a lost node: (its node, its token)


@dataclass(frozen=True)
class NodeInfo:
    node: str
    state: NodeState
    url: str
    epoch: int | None  # None once its lease has expired
    sessions: int


class RedisRegistry:
    """One node's handle on the registry (``node``: this node's id; ``url``: how peers reach it)."""

    def __init__(
        self,
        client: Redis,
        node: str,
        *,
        url: str = "",
        settings: LeaseSettings | None = None,
        clock: Clock | None = None,
        prefix: str = DEFAULT_PREFIX,
    ) -> None:
        require_decoded(client)
        self.client, self.node, self.url, self.prefix = client, node, url, prefix
        self.settings = settings or LeaseSettings()
        self.clock: Clock = clock or SystemClock()
        self._scripts = {name: client.register_script(getattr(scripts, name)) for name in _SCRIPTS}

    async def _run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        with translated_errors():
            return await self._scripts[name](keys=keys, args=args)

    # ------------------------------------------------------------------ this node's lease
    async def register(self) -> NodeLease | float:
        """Register this node: its lease, or (a float) the seconds until a live registration of
        the same node id expires (another process runs under this id, or this node's previous
        registration has not expired yet)."""
        sent_at = self.clock.monotonic()
        keys = [self._node_key(self.node), self._key("nodes"), self._key("epochs")]
        args = [self.node, self.url, self.settings.lease_ms, repr(self.clock.time())]
        done, epoch, pttl = await self._run("REGISTER", keys, args)
        if not done:
            return max(0, int(pttl)) / 1000
        return NodeLease(self.settings, int(epoch), sent_at)

    async def succeed(self, keys: list[str]) -> tuple[NodeLease, dict[str, Claim]]:
        """Register as the successor of this node id's previous process (restart survival),
        carrying over its claims of ``keys`` atomically: the new lease, and the claims kept."""
        sent_at = self.clock.monotonic()
        script_keys = [
            self._node_key(self.node),
            self._key("nodes"),
            self._key("epochs"),
            self._key("fence"),
        ]
        args = [self.node, self.url, self.settings.lease_ms, repr(self.clock.time()), self.prefix]
        epoch, flat = await self._run("SUCCEED", script_keys, [*args, *keys])
        lease = NodeLease(self.settings, int(epoch), sent_at)
        kept = {
            key: Claim(key, self.node, lease.epoch, int(token))
            for key, token in zip(flat[::2], flat[1::2], strict=True)
        }
        return lease, kept

    async def renew(self, lease: NodeLease) -> Renewal:
        """Renew the lease (one ``PEXPIRE``); on success ``lease`` is extended from the moment
        the renewal was sent."""
        sent_at = self.clock.monotonic()
        keys = [self._node_key(self.node), self._key("nodes")]
        args = [lease.epoch, self.settings.lease_ms, self.node]
        found = int(await self._run("RENEW", keys, args))
        if found == 1:
            lease.renewed(sent_at)
            return Renewal.RENEWED
        return Renewal.LOST if found == 0 else Renewal.REPLACED

    async def deregister(self, lease: NodeLease) -> bool:
        """Drop this node's registration (a clean shutdown, after releasing its claims)."""
        keys = [self._node_key(self.node), self._key("nodes")]
        return bool(await self._run("DEREGISTER", keys, [lease.epoch, self.node]))

    async def keep_renewing(
        self, lease: NodeLease, on_lost: Callable[[Renewal | None], None]
    ) -> None:
        """Renew ``lease`` every ``renew_every`` until it is lost, then call ``on_lost`` (with the
        renewal's finding, or None when the lease ran out while Redis could not be reached) and
        return. Run it as a task; cancel it to stop."""
        delay = lease.renewal_delay(self.clock.monotonic())
        while True:
            await self.clock.sleep(delay)
            try:
                found = await self.renew(lease)
            except RegistryUnavailable:
                now = self.clock.monotonic()
                if lease.is_expired(now):
                    on_lost(None)
                    return
                delay = min(self.settings.renew_every, lease.remaining(now))
                continue
            if found is not Renewal.RENEWED:
                on_lost(found)
                return
            delay = lease.renewal_delay(self.clock.monotonic())

    # ------------------------------------------------------------------ claims
    async def claim(
        self, key: str, lease: NodeLease, *, owner: str, takeover: bool = False
    ) -> ClaimResult:
        """Claim ``key`` for this node (see :class:`ClaimOutcome`). ``takeover``: claim it even
        from a node that is lost (the caller then ends what it knows of that session)."""
        keys = [
            self.claim_key(key),
            self._node_key(self.node),
            self._key("fence"),
            self._key(f"node-claims:{self.node}"),
            self._key(f"owner-claims:{owner}"),
        ]
        args = [self.node, lease.epoch, owner, key, self.prefix, "1" if takeover else "0"]
        reply = await self._run("CLAIM", keys, args)
        outcome = ClaimOutcome(reply[0])
        if outcome is ClaimOutcome.TAKEN:
            node, epoch, token, holder_owner, state = reply[1:]
            holder = Holder(key, node, int(epoch), int(token), holder_owner, NodeState(state))
            return ClaimResult(outcome, holder=holder)
        if outcome is ClaimOutcome.STALE:
            return ClaimResult(outcome)
        claim = Claim(key, self.node, lease.epoch, int(reply[1]))
        replaced = (reply[2], int(reply[3])) if len(reply) > 2 and reply[2] else None
        return ClaimResult(outcome, claim=claim, replaced=replaced)

    async def renew_claim(self, claim: Claim, lease: NodeLease) -> Claim | None:
        """Carry a claim made under an earlier registration over to ``lease`` (a node that was
        lost and registered again keeps a session nobody took meanwhile): the claim under a new
        token, or None if the key is no longer this claim's (or ``lease`` is not current)."""
        keys = [self.claim_key(claim.key), self._node_key(self.node), self._key("fence")]
        token = int(await self._run("RENEW_CLAIM", keys, [self.node, lease.epoch, claim.token]))
        return Claim(claim.key, self.node, lease.epoch, token) if token > 0 else None

    async def release(self, claim: Claim) -> bool:
        """Give the key up (its session ended here); False if it was no longer this claim's."""
        keys = [self.claim_key(claim.key), self._key(f"node-claims:{claim.node}")]
        return bool(await self._run("RELEASE", keys, [claim.token, claim.key, self.prefix]))

    async def write(self, claim: Claim, fields: Mapping[str, str]) -> bool:
        """A fenced write of extra fields into the key's claim (e.g. a display name); False
        (nothing written) if a newer claim holds the key or it is unclaimed."""
        if not fields or _CLAIM_FIELDS & set(fields):
            raise ValueError(f"fields must be given and not be one of {sorted(_CLAIM_FIELDS)}")
        flat = [item for pair in fields.items() for item in pair]
        return bool(await self._run("WRITE", [self.claim_key(claim.key)], [claim.token, *flat]))

    async def lookup(self, key: str) -> Holder | None:
        """Who holds ``key`` and whether that node is up (one script: O(1))."""
        reply = await self._run("LOOKUP", [self.claim_key(key)], [self.prefix])
        if not reply:
            return None
        state, url, flat = reply
        return _holder(key, dict(zip(flat[::2], flat[1::2], strict=True)), NodeState(state), url)

    # ------------------------------------------------------------------ counts and listings
    async def count_owner_sessions(self, owner: str) -> int:
        """The sessions of ``owner`` on every node (``SCARD``: O(1)); a lost node's count until
        they are swept."""
        with translated_errors():
            return int(await self.client.scard(self._key(f"owner-claims:{owner}")))

    async def nodes(self) -> list[NodeInfo]:
        """Every registered node with its state and number of claims (not a hot path)."""
        infos = []
        for node in await self._scan(self._key("nodes")):
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.hmget(self._node_key(node), "epoch", "url")
                pipe.scard(self._key(f"node-claims:{node}"))
                with translated_errors():
                    (epoch, url), sessions = await pipe.execute()
            state = NodeState.UP if epoch is not None else NodeState.LOST
            number = None if epoch is None else int(epoch)
            infos.append(NodeInfo(node, state, url or "", number, int(sessions)))
        return infos

    async def list_sessions(self) -> list[Holder]:
        """Every claimed key on every node, with its node's state (``GET /api/sessions``)."""
        holders: list[Holder] = []
        for info in await self.nodes():
            holders += await self.claims_of(info)
        return holders

    async def claims_of(self, info: NodeInfo) -> list[Holder]:
        """The keys one node holds, with their state (``SSCAN`` + pipelined ``HGETALL``)."""
        holders: list[Holder] = []
        keys = await self._scan(self._key(f"node-claims:{info.node}"))
        for start in range(0, len(keys), _BATCH):
            async with self.client.pipeline(transaction=False) as pipe:
                for key in keys[start : start + _BATCH]:
                    pipe.hgetall(self.claim_key(key))
                with translated_errors():
                    found = await pipe.execute()
            for key, entry in zip(keys[start : start + _BATCH], found, strict=True):
                if entry.get("node") == info.node:  # not released or taken meanwhile
                    up = info.epoch is not None and int(entry["epoch"]) == info.epoch
                    state = NodeState.UP if up else NodeState.LOST
                    holders.append(_holder(key, entry, state, info.url if up else ""))
        return holders

    async def sweep(self, node: str) -> list[str]:
        """Delete the claims ``node`` holds under a registration that is not its current one (it
        was lost); returns their keys, for their tombstones. Any node may sweep any node; a node
        that is gone and holds nothing any more is forgotten (no longer listed)."""
        swept: list[str] = []
        keys = await self._scan(self._key(f"node-claims:{node}"))
        for start in range(0, len(keys), _BATCH):
            args = [node, self.prefix, *keys[start : start + _BATCH]]
            swept.extend(await self._run("SWEEP", [self._node_key(node)], args))
        node_claims = self._key(f"node-claims:{node}")
        await self._run("FORGET", [self._node_key(node), self._key("nodes"), node_claims], [node])
        return swept

    async def _scan(self, key: str) -> list[str]:
        with translated_errors():
            return sorted({str(m) async for m in self.client.sscan_iter(key, count=_BATCH)})

    # ------------------------------------------------------------------ key names
    def _key(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def _node_key(self, node: str) -> str:
        return f"{self.prefix}node:{node}"

    def claim_key(self, key: str) -> str:
        return f"{self.prefix}claim:{key}"


def _holder(key: str, entry: Mapping[str, str], state: NodeState, url: str) -> Holder:
    extra = {name: value for name, value in entry.items() if name not in _CLAIM_FIELDS}
    return Holder(
        key,
        entry["node"],
        int(entry["epoch"]),
        int(entry["token"]),
        entry["owner"],
        state,
        url if state is NodeState.UP else "",
        extra,
    )
