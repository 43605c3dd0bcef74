"""The serialisable facts about a session and about an ended one: :class:`SessionRecord` and
:class:`Tombstone`.

Both are frozen and versioned. ``to_dict()`` gives a JSON-safe ``dict`` (what a store writes);
``from_dict()`` reads one back and raises :class:`~tether.errors.RecordError` for anything it
cannot vouch for: a missing, unknown or mistyped field, a non-finite time, or a ``version`` other
than :data:`RECORD_VERSION` (a newer tether wrote it: refusing is safer than dropping fields).

Times in records are wall-clock seconds (``time.time()``), since a record outlives the process
(and its monotonic clock) that wrote it; :meth:`SessionRecord.from_session` converts the
session's monotonic ``last_activity``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from tether.errors import RecordError
from tether.protocol.ids import composite_key
from tether.server.session import Session, SessionState

RECORD_VERSION = 1
"""The format of :meth:`SessionRecord.to_dict` and :meth:`Tombstone.to_dict`; bumped on any
change a reader of the previous format would misread."""

NAME_MAX = 64
"""The longest display name (characters) a session may be given."""


def check_display_name(name: object) -> str | None:
    """Why ``name`` cannot be a session's display name (None: it can; empty clears it)."""
    if not isinstance(name, str):
        return "name must be a string"
    if len(name) > NAME_MAX:
        return f"name must be at most {NAME_MAX} characters"
    if not name.isprintable():
        return "name must be printable (no control characters)"
    return None


