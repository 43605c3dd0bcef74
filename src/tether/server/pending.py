"""Connections accepted but not yet past their request headers, counted per client address.

A slowloris client opens many connections and sends nothing, or one header line now and then,
to use up the server's file descriptors. Two rules stop it (docs/security.md):

* **a deadline** — a connection must complete its request headers (for ``/ws/terminal``: its
  upgrade request) within ``--handshake-timeout`` seconds (the front enforces it);
* **a cap** — an address may hold at most ``--max-pending-per-address`` such connections; one
  more is closed at once. Loopback peers (unless ``--no-loopback-exempt``) and trusted proxies
  are exempt, as from the address storm rule: a herd of resumes after a network blip, or a
  proxy carrying many clients, is not refused.

Pure bookkeeping: no sockets, no clock. A connection is any hashable the front chooses.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable


class PendingConnections:
    """Who holds connections that have not sent a whole request yet, and how many."""

    def __init__(self, limit: int, is_exempt: Callable[[str], bool]) -> None:
        self.limit = limit
        self._is_exempt = is_exempt
        self._pending: dict[Hashable, str] = {}
        self._per_address: Counter[str] = Counter()

    def open(self, connection: Hashable, address: str) -> bool:
        """A connection was accepted from ``address``; False when it is one too many."""
        if not self._is_exempt(address):
            if self._per_address[address] >= self.limit:
                return False
            self._per_address[address] += 1
        self._pending[connection] = address
        return True

    def settle(self, connection: Hashable) -> None:
        """The connection sent a whole request: it no longer counts (idempotent)."""
        address = self._pending.pop(connection, None)
        if address is None or self._is_exempt(address):
            return
        self._per_address[address] -= 1
        if self._per_address[address] <= 0:
            del self._per_address[address]

    def close(self, connection: Hashable) -> None:
        """The connection ended, whether or not it settled (idempotent)."""
        self.settle(connection)

    def count(self, address: str) -> int:
        """Connections of ``address`` that count toward the cap now."""
        return self._per_address[address]

    def __len__(self) -> int:
        return len(self._pending)
