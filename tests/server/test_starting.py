"""Which signals a new worker sends itself again once its handlers are there (the ones that came
while it was starting: server/starting.py)."""

from __future__ import annotations

import signal

from tether.server.starting import to_resend


def test_each_held_signal_is_sent_again_once() -> None:
    held = [signal.SIGHUP, signal.SIGUSR2, signal.SIGHUP]
    assert to_resend(held) == [signal.SIGHUP, signal.SIGUSR2]


def test_a_stop_wins_over_an_upgrade_asked_for_with_it() -> None:
    assert to_resend([signal.SIGUSR2, signal.SIGTERM]) == [signal.SIGTERM]
    assert to_resend([signal.SIGINT, signal.SIGHUP, signal.SIGUSR2]) == [
        signal.SIGHUP,
        signal.SIGINT,
    ]
    assert to_resend([]) == []