@dataclass(frozen=True)
class SessionRecord:
    """What a store holds about one session (wall-clock times; see the module docstring)."""

    key: str
    session_id: str
    project: str
    owner: str
    pid: int
    cols: int
    rows: int
    created_at: float
    last_activity: float
    state: SessionState
    input_counts: Mapping[str, int] = field(default_factory=dict, hash=False)
    name: str = ""  # a display name (users may rename a session later); empty: none
    end_code: int | None = None  # set once ended: the tombstone's close code and reason
    end_reason: str = ""
    version: int = RECORD_VERSION

    def __post_init__(self) -> None:
        # A read-only copy: the caller's dict (a live session's) may change after this.
        object.__setattr__(self, "input_counts", MappingProxyType(dict(self.input_counts)))
        self.check()

    @classmethod
    def from_session(
        cls,
        session: Session,
        *,
        now: float,
        wall_now: float,
        end: tuple[int, str] | None = None,
    ) -> SessionRecord:
        """The record of a live session; ``now`` is the session clock's reading (monotonic),
        ``wall_now`` the wall clock's at the same moment. ``end``: ``(code, reason)`` once the
        session has ended."""
        info = session.info
        end_code, end_reason = end if end is not None else (None, "")
        return cls(
            key=info.key,
            session_id=info.session_id,
            project=info.project,
            owner=info.owner,
            pid=info.pid,
            cols=info.cols,
            rows=info.rows,
            created_at=info.created_at,
            last_activity=wall_now - (now - info.last_activity),
            state=session.state,
            input_counts=info.input_counts,
            name=info.name,
            end_code=end_code,
            end_reason=end_reason,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (``from_dict`` reads it back equal)."""
        return {
            "version": self.version,
            "key": self.key,
            "session_id": self.session_id,
            "project": self.project,
            "owner": self.owner,
            "pid": self.pid,
            "cols": self.cols,
            "rows": self.rows,
            "created_at": self.created_at,
            "last_activity": self.last_activity,
            "state": self.state.value,
            "input_counts": dict(self.input_counts),
            "name": self.name,
            "end_code": self.end_code,
            "end_reason": self.end_reason,
        }

    @classmethod
    def from_dict(cls, data: Any) -> SessionRecord:
        """Read a record; :class:`~tether.errors.RecordError` names what is wrong with it."""
        fields = _Fields(data, "session record", _RECORD_FIELDS)
        return cls(
            key=fields.text("key"),
            session_id=fields.text("session_id"),
            project=fields.text("project"),
            owner=fields.text("owner"),
            pid=fields.count("pid"),
            cols=fields.count("cols", minimum=1),
            rows=fields.count("rows", minimum=1),
            created_at=fields.time("created_at"),
            last_activity=fields.time("last_activity"),
            state=fields.state("state"),
            input_counts=fields.input_counts("input_counts"),
            name=fields.optional_text("name"),
            end_code=fields.optional_code("end_code"),
            end_reason=fields.text("end_reason", allow_empty=True),
        )

    def check(self) -> None:
        """Raise :class:`~tether.errors.RecordError` unless the fields agree with each other
        (run on construction)."""
        if self.key != composite_key(self.session_id, self.project):
            raise RecordError("session record", "key", "is not session_id:project")
        if (self.state is SessionState.ENDED) != (self.end_code is not None):
            raise RecordError("session record", "end_code", "is set if and only if ended")
        if self.end_code is None and self.end_reason:
            raise RecordError("session record", "end_reason", "is set but the session is live")


@dataclass(frozen=True)
class Tombstone:
    """What is left of an ended session for a while: why it ended, and whose it was."""

    key: str
    owner: str
    code: int
    reason: str
    ended_at: float
    expires_at: float

    def is_expired(self, now: float) -> bool:
        return self.expires_at <= now

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (``from_dict`` reads it back equal)."""
        return {
            "version": RECORD_VERSION,
            "key": self.key,
            "owner": self.owner,
            "code": self.code,
            "reason": self.reason,
            "ended_at": self.ended_at,
            "expires_at": self.expires_at,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Tombstone:
        """Read a tombstone; :class:`~tether.errors.RecordError` names what is wrong with it."""
        fields = _Fields(data, "tombstone", _TOMBSTONE_FIELDS)
        return cls(
            key=fields.text("key"),
            owner=fields.text("owner"),
            code=fields.count("code", minimum=1000),
            reason=fields.text("reason", allow_empty=True),
            ended_at=fields.time("ended_at"),
            expires_at=fields.time("expires_at"),
        )


_RECORD_FIELDS = frozenset(SessionRecord.__dataclass_fields__)
_TOMBSTONE_FIELDS = frozenset(Tombstone.__dataclass_fields__) | {"version"}
_STATES = {state.value: state for state in SessionState}


class _Fields:
    """Typed reads from a dict that came from outside, each failing with a :class:`RecordError`
    that names the field."""

    def __init__(self, data: Any, what: str, expected: frozenset[str]) -> None:
        if not isinstance(data, Mapping):
            raise RecordError(what, None, f"is a {type(data).__name__}, not an object")
        self.data, self.what = data, what
        version = self._get("version")
        if type(version) is not int or version < 1:
            raise RecordError(what, "version", f"unknown format version {version!r}")
        if version > RECORD_VERSION:
            raise RecordError(
                what,
                "version",
                f"format {version} is newer than this tether reads ({RECORD_VERSION}): upgrade it",
            )
        unexpected = sorted(str(name) for name in data if name not in expected)
        if unexpected:
            raise RecordError(what, unexpected[0], "is not a field of this format")

    def _get(self, name: str) -> Any:
        if name not in self.data:
            raise RecordError(self.what, name, "is missing")
        return self.data[name]

    def _fail(self, name: str, must: str) -> RecordError:
        return RecordError(self.what, name, f"must be {must}, not {self.data[name]!r:.40}")

    def text(self, name: str, allow_empty: bool = False) -> str:
        value = self._get(name)
        if not isinstance(value, str) or not (value or allow_empty):
            raise self._fail(name, "a string" if allow_empty else "a non-empty string")
        return value

    def optional_text(self, name: str) -> str:
        """A string that records written before the field existed lack: empty then."""
        return self.text(name, allow_empty=True) if name in self.data else ""

    def count(self, name: str, minimum: int = 0) -> int:
        value = self._get(name)
        if type(value) is not int or value < minimum:  # bool is an int: refused too
            raise self._fail(name, f"an integer >= {minimum}")
        return value

    def optional_code(self, name: str) -> int | None:
        return None if self._get(name) is None else self.count(name, minimum=1000)

    def time(self, name: str) -> float:
        value = self._get(name)
        if type(value) not in (int, float) or not math.isfinite(value):
            raise self._fail(name, "a finite number of seconds")
        return float(value)

    def state(self, name: str) -> SessionState:
        value = self._get(name)
        state = _STATES.get(value) if isinstance(value, str) else None
        if state is None:
            raise self._fail(name, "one of " + ", ".join(_STATES))
        return state

    def input_counts(self, name: str) -> dict[str, int]:
        value = self._get(name)
        if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and type(v) is int and v >= 0 for k, v in value.items()
        ):
            raise self._fail(name, "an object of client ids to byte counts")
        return dict(value)
