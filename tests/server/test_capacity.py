"""The sessions a server's limits allow, and the fd soft limit it raises to hold them."""

from __future__ import annotations

import resource

from tether.server.capacity import FD_RESERVE, FDS_PER_SESSION, plan


def test_the_soft_limit_is_raised_to_what_every_pty_needs_within_the_hard_limit() -> None:
    soft, capacity = plan(None, soft=1024, hard=20_000, fds_open=20, pty_max=4096, ptys_in_use=7)
    assert soft == 20 + FD_RESERVE + FDS_PER_SESSION * 4095
    assert capacity.fd_soft == soft and capacity.pty_sessions == 4095
    assert capacity.max_sessions == 4095 and not capacity.clamped
    assert capacity.fields()["ptys_in_use"] == 7


def test_a_low_hard_limit_bounds_the_sessions_by_fds() -> None:
    soft, capacity = plan(None, soft=1024, hard=2048, fds_open=20, pty_max=4096, ptys_in_use=0)
    assert soft == 2048
    assert capacity.max_sessions == (2048 - 20 - FD_RESERVE) // FDS_PER_SESSION


def test_a_configured_number_is_kept_when_it_fits_and_lowered_when_not() -> None:
    soft, fits = plan(100, soft=1024, hard=20_000, fds_open=20, pty_max=4096, ptys_in_use=0)
    assert soft == 1024, "already enough for 100 sessions: never lowered, not raised"
    assert fits.max_sessions == 100 and not fits.clamped
    _, lowered = plan(9000, soft=1024, hard=20_000, fds_open=20, pty_max=4096, ptys_in_use=0)
    assert lowered.max_sessions == 4095 and lowered.clamped


def test_an_unlimited_hard_limit_and_no_room_at_all() -> None:
    infinite = resource.RLIM_INFINITY
    soft, _ = plan(None, soft=1024, hard=infinite, fds_open=20, pty_max=4096, ptys_in_use=0)
    assert soft == 20 + FD_RESERVE + FDS_PER_SESSION * 4095
    _, starved = plan(None, soft=64, hard=64, fds_open=60, pty_max=4096, ptys_in_use=0)
    assert starved.fd_sessions == 0 and starved.max_sessions == 1  # refuses from the second on
