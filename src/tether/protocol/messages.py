"""Typed wire messages: connect parameters, text frames both ways, and parsing with clear errors.

Parsing is pure: a query mapping or a text frame in, a frozen dataclass (or an error) out.
Every message has ``to_wire()``: the JSON object that goes on the wire. Client text frames
(docs/protocol.md, section 4) are :class:`Resize`, :class:`Ping`, :class:`Input`; server text
frames (section 3) are :class:`Hello`, :class:`Ack`, :class:`Resize`, :class:`Pong`,
:class:`Exit`, :class:`Rejected`. Parsers return a :class:`MessageError` for a malformed frame and
never raise.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tether.errors import InvalidParameter
from tether.protocol.ids import composite_key, is_valid_client_id, is_valid_project_id

MAX_COLS = 1000
MAX_ROWS = 500
SUBPROTOCOL = "tether.v1"
_KNOWN_PARAMS = {"project", "session", "client", "offset", "cols", "rows", "create", "token"}


@dataclass(frozen=True)
class ConnectParams:
    """The validated query of a ``/ws/terminal`` request (the session id is still raw)."""

    project: str
    session: str | None
    client: str | None
    offset: int | None
    size: tuple[int, int] | None
    create: bool


def _short(value: str) -> str:
    return value if len(value) <= 32 else value[:29] + "..."


def _integer(name: str, raw: str, low: int, high: int) -> int:
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19:
        raise InvalidParameter(name, f"not a whole number: {_short(raw)!r}")
    value = int(raw)
    if not low <= value <= high:
        raise InvalidParameter(name, f"must be {low}..{high}")
    return value


def parse_connect_params(query: Mapping[str, str]) -> ConnectParams:
    """Validate the query parameters of docs/protocol.md, section 2 (raises InvalidParameter)."""
    project = query.get("project")
    if project is None or project == "":
        raise InvalidParameter("project", "required")
    if not is_valid_project_id(project):
        raise InvalidParameter("project", f"invalid project id {_short(project)!r}")
    client = query.get("client") or None
    if client is not None and not is_valid_client_id(client):
        raise InvalidParameter("client", f"invalid client id {_short(client)!r}")
    offset_raw = query.get("offset")
    offset = _integer("offset", offset_raw, 0, 2**62) if offset_raw not in (None, "") else None
    cols_raw, rows_raw = query.get("cols"), query.get("rows")
    cols = _integer("cols", cols_raw, 1, MAX_COLS) if cols_raw not in (None, "") else None
    rows = _integer("rows", rows_raw, 1, MAX_ROWS) if rows_raw not in (None, "") else None
    size = (cols, rows) if cols is not None and rows is not None else None
    create_raw = query.get("create")
    if create_raw not in (None, "", "0", "1", "true", "false"):
        raise InvalidParameter("create", "must be 0 or 1")
    return ConnectParams(
        project=project,
        session=query.get("session"),
        client=client,
        offset=offset,
        size=size,
        create=create_raw not in ("0", "false"),
    )


def creation_size(params: ConnectParams) -> tuple[int, int]:
    """The size a new session starts with: what was given, 80×24 by default."""
    return params.size or (80, 24)


def check_subprotocols(offered: list[str]) -> None:
    """A client offering subprotocols must offer ``tether.v1`` (none offered means v1)."""
    if offered and SUBPROTOCOL not in offered:
        raise InvalidParameter("subprotocol", f"{SUBPROTOCOL} required")


# ----------------------------------------------------------------------------- client frames
@dataclass(frozen=True)
class Resize:
    """``resize``: the client resizes the terminal, or the server says another client did."""

    cols: int
    rows: int

    def to_wire(self) -> dict[str, Any]:
        return {"type": "resize", "cols": self.cols, "rows": self.rows}


@dataclass(frozen=True)
class Ping:
    """``ping``: an application-level liveness check; the server echoes ``t`` in a pong."""

    t: float | int

    def to_wire(self) -> dict[str, Any]:
        return {"type": "ping", "t": self.t}


@dataclass(frozen=True)
class Input:
    """``input``: input as UTF-8 text (binary frames are the usual way)."""

    data: str

    def to_wire(self) -> dict[str, Any]:
        return {"type": "input", "data": self.data}


@dataclass(frozen=True)
class MessageError:
    """A rejected text frame: the server answers ``{"type": "error", ...}`` and goes on."""

    code: str
    message: str

    def to_wire(self) -> dict[str, Any]:
        return {"type": "error", "code": self.code, "message": self.message}


ClientMessage = Resize | Ping | Input | MessageError


def _is_utf8_encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_client_message(text: str) -> ClientMessage:
    """Parse one client text frame (docs/protocol.md, section 4).

    Errors are returned, not raised."""
    try:
        message = json.loads(text)
    except (ValueError, RecursionError):
        return MessageError("bad_json", "text frames must be JSON objects")
    if not isinstance(message, dict):
        return MessageError("bad_json", "text frames must be JSON objects")
    kind = message.get("type")
    if kind == "resize":
        return _parse_resize(message)
    if kind == "ping":
        t = message.get("t")
        if isinstance(t, bool) or not isinstance(t, int | float) or not _finite(t):
            return MessageError("bad_field", "ping.t must be a number")
        return Ping(t)
    if kind == "input":
        data = message.get("data")
        # JSON's \ud800 escapes can name lone surrogates, which no UTF-8 can carry to the PTY.
        if not isinstance(data, str) or not _is_utf8_encodable(data):
            return MessageError("bad_field", "input.data must be a string of Unicode text")
        return Input(data)
    if not isinstance(kind, str):
        return MessageError("bad_field", "type must be a string")
    return MessageError("unknown_type", f"unknown message type {_short(kind)!r}")


def _finite(value: float | int) -> bool:
    return not isinstance(value, float) or math.isfinite(value)


def _parse_resize(message: dict[str, Any]) -> ClientMessage:
    cols, rows = message.get("cols"), message.get("rows")
    for name, value, high in (("cols", cols, MAX_COLS), ("rows", rows, MAX_ROWS)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
            return MessageError("bad_field", f"resize.{name} must be an integer 1..{high}")
    assert isinstance(cols, int) and isinstance(rows, int)
    return Resize(cols, rows)


# ----------------------------------------------------------------------------- server frames
PROTOCOL_VERSION = 1


@dataclass(frozen=True)
class Hello:
    """``hello``: the first frame of every admitted connection (docs/protocol.md, section 3).

    ``replay_from`` is the stream position of the first output byte that follows; ``gap`` the
    bytes between the client's offset and ``replay_from`` that are lost; ``head`` where buffered
    output ended; ``input_acked`` how many input bytes of this client id were written. ``restore``
    is written to the screen before the replay and moves no position. ``legacy`` is set only when
    the session id was migrated.
    """

    session: str
    project: str
    key: str
    created: bool
    replay_from: int
    gap: int
    head: int
    input_acked: int
    restore: str
    cols: int
    rows: int
    heartbeat: float | int
    legacy: str | None = None
    protocol: int = PROTOCOL_VERSION

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"type": "hello", "protocol": self.protocol}
        for name in _HELLO_FIELDS:
            wire[name] = getattr(self, name)
        if self.legacy is not None:
            wire["legacy"] = self.legacy
        return wire


@dataclass(frozen=True)
class Ack:
    """``ack``: input bytes of this client id (or connection) written to the terminal so far."""

    input: int

    def to_wire(self) -> dict[str, Any]:
        return {"type": "ack", "input": self.input}


@dataclass(frozen=True)
class Pong:
    """``pong``: the answer to a ``ping``, echoing its ``t``."""

    t: float | int

    def to_wire(self) -> dict[str, Any]:
        return {"type": "pong", "t": self.t}


@dataclass(frozen=True)
class Exit:
    """``exit``: the shell ended (exit status, or the signal that killed it); 4012 follows."""

    code: int | None
    signal: int | None

    def to_wire(self) -> dict[str, Any]:
        return {"type": "exit", "code": self.code, "signal": self.signal}


@dataclass(frozen=True)
class Rejected:
    """``error``: the server rejected a frame of the client's; the connection stays open.

    (What the server sends for a :class:`MessageError`; a different class, because a
    :class:`MessageError` from :func:`parse_server_message` means the *server's* frame was bad.)
    """

    code: str
    message: str

    def to_wire(self) -> dict[str, Any]:
        return {"type": "error", "code": self.code, "message": self.message}


ServerMessage = Hello | Ack | Resize | Pong | Exit | Rejected

_HELLO_FIELDS = (
    "session", "project", "key", "created", "replay_from", "gap", "head", "input_acked",
    "restore", "cols", "rows", "heartbeat",
)  # fmt: skip


class _BadField(Exception):
    """Internal: a server frame's field is missing or mistyped (becomes a MessageError)."""


def parse_server_message(text: str) -> ServerMessage | MessageError:
    """Parse one server text frame (docs/protocol.md, section 3).

    A malformed frame (not a JSON object, a missing or mistyped field, a count that is not a
    whole number ≥ 0) gives a :class:`MessageError` with code ``bad_json`` or ``bad_field``; a
    well-formed frame of a type this version does not know gives ``unknown_type`` (a client
    ignores those, for forward compatibility). Never raises.
    """
    try:
        message = json.loads(text)
    except (ValueError, RecursionError):
        return MessageError("bad_json", "text frames must be JSON objects")
    if not isinstance(message, dict):
        return MessageError("bad_json", "text frames must be JSON objects")
    kind = message.get("type")
    if not isinstance(kind, str):
        return MessageError("bad_field", "type must be a string")
    parse = _SERVER_PARSERS.get(kind)
    if parse is None:
        return MessageError("unknown_type", f"unknown message type {_short(kind)!r}")
    try:
        return parse(message)
    except _BadField as exc:
        return MessageError("bad_field", f"{kind}.{exc}")


def _count(message: dict[str, Any], name: str) -> int:
    value = message.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _BadField(f"{name} must be a whole number ≥ 0")
    return value


def _text(message: dict[str, Any], name: str) -> str:
    value = message.get(name)
    if not isinstance(value, str):
        raise _BadField(f"{name} must be a string")
    return value


def _number(message: dict[str, Any], name: str) -> float | int:
    value = message.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not _finite(value):
        raise _BadField(f"{name} must be a number")
    return value


def _optional_integer(message: dict[str, Any], name: str) -> int | None:
    if name not in message:
        raise _BadField(f"{name} is missing")
    value = message[name]
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise _BadField(f"{name} must be an integer or null")
    return value


def _parse_hello(message: dict[str, Any]) -> Hello:
    if message.get("protocol") != PROTOCOL_VERSION or isinstance(message.get("protocol"), bool):
        raise _BadField(f"protocol must be {PROTOCOL_VERSION}")
    created = message.get("created")
    if not isinstance(created, bool):
        raise _BadField("created must be true or false")
    legacy = message.get("legacy")
    if legacy is not None and not isinstance(legacy, str):
        raise _BadField("legacy must be a string")
    size = _parse_server_resize(message)
    heartbeat = _number(message, "heartbeat")
    if heartbeat < 0:
        raise _BadField("heartbeat must be ≥ 0")
    replay_from, gap, head = (_count(message, name) for name in ("replay_from", "gap", "head"))
    if gap > replay_from or replay_from > head:
        raise _BadField("replay_from must lie within [gap, head]")
    session, project, key = (_text(message, name) for name in ("session", "project", "key"))
    if not session:
        raise _BadField("session must not be empty")
    if key != composite_key(session, project):
        raise _BadField("key must be session:project")
    input_acked, restore = _count(message, "input_acked"), _text(message, "restore")
    return Hello(
        session, project, key, created, replay_from, gap, head, input_acked, restore,
        size.cols, size.rows, heartbeat, legacy,
    )  # fmt: skip


def _parse_server_resize(message: dict[str, Any]) -> Resize:
    size = _parse_resize(message)
    if isinstance(size, MessageError):
        raise _BadField(size.message.removeprefix("resize."))
    assert isinstance(size, Resize)
    return size


_SERVER_PARSERS: dict[str, Callable[[dict[str, Any]], ServerMessage]] = {
    "hello": _parse_hello,
    "ack": lambda message: Ack(_count(message, "input")),
    "resize": _parse_server_resize,
    "pong": lambda message: Pong(_number(message, "t")),
    "exit": lambda message: Exit(
        _optional_integer(message, "code"), _optional_integer(message, "signal")
    ),
    "error": lambda message: Rejected(_text(message, "code"), _text(message, "message")),
}
