"""Cleaning up after lost nodes: their sessions get a ``node lost`` tombstone, then go.

A node that stops renewing its lease is *lost* at once for every other node (its claims read
``lost``: connects answer 4004 ``node lost``), but its claims stay for ``sweep_after`` seconds,
so that a node that was only partitioned or paused can come back and keep its sessions (it
renews their claims under its new registration). After that, any node's :class:`Sweeper` leaves
a tombstone for each of the lost node's keys in the shared store (4004, ``node lost``, for
``tombstone_ttl``), removes their records, and deletes the claims (``SWEEP``, fenced by epoch:
claims the node renewed meanwhile stay). A node that comes back after the sweep finds its claims
gone or taken and ends those sessions (``docs/scaling.md``, the failure table).

Several nodes may sweep the same lost node at once: every step is idempotent.
"""

from __future__ import annotations

import contextlib
import logging

from tether.errors import RegistryUnavailable
from tether.protocol.codes import CloseCode
from tether.server import logs
from tether.server.clock import Clock
from tether.server.cluster.lease import NodeState
from tether.server.cluster.registry import Holder, RedisRegistry
from tether.server.store.record import Tombstone
from tether.server.store.redis import RedisStore

NODE_LOST = "node lost"


class Sweeper:
    """Sweeps the nodes that have been lost for ``sweep_after`` seconds (as this node saw)."""

    def __init__(
        self,
        registry: RedisRegistry,
        store: RedisStore,
        clock: Clock,
        *,
        sweep_after: float,
        tombstone_ttl: float,
    ) -> None:
        self.registry, self.store, self.clock = registry, store, clock
        self.sweep_after, self.tombstone_ttl = sweep_after, tombstone_ttl
        self._lost_since: dict[str, float] = {}  # node → when this node first saw it lost

    async def run(self) -> None:
        """Check a few times per ``sweep_after``, until cancelled."""
        while True:
            await self.clock.sleep(max(0.1, self.sweep_after / 4))
            with contextlib.suppress(RegistryUnavailable):
                await self.sweep_once()

    async def sweep_once(self) -> list[str]:
        """Sweep every node lost for long enough; the keys swept."""
        now, swept = self.clock.monotonic(), []
        nodes = await self.registry.nodes()
        lost = {info.node: info for info in nodes if info.state is NodeState.LOST}
        self._lost_since = {node: self._lost_since.get(node, now) for node in lost}
        for node, info in lost.items():
            if now - self._lost_since[node] >= self.sweep_after:
                swept += await self._sweep(info.node, await self.registry.claims_of(info))
        return swept

    async def _sweep(self, node: str, holders: list[Holder]) -> list[str]:
        wall = self.clock.time()
        for holder in holders:
            tombstone = Tombstone(
                holder.key,
                holder.owner,
                int(CloseCode.NOT_FOUND),
                NODE_LOST,
                wall,
                wall + self.tombstone_ttl,
            )
            await self.store.put_tombstone(tombstone)
            await self.store.remove_record(holder.key)
        swept = await self.registry.sweep(node)
        if swept or holders:
            logs.log_at(logging.WARNING, "cluster_sweep", lost=node, sessions=len(swept))
        return swept
