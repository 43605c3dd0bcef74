"""Several nodes, one Redis: the node registry, leases and fencing (``docs/scaling.md``).

:mod:`~tether.server.cluster.lease` is the pure arithmetic (when to renew, when a node is lost,
the fencing rule); :mod:`~tether.server.cluster.registry` keeps it in Redis with the Lua scripts
of :mod:`~tether.server.cluster.scripts`. No web framework here: forwarding between nodes belongs
to the front.
"""

from tether.server.cluster.lease import LeaseSettings, NodeLease, NodeState
from tether.server.cluster.registry import (
    Claim,
    ClaimOutcome,
    ClaimResult,
    Holder,
    NodeInfo,
    RedisRegistry,
    Renewal,
)

__all__ = [
    "Claim",
    "ClaimOutcome",
    "ClaimResult",
    "Holder",
    "LeaseSettings",
    "NodeInfo",
    "NodeLease",
    "NodeState",
    "RedisRegistry",
    "Renewal",
]
