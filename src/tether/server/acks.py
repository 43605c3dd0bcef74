"""When a front acknowledges a client's input (docs/protocol.md, the ``ack`` message).

Input is acknowledged at once when :data:`ACK_EVERY` bytes are unacknowledged, else once,
:data:`ACK_DELAY` after the first unacknowledged input (batching keystrokes). Every front
(aiohttp, ASGI, direct) mixes in :class:`InputAcks`: one place for the rule, and no object of its
own per connection (its slots live in the front's). :class:`PingedFront` adds the heartbeat's
ping rule for the fronts that send WebSocket pings.
"""

from __future__ import annotations

import asyncio
import collections
import json
from typing import Any

from tether.protocol.codes import CloseCode
from tether.server.session import Client, Session

ACK_EVERY = 64 * 1024
# Control messages (pong, ack, resize, exit) queued for one client. A client answers a few per
# heartbeat; one that keeps sending pings and never reads would grow this without end.
MAX_QUEUED_MESSAGES = 1024
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


class PingedFront(InputAcks):
    """A front on a WebSocket it writes itself (aiohttp, direct): its queue of control
    messages and the heartbeat's ping rule, in one place.

    At most :data:`MAX_QUEUED_MESSAGES` control messages wait for a client that does not read;
    one more drops it (1008). A peer that left two of our pings unanswered is dropped (the
    session stays, detached); only a pong that answers one of our pings counts.
    """

    __slots__ = ("_awaited_pongs", "_messages", "_pings_sent", "_unanswered_pings")

    def _init_pings(self) -> None:
        self._messages: collections.deque[str] | None = None  # encoded JSON, made when needed
        self._unanswered_pings = 0
        self._pings_sent = 0
        self._awaited_pongs: tuple[bytes, ...] = ()  # payloads of our pings not yet answered

    def _drop(self, code: int, reason: str) -> None:
        raise NotImplementedError

    def wake(self) -> None:
        raise NotImplementedError

    def send_message(self, message: dict[str, Any]) -> None:
        if self._messages is None:
            self._messages = collections.deque()
        elif len(self._messages) >= MAX_QUEUED_MESSAGES:
            self._drop(CloseCode.POLICY_VIOLATION, "client stopped reading")
            return
        self._messages.append(json.dumps(message))
        self.wake()

    def _next_ping(self) -> bytes | None:
        """The payload of the ping to send now; None after dropping a silent peer."""
        if self._unanswered_pings >= 2:
            self._drop(CloseCode.ABNORMAL, "two pings unanswered")
            return None
        self._unanswered_pings += 1
        self._pings_sent += 1
        payload = str(self._pings_sent).encode()
        self._awaited_pongs += (payload,)
        return payload

    def _pong_received(self, payload: bytes) -> None:
        if payload in self._awaited_pongs:  # an unsolicited pong proves nothing
            self._awaited_pongs = ()
            self._unanswered_pings = 0
