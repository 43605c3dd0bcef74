"""Typed wire messages: connect parameters, client text frames, and parsing with clear errors.

Parsing is pure: a query mapping or a text frame in, a frozen dataclass (or an error) out.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tether.errors import InvalidParameter
from tether.protocol.ids import is_valid_client_id, is_valid_project_id

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
    cols: int
    rows: int


@dataclass(frozen=True)
class Ping:
    t: float | int


@dataclass(frozen=True)
class Input:
    data: str


@dataclass(frozen=True)
class MessageError:
    """A rejected text frame: the server answers ``{"type": "error", ...}`` and goes on."""

    code: str
    message: str

    def to_wire(self) -> dict[str, Any]:
        return {"type": "error", "code": self.code, "message": self.message}


ClientMessage = Resize | Ping | Input | MessageError


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
        if not isinstance(data, str):
            return MessageError("bad_field", "input.data must be a string")
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
