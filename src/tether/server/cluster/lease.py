"""Lease and fencing arithmetic for the node registry: pure, no Redis, no clock of its own.

The rules (``docs/scaling.md`` has the whole design):

- A node holds **one lease** in Redis (its ``node:`` key, set with ``PX lease``) and renews it
  every ``renew_every`` seconds: at most one renewal per node per second with the defaults,
  whatever its number of sessions, because a session's ownership is tied to the node's lease (its
  registration *epoch*), not leased key by key.
- A node is **lost** once its key has expired in Redis: at most ``lease`` seconds after its last
  renewal reached Redis (5 s by default, well inside the 10 s the cluster promises).
- A node counts its own lease from when it *sent* a renewal (before Redis received it), so it
  believes it holds the lease no longer than Redis does; once :meth:`NodeLease.is_expired` it must
  stop acting as the owner of its sessions until it has registered again.
- Every claim of a session key gets a **fencing token**, drawn from one counter that only grows.
  A write carries its token and is refused when the stored token is higher
  (:func:`fence_allows`); renewing or releasing a claim needs the very token stored
  (:func:`holds_claim`), so a node that was partitioned, lost its key to another node and came
  back can neither write, renew nor release it. The registry's Lua scripts apply the same rules.

Times are seconds on whatever clock the caller reads (``Clock.monotonic()`` in the server).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from tether.errors import ConfigError


class NodeState(enum.Enum):
    """A node as the registry sees it."""

    UP = "up"  # its lease is current and the claim's epoch is its current registration
    LOST = "lost"  # its lease expired (or it registered again since the claim was made)


@dataclass(frozen=True)
class LeaseSettings:
    """How long a node's registration lives, and how often it is renewed (short in tests)."""

    lease: float = 5.0  # seconds a registration lives in Redis without renewal
    renew_every: float = 1.0  # seconds between renewals: at most one per node per second
    timeout: float = 1.0  # seconds any one registry operation may take before it fails

    def __post_init__(self) -> None:
        if not 0 < self.renew_every <= self.lease / 2:
            raise ConfigError("cluster_renew_every", "must be > 0 and at most half the lease")
        if not 0 < self.timeout < self.lease:
            raise ConfigError("cluster_timeout", "must be > 0 and shorter than the lease")

    @property
    def lease_ms(self) -> int:
        """The lease as Redis takes it (``PX``), whole milliseconds, at least 1."""
        return max(1, round(self.lease * 1000))

    def lost_by(self, last_renewal: float) -> float:
        """When a node whose last renewal reached Redis at ``last_renewal`` is lost, at the
        latest (its key expires then)."""
        return last_renewal + self.lease


class NodeLease:
    """A node's own view of its lease: when to renew it, and until when it may trust it."""

    def __init__(self, settings: LeaseSettings, epoch: int, sent_at: float) -> None:
        """A lease granted by a registration sent at ``sent_at`` under ``epoch``."""
        self.settings = settings
        self.epoch = epoch
        self.renewed_at = sent_at
        self.expires_at = sent_at + settings.lease

    def renewed(self, sent_at: float) -> None:
        """A renewal sent at ``sent_at`` succeeded: the lease runs from then."""
        self.renewed_at = max(self.renewed_at, sent_at)
        self.expires_at = max(self.expires_at, sent_at + self.settings.lease)

    def next_renewal(self) -> float:
        """When the next renewal is due."""
        return self.renewed_at + self.settings.renew_every

    def renewal_delay(self, now: float) -> float:
        """Seconds to wait before the next renewal (0: now)."""
        return max(0.0, self.next_renewal() - now)

    def is_renewal_due(self, now: float) -> bool:
        return now >= self.next_renewal()

    def remaining(self, now: float) -> float:
        """Seconds the node may still trust its lease (0 once expired)."""
        return max(0.0, self.expires_at - now)

    def is_expired(self, now: float) -> bool:
        """True once Redis may have dropped the registration: the node must stop serving as the
        owner of its sessions until it registers again."""
        return now >= self.expires_at


def node_state(claim_epoch: int, current_epoch: int | None) -> NodeState:
    """The owner's state for a claim made under ``claim_epoch``, given the node's current
    registration epoch (None: it has none, its lease expired)."""
    return NodeState.UP if current_epoch == claim_epoch else NodeState.LOST


def fence_allows(stored: int | None, offered: int) -> bool:
    """Whether a write carrying the token ``offered`` may replace what was written under
    ``stored`` (None: nothing is stored): a lower token than the stored one is refused."""
    return stored is None or offered >= stored


def holds_claim(stored: int | None, offered: int) -> bool:
    """Whether the holder of ``offered`` still holds a claim whose stored token is ``stored``
    (renew and release need exactly the stored token)."""
    return stored is not None and stored == offered
