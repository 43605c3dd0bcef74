"""The events a :class:`tether.client.terminal.Terminal` reports, besides policy state changes.

Listeners (``Terminal.add_listener``) and ``Terminal.events()`` receive these and
:class:`tether.protocol.policy.PolicyEvent`
(connecting, waiting, breaker open, …), so that a UI can say
"reconnecting in 4 s" or "paused until 12:03:10".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tether.protocol.policy import PolicyEvent


@dataclass(frozen=True)
class Connected:
    """A hello arrived; ``resumed`` is False for the first connection."""

    hello: dict[str, Any]
    resumed: bool


@dataclass(frozen=True)
class Disconnected:
    """The established connection was lost or closed with ``code``."""

    code: int
    reason: str


@dataclass(frozen=True)
class Gap:
    """Output bytes ``offset`` to ``replay_from`` were no longer buffered: they are lost."""

    offset: int
    replay_from: int

    @property
    def lost(self) -> int:
        """How many output bytes were lost."""
        return self.replay_from - self.offset


@dataclass(frozen=True)
class Resized:
    """Another client resized the shared terminal."""

    cols: int
    rows: int


@dataclass(frozen=True)
class Exited:
    """The shell ended (exit status or signal number); a 4012 close follows."""

    code: int | None
    signal: int | None


@dataclass(frozen=True)
class Latency:
    """A ``pong`` came back ``seconds`` after its ``ping``."""

    seconds: float


@dataclass(frozen=True)
class ServerError:
    """The server rejected a message of ours (the connection stays open)."""

    code: str
    message: str


ClientEvent = (
    PolicyEvent | Connected | Disconnected | Gap | Resized | Exited | Latency | ServerError
)
EventListener = Callable[[ClientEvent], None]
