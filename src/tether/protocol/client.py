"""The client side of the wire protocol, sans-I/O: stream position, input ledger, connect queries.

One :class:`ClientProtocol` follows one logical terminal across any number of connections. The
I/O layer (:class:`tether.client.terminal.Terminal`, the load and stress users) opens each
connection with :meth:`~ClientProtocol.start_connect`'s query, feeds in every frame it receives
(:meth:`~ClientProtocol.receive_text`, :meth:`~ClientProtocol.receive_output`), says when the
connection ends (:meth:`~ClientProtocol.connection_lost`) and writes what
:meth:`~ClientProtocol.frames_to_send` hands out. When to reconnect is
:mod:`tether.protocol.policy`'s business; nothing here reads a clock.

States (every transition is in ``_TRANSITIONS``)::

    IDLE ──start_connect──▶ CONNECTING ──hello──▶ ATTACHED
      ▲                         │                    │
      └──────connection_lost (not a stop code)───────┘
    IDLE, CONNECTING, ATTACHED ──connection_lost (stop code) or close──▶ ENDED

Rules (docs/protocol.md, sections 2–4):

- **Position**: the hello's ``replay_from``, plus every output byte received since. A resume
  asks for ``offset=position`` with ``create=0`` and the canonical session id of the last hello;
  the hello must then start at that offset plus its ``gap``.
- **Input ledger**: input is one byte stream counted like the server counts it (per client id).
  Bytes stay held until acknowledged (``ack``, or a hello's ``input_acked``); after each hello
  every byte still held is queued again, so nothing is lost or doubled. The first hello places
  the stream at its ``input_acked`` (a reused client id). A later hello counting fewer bytes than
  were acknowledged means the server counts afresh: the ledger follows it (``Attached.rebased``),
  as the browser client does. Without a client id the server counts per connection: every hello
  places the stream anew (input is then at least once, not exactly once).
- **Errors**: :class:`RemoteProtocolError` when the server breaks the contract (a malformed frame,
  output before the hello, an ack of bytes never sent, a resume that starts elsewhere): close the
  connection with :data:`PROTOCOL_ERROR` and report :meth:`~ClientProtocol.connection_lost`.
  :class:`LocalProtocolError` when the caller does something the state does not allow.
  A well-formed frame of an unknown type is ignored (forward compatibility).
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass

from tether.errors import LocalProtocolError, RemoteProtocolError
from tether.protocol.codes import CloseCode, is_stop_code
from tether.protocol.messages import (
    MAX_COLS,
    MAX_ROWS,
    Ack,
    Exit,
    Hello,
    MessageError,
    Ping,
    Pong,
    Rejected,
    Resize,
    ServerMessage,
    parse_server_message,
)

PROTOCOL_ERROR = (
    CloseCode.PROTOCOL_ERROR
)  # a client closes with it when the server broke the protocol
MAX_INPUT_FRAME = 64 * 1024


class ClientState(enum.Enum):
    """Where the client's current connection stands."""

    IDLE = "idle"  # no connection: before the first, or between two
    CONNECTING = "connecting"  # a connection is being opened; its hello has not come
    ATTACHED = "attached"  # the hello came: output, acks and control messages flow
    ENDED = "ended"  # a stop code or the caller ended it: no connection follows


class _Event(enum.Enum):
    CONNECT = "connect"
    HELLO = "hello"
    LOST = "lost"
    END = "end"


_S, _E = ClientState, _Event
_TRANSITIONS: dict[tuple[ClientState, _Event], ClientState] = {
    (_S.IDLE, _E.CONNECT): _S.CONNECTING,
    (_S.CONNECTING, _E.HELLO): _S.ATTACHED,
    (_S.CONNECTING, _E.LOST): _S.IDLE,
    (_S.ATTACHED, _E.LOST): _S.IDLE,
    (_S.IDLE, _E.END): _S.ENDED,
    (_S.CONNECTING, _E.END): _S.ENDED,
    (_S.ATTACHED, _E.END): _S.ENDED,
    (_S.ENDED, _E.END): _S.ENDED,
    (_S.ENDED, _E.LOST): _S.ENDED,  # the connection ends after close(): nothing changes
}


