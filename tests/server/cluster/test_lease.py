"""Lease and fencing arithmetic: pure, with plain numbers as the clock."""

from __future__ import annotations

import itertools

import pytest

from tether.errors import ConfigError
from tether.server.cluster.lease import (
    LeaseSettings,
    NodeLease,
    NodeState,
    fence_allows,
    holds_claim,
    node_state,
)

SETTINGS = LeaseSettings(lease=5.0, renew_every=1.0, timeout=1.0)


def test_the_defaults_renew_once_a_second_and_lose_a_node_within_ten_seconds() -> None:
    defaults = LeaseSettings()
    assert defaults.renew_every >= 1.0
    assert defaults.lost_by(last_renewal=100.0) - 100.0 <= 10.0
    assert defaults.lease_ms == 5000


@pytest.mark.parametrize(
    ("lease", "renew_every", "timeout", "setting"),
    [
        (5.0, 0.0, 1.0, "cluster_renew_every"),
        (5.0, -1.0, 1.0, "cluster_renew_every"),
        (5.0, 2.6, 1.0, "cluster_renew_every"),  # fewer than two chances per lease
        (5.0, 1.0, 0.0, "cluster_timeout"),
        (5.0, 1.0, 5.0, "cluster_timeout"),
    ],
)
def test_settings_that_cannot_keep_a_lease_are_refused(
    lease: float, renew_every: float, timeout: float, setting: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        LeaseSettings(lease=lease, renew_every=renew_every, timeout=timeout)
    assert caught.value.setting == setting


def test_short_leases_for_tests_are_allowed_and_rounded_to_milliseconds() -> None:
    short = LeaseSettings(lease=0.3, renew_every=0.1, timeout=0.2)
    assert short.lease_ms == 300
    assert LeaseSettings(lease=0.0004, renew_every=0.0002, timeout=0.0001).lease_ms == 1


def test_a_lease_is_due_for_renewal_every_renew_every_seconds() -> None:
    lease = NodeLease(SETTINGS, epoch=7, sent_at=100.0)
    assert lease.epoch == 7
    assert lease.next_renewal() == 101.0
    assert not lease.is_renewal_due(100.999)
    assert lease.is_renewal_due(101.0)
    assert lease.renewal_delay(100.25) == 0.75
    assert lease.renewal_delay(103.0) == 0.0, "overdue: renew now"


def test_a_renewal_extends_the_lease_from_when_it_was_sent() -> None:
    lease = NodeLease(SETTINGS, epoch=1, sent_at=100.0)
    assert lease.expires_at == 105.0
    lease.renewed(sent_at=101.0)
    assert (lease.renewed_at, lease.expires_at) == (101.0, 106.0)
    assert lease.next_renewal() == 102.0


def test_a_late_answer_to_an_older_renewal_never_shortens_the_lease() -> None:
    lease = NodeLease(SETTINGS, epoch=1, sent_at=100.0)
    lease.renewed(sent_at=102.0)
    lease.renewed(sent_at=101.0)  # answered after the newer one
    assert (lease.renewed_at, lease.expires_at) == (102.0, 107.0)


def test_a_node_stops_trusting_its_lease_when_redis_may_have_dropped_it() -> None:
    lease = NodeLease(SETTINGS, epoch=1, sent_at=100.0)
    assert lease.remaining(100.0) == 5.0
    assert not lease.is_expired(104.999)
    assert lease.is_expired(105.0)
    assert lease.remaining(106.0) == 0.0


def test_renewing_on_time_keeps_a_lease_forever_and_stopping_loses_it_within_the_lease() -> None:
    lease = NodeLease(SETTINGS, epoch=1, sent_at=0.0)
    now = 0.0
    for _ in range(1000):
        now += lease.renewal_delay(now)
        assert not lease.is_expired(now)
        lease.renewed(sent_at=now)
    last = now
    while not lease.is_expired(now):
        now += 0.25
    assert now - last == SETTINGS.lease
    assert SETTINGS.lost_by(last) == now


def test_a_claim_is_up_only_under_its_nodes_current_registration() -> None:
    assert node_state(claim_epoch=3, current_epoch=3) is NodeState.UP
    assert node_state(claim_epoch=3, current_epoch=None) is NodeState.LOST, "lease expired"
    assert node_state(claim_epoch=3, current_epoch=4) is NodeState.LOST, "registered again"


@pytest.mark.parametrize(("stored", "offered"), list(itertools.product([None, 1, 5, 9], [1, 5, 9])))
def test_fencing_refuses_a_lower_token_and_needs_the_very_token_to_hold(
    stored: int | None, offered: int
) -> None:
    assert fence_allows(stored, offered) is (stored is None or offered >= stored)
    assert holds_claim(stored, offered) is (stored == offered)


def test_a_stale_node_is_fenced_out_after_another_claims_the_key() -> None:
    stale, newer = 5, 9  # tokens only grow: the later claim has the higher one
    assert not fence_allows(newer, stale)
    assert not holds_claim(newer, stale)
    assert fence_allows(newer, newer) and holds_claim(newer, newer)
