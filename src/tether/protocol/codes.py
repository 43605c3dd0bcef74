"""WebSocket close codes (docs/protocol.md, section 6), loaded from the one shared table.

``close_codes.json`` is read by this module and bundled into the browser client, so that the
server, the Python client and the JavaScript client agree on what every code means.
"""

from __future__ import annotations

import enum
import json
import re
from importlib import resources
from typing import Any, Literal

Action = Literal["stop", "retry", "retry_now"]

_TABLE: dict[str, Any] = json.loads(
    resources.files("tether.protocol").joinpath("close_codes.json").read_text(encoding="utf-8")
)


class CloseCode(enum.IntEnum):
    """Every close code the server sends or a client may see."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    ABNORMAL = 1006
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_REQUEST = 4000
    UNAUTHORIZED = 4001
    FORBIDDEN = 4003
    NOT_FOUND = 4004
    REPLACED = 4009
    OWNER_LIMIT = 4010
    EXITED = 4012
    TERMINATED = 4013
    STORM = 4129


MAX_REASON_BYTES = 123
_RETRY_AFTER = re.compile(r"retry-after=(\d+)")


def action_for(code: int) -> Action:
    """What a client must do after a close with ``code``: stop, retry with backoff, or retry now."""
    entry = _TABLE["codes"].get(str(code))
    if entry is not None:
        action: Action = entry["action"]
        return action
    for span in _TABLE["ranges"]:
        if span["from"] <= code <= span["to"]:
            ranged: Action = span["action"]
            return ranged
    default: Action = _TABLE["default_action"]
    return default


def is_stop_code(code: int) -> bool:
    """True when a client must not reconnect after ``code``."""
    return action_for(code) == "stop"


def retry_after_seconds(reason: str) -> int | None:
    """The ``retry-after=N`` value of a close reason, if any."""
    match = _RETRY_AFTER.search(reason or "")
    return int(match.group(1)) if match else None


def clip_reason(reason: str) -> str:
    """Cut a close reason to the 123 UTF-8 bytes a close frame can carry, never mid-character."""
    encoded = reason.encode("utf-8")
    if len(encoded) <= MAX_REASON_BYTES:
        return reason
    return encoded[:MAX_REASON_BYTES].decode("utf-8", errors="ignore")
