"""Pending connections per address: the slowloris cap, its exemptions, settle and close."""

from __future__ import annotations

from tether.server.pending import PendingConnections


def test_the_cap_counts_pending_connections_per_address() -> None:
    pending = PendingConnections(2, is_exempt=lambda address: address == "127.0.0.1")
    assert pending.open("a", "203.0.113.1") and pending.open("b", "203.0.113.1")
    assert not pending.open("c", "203.0.113.1"), "one too many"
    assert pending.open("d", "203.0.113.2"), "another address has its own count"
    pending.settle("a")
    pending.settle("a")  # idempotent
    assert pending.count("203.0.113.1") == 1
    assert pending.open("e", "203.0.113.1")
    pending.close("b")
    pending.close("e")
    pending.close("never-opened")
    assert pending.count("203.0.113.1") == 0 and len(pending) == 1


def test_exempt_addresses_are_never_refused() -> None:
    pending = PendingConnections(1, is_exempt=lambda address: address == "127.0.0.1")
    assert all(pending.open(n, "127.0.0.1") for n in range(50))
    assert pending.count("127.0.0.1") == 0 and len(pending) == 50
    for n in range(50):
        pending.close(n)
    assert len(pending) == 0
