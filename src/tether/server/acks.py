"""When a front acknowledges a client's input (docs/protocol.md, the ``ack`` message).

Input is acknowledged at once when :data:`ACK_EVERY` bytes are unacknowledged, else once,
:data:`ACK_DELAY` after the first unacknowledged input (batching keystrokes). Every front
(aiohttp, ASGI) mixes in :class:`InputAcks`: one place for the rule, and no object of its own
per connection (its two slots live in the front's).
"""

from __future__ import annotations

import asyncio
from typing import Any

from tether.server.session import Client, Session

ACK_EVERY = 64 * 1024
ACK_DELAY = 0.05  # a batching delay of the socket layer: on the loop's timer, not the clock


class InputAcks:
    """The ack pacing of one client connection; the front says whom it acknowledges."""

    __slots__ = ("_ack_timer", "_acked_sent")

    def _init_acks(self) -> None:
        self._acked_sent = 0
        self._ack_timer: asyncio.TimerHandle | None = None

    def _acked_party(self) -> tuple[Session, Client] | None:
        """The session and client whose input this connection acknowledges (None: not yet)."""
        raise NotImplementedError

    def send_message(self, message: dict[str, Any]) -> None:
        raise NotImplementedError

    def _schedule_ack(self) -> None:
        """Input was written: acknowledge it now, or after the batching delay."""
        party = self._acked_party()
        if party is None:
            return
        session, client = party
        if session.input_count(client.input_key) - self._acked_sent >= ACK_EVERY:
            self._send_ack()
        elif self._ack_timer is None:
            self._ack_timer = asyncio.get_running_loop().call_later(ACK_DELAY, self._send_ack)

    def _send_ack(self) -> None:
        self._ack_timer = None
        party = self._acked_party()
        if party is None:
            return
        session, client = party
        count = session.input_count(client.input_key)
        if count != self._acked_sent and client.active:
            self._acked_sent = count
            self.send_message({"type": "ack", "input": count})

    def _cancel_ack(self) -> None:
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None