@dataclass(frozen=True)
class ClientOptions:
    """What a client asks for on its first connect (docs/protocol.md, section 2).

    ``size`` is sent on every connect when set; ``offset`` and ``create=False`` apply to the
    first connect only (every resume sends its own position and ``create=0``).
    """

    project: str
    session: str | None = None
    client_id: str | None = None
    size: tuple[int, int] | None = None
    create: bool = True
    offset: int | None = None
    token: str | None = None


@dataclass(frozen=True)
class Attached:
    """A hello was accepted. ``resumed``: not the first; ``resent``: input bytes queued again;
    ``rebased``: the server counted fewer input bytes than it had acknowledged before."""

    hello: Hello
    resumed: bool
    resent: int
    rebased: bool = False

    @property
    def gap(self) -> tuple[int, int] | None:
        """(offset, replay_from) of the output bytes that were lost, if any."""
        hello = self.hello
        return (hello.replay_from - hello.gap, hello.replay_from) if hello.gap else None


Received = Attached | Ack | Resize | Pong | Exit | Rejected
Frame = bytes | str  # a binary frame, or a text frame's JSON


class ClientProtocol:
    """One logical terminal's protocol state; see the module docstring."""

    def __init__(self, options: ClientOptions) -> None:
        self.options = options
        self.state = ClientState.IDLE
        self.session_id = options.session
        self.size = options.size
        self.position = 0
        self.hello: Hello | None = None
        self.exit: Exit | None = None
        self.closed: tuple[int, str] | None = None  # how the last connection ended
        self._held = bytearray()  # input not yet acknowledged ...
        self._held_from = 0  # ... whose first byte is this one of the input stream
        self._outbox: list[Frame] = []
        self._expected_offset: int | None = None  # the offset the connecting query asked for
        self._forbade_create = False

    # -- observation -----------------------------------------------------------------------

    @property
    def key(self) -> str | None:
        """The composite key ``session:project`` once known."""
        return self.hello.key if self.hello is not None else None

    @property
    def is_resuming(self) -> bool:
        """True once a hello came: every later connect is a resume (``create=0``)."""
        return self.hello is not None

    @property
    def input_acked(self) -> int:
        """Input bytes the server has written, in its own count."""
        return self._held_from

    @property
    def unacknowledged(self) -> int:
        """Input bytes held until the server acknowledges them."""
        return len(self._held)

    @property
    def _input_end(self) -> int:
        return self._held_from + len(self._held)

    # -- connecting --------------------------------------------------------------------------

    def start_connect(self) -> dict[str, str]:
        """A connection is about to be opened: the query parameters to open it with."""
        self._transition(_Event.CONNECT)
        options, query = self.options, {"project": self.options.project}
        if self.session_id:
            query["session"] = self.session_id
        if options.client_id:
            query["client"] = options.client_id
        if self.size is not None:
            query |= {"cols": str(self.size[0]), "rows": str(self.size[1])}
        if options.token:
            query["token"] = options.token
        offset = self.position if self.is_resuming else options.offset
        if offset is not None:
            query["offset"] = str(offset)
        self._expected_offset = offset
        self._forbade_create = self.is_resuming or not options.create
        if self._forbade_create:
            query["create"] = "0"
        return query

    def connection_lost(self, code: int, reason: str = "") -> ClientState:
        """The connection ended with ``code`` (1006 without a close frame); the new state."""
        self.closed = (code, reason)
        self._outbox.clear()
        return self._transition(_Event.END if is_stop_code(code) else _Event.LOST)

    def close(self) -> None:
        """The caller is done: no further connection (the session stays on the server)."""
        self._outbox.clear()
        self._transition(_Event.END)

    # -- receiving ---------------------------------------------------------------------------

    def receive_text(self, text: str) -> Received | None:
        """A text frame arrived: apply it; the message (None for an unknown type, ignored)."""
        if self.state not in (ClientState.CONNECTING, ClientState.ATTACHED):
            raise LocalProtocolError(f"no connection to receive on ({self.state.value})")
        message = parse_server_message(text)
        if isinstance(message, MessageError):
            if message.code == "unknown_type" and self.state is ClientState.ATTACHED:
                return None
            raise RemoteProtocolError(f"{message.code}: {message.message}")
        if self.state is ClientState.CONNECTING:
            if not isinstance(message, Hello):
                raise RemoteProtocolError("the first frame must be a hello")
            return self._receive_hello(message)
        return self._receive_message(message)

    def receive_output(self, data: bytes) -> None:
        """Output bytes arrived (a binary frame): they follow the position."""
        if self.state is not ClientState.ATTACHED:
            if self.state is ClientState.CONNECTING:
                raise RemoteProtocolError("output before the hello")
            raise LocalProtocolError(f"no connection to receive on ({self.state.value})")
        self.position += len(data)

    def _receive_hello(self, hello: Hello) -> Attached:
        self._check_hello(hello)
        resumed, rebased = self.is_resuming, False
        acked = hello.input_acked
        if not resumed or self.options.client_id is None:
            self._held_from = acked  # the stream is placed at the server's count
        elif acked < self._held_from:
            self._held_from, rebased = acked, True
        else:
            self._acknowledge(acked)
        self.hello, self.session_id = hello, hello.session
        self.position, self.size, self.exit = hello.replay_from, (hello.cols, hello.rows), None
        self._transition(_Event.HELLO)
        self._queue_input(bytes(self._held))
        return Attached(hello, resumed, len(self._held), rebased)

    def _check_hello(self, hello: Hello) -> None:
        if hello.project != self.options.project:
            raise RemoteProtocolError(f"hello for project {hello.project!r}")
        if hello.created and self._forbade_create:
            raise RemoteProtocolError("a new session was created despite create=0")
        if self.is_resuming and hello.session != self.session_id:
            raise RemoteProtocolError(f"resumed {hello.session!r}, not {self.session_id!r}")
        offset = self._expected_offset
        if offset is not None and not hello.created and hello.replay_from != offset + hello.gap:
            raise RemoteProtocolError(
                f"hello.replay_from {hello.replay_from} is not offset {offset} + gap {hello.gap}"
            )
        resumed_with_id = self.is_resuming and self.options.client_id is not None
        if resumed_with_id and hello.input_acked > self._input_end:
            raise RemoteProtocolError("hello.input_acked counts input never sent")

    def _receive_message(self, message: ServerMessage) -> Received:
        if isinstance(message, Hello):
            raise RemoteProtocolError("a second hello on one connection")
        if isinstance(message, Ack):
            if message.input > self._input_end:
                raise RemoteProtocolError(f"ack of {message.input} input bytes, more than sent")
            self._acknowledge(message.input)
        elif isinstance(message, Resize):
            self.size = (message.cols, message.rows)
        elif isinstance(message, Exit):
            self.exit = message
        return message

    def _acknowledge(self, count: int) -> None:
        if count > self._held_from:
            del self._held[: count - self._held_from]
            self._held_from = count

    # -- sending -----------------------------------------------------------------------------

    def send_input(self, data: bytes) -> None:
        """Type ``data``: held until acknowledged; queued now when attached, else after a hello."""
        if self.state is ClientState.ENDED:
            raise LocalProtocolError("the terminal has ended")
        self._held += data
        if self.state is ClientState.ATTACHED:
            self._queue_input(data)

    def send_resize(self, cols: int, rows: int) -> None:
        """Resize: sent now when attached; every later connect asks for this size."""
        if not (1 <= cols <= MAX_COLS and 1 <= rows <= MAX_ROWS):
            raise LocalProtocolError(f"size {cols}x{rows} outside 1..{MAX_COLS}x1..{MAX_ROWS}")
        self.size = (cols, rows)
        if self.state is ClientState.ATTACHED:
            self._outbox.append(json.dumps(Resize(cols, rows).to_wire()))

    def send_ping(self, t: float | int) -> None:
        """An application ping carrying ``t`` (the pong echoes it)."""
        if self.state is not ClientState.ATTACHED:
            raise LocalProtocolError(f"ping while {self.state.value}")
        self._outbox.append(json.dumps(Ping(t).to_wire()))

    def frames_to_send(self) -> list[Frame]:
        """The frames to write on the current connection, in order (the outbox is emptied)."""
        frames, self._outbox = self._outbox, []
        return frames

    def _queue_input(self, data: bytes) -> None:
        for start in range(0, len(data), MAX_INPUT_FRAME):
            self._outbox.append(data[start : start + MAX_INPUT_FRAME])

    # -- the one place the state changes -------------------------------------------------------

    def _transition(self, event: _Event) -> ClientState:
        state = _TRANSITIONS.get((self.state, event))
        if state is None:
            raise LocalProtocolError(f"cannot {event.value} while {self.state.value}")
        self.state = state
        return state
