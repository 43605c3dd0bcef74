"""SessionRecord and Tombstone: the JSON-safe form, its version, and what it refuses."""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.errors import RecordError, TetherError
from tether.server.session import SessionInfo, SessionState
from tether.server.store import RECORD_VERSION, SessionRecord, Tombstone

SID = "session_1754900000000_abcdefghijklmnop"


def live(**fields: Any) -> SessionRecord:
    defaults: dict[str, Any] = {
        "key": f"{SID}:web",
        "session_id": SID,
        "project": "web",
        "owner": "alice",
        "pid": 4242,
        "cols": 120,
        "rows": 40,
        "created_at": 1754900000.25,
        "last_activity": 1754900060.5,
        "state": SessionState.DETACHED,
        "input_counts": {"tab-1": 10, "conn-7": 3},
    }
    return SessionRecord(**{**defaults, **fields})


def through_json(data: dict[str, Any]) -> Any:
    return json.loads(json.dumps(data, allow_nan=False))


def test_the_dict_form_is_versioned_json() -> None:
    data = live().to_dict()
    assert data == {
        "version": RECORD_VERSION,
        "key": f"{SID}:web",
        "session_id": SID,
        "project": "web",
        "owner": "alice",
        "pid": 4242,
        "cols": 120,
        "rows": 40,
        "created_at": 1754900000.25,
        "last_activity": 1754900060.5,
        "state": "detached",
        "input_counts": {"tab-1": 10, "conn-7": 3},
        "name": "",
        "end_code": None,
        "end_reason": "",
    }
    assert SessionRecord.from_dict(through_json(data)) == live()


def test_an_ended_record_carries_its_tombstone_reason() -> None:
    ended = live(state=SessionState.ENDED, end_code=4012, end_reason="shell exited", name="x")
    assert SessionRecord.from_dict(through_json(ended.to_dict())) == ended


def test_the_record_does_not_follow_later_changes_of_its_source() -> None:
    counts = {"tab-1": 1}
    record = live(input_counts=counts)
    counts["tab-1"] = 99
    assert record.input_counts == {"tab-1": 1}
    with pytest.raises(TypeError):
        record.input_counts["tab-1"] = 5  # type: ignore[index]


def test_a_record_is_built_from_a_live_session_in_wall_clock_time() -> None:
    info = SessionInfo(
        key=f"{SID}:web",
        session_id=SID,
        project="web",
        owner="alice",
        created_at=1754900000.0,
        cols=100,
        rows=30,
        pid=77,
        last_activity=500.0,  # monotonic
        input_counts=OrderedDict([("tab-1", 5)]),
    )
    session = SimpleNamespace(info=info, state=SessionState.ATTACHED)
    record = SessionRecord.from_session(session, now=510.0, wall_now=1754900100.0)  # type: ignore[arg-type]
    assert (record.cols, record.rows, record.pid, record.owner) == (100, 30, 77, "alice")
    assert record.last_activity == 1754900090.0, "10 s before the wall clock's now"
    assert record.state is SessionState.ATTACHED and record.input_counts == {"tab-1": 5}
    assert (record.name, record.end_code, record.end_reason) == ("", None, "")
    info.input_counts["tab-1"] = 6
    assert record.input_counts == {"tab-1": 5}, "a snapshot, not a view"
    session.state = SessionState.ENDED
    ended = SessionRecord.from_session(
        session,  # type: ignore[arg-type]
        now=510.0,
        wall_now=1754900100.0,
        end=(4013, "session terminated by an operator"),
    )
    assert (ended.end_code, ended.end_reason) == (4013, "session terminated by an operator")


@pytest.mark.parametrize("version", [RECORD_VERSION + 1, 99])
def test_a_newer_version_is_refused(version: int) -> None:
    data = {**live().to_dict(), "version": version}
    with pytest.raises(RecordError, match="newer than this tether reads") as refused:
        SessionRecord.from_dict(data)
    assert refused.value.field == "version" and isinstance(refused.value, TetherError)


@pytest.mark.parametrize("version", [0, -1, "1", 1.0, True, None])
def test_an_unknown_version_is_refused(version: Any) -> None:
    with pytest.raises(RecordError, match="unknown format version"):
        SessionRecord.from_dict({**live().to_dict(), "version": version})


def test_a_missing_version_is_refused() -> None:
    data = live().to_dict()
    del data["version"]
    with pytest.raises(RecordError, match="version is missing"):
        SessionRecord.from_dict(data)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("key", ""),
        ("key", f"{SID}:other"),
        ("owner", None),
        ("pid", -1),
        ("pid", True),
        ("pid", 1.5),
        ("cols", 0),
        ("rows", "24"),
        ("created_at", math.nan),
        ("last_activity", math.inf),
        ("last_activity", "yesterday"),
        ("state", "zombie"),
        ("state", ["attached"]),
        ("input_counts", {"tab-1": -1}),
        ("input_counts", [["tab-1", 1]]),
        ("input_counts", {"tab-1": True}),
        ("name", 3),
        ("end_code", 4012),  # live, yet ended
        ("end_code", 12),
        ("end_reason", "gone"),
    ],
)
def test_a_bad_field_is_refused_by_name(field: str, value: Any) -> None:
    with pytest.raises(RecordError) as refused:
        SessionRecord.from_dict({**live().to_dict(), field: value})
    assert refused.value.field == field
    assert field in str(refused.value)


def test_an_ended_record_without_its_code_is_refused() -> None:
    with pytest.raises(RecordError, match="end_code"):
        SessionRecord.from_dict({**live().to_dict(), "state": "ended"})


def test_missing_unknown_fields_and_non_objects_are_refused() -> None:
    data = live().to_dict()
    del data["pid"]
    with pytest.raises(RecordError, match="pid is missing"):
        SessionRecord.from_dict(data)
    with pytest.raises(RecordError, match="colour is not a field"):
        SessionRecord.from_dict({**live().to_dict(), "colour": "red"})
    with pytest.raises(RecordError, match="not an object"):
        SessionRecord.from_dict([live().to_dict()])


def test_a_tombstone_round_trips_and_refuses_a_newer_version() -> None:
    tombstone = Tombstone(f"{SID}:web", "alice", 4012, "shell exited", 10.0, 310.0)
    data = through_json(tombstone.to_dict())
    assert data["version"] == RECORD_VERSION
    assert Tombstone.from_dict(data) == tombstone
    assert tombstone.is_expired(310.0) and not tombstone.is_expired(309.9)
    with pytest.raises(RecordError, match="newer"):
        Tombstone.from_dict({**data, "version": RECORD_VERSION + 1})
    with pytest.raises(RecordError, match="code"):
        Tombstone.from_dict({**data, "code": "4012"})


_text = st.text(min_size=1, max_size=20)
_times = st.floats(allow_nan=False, allow_infinity=False)
_counts = st.dictionaries(_text, st.integers(min_value=0, max_value=2**63), max_size=5)


@st.composite
def records(draw: st.DrawFn) -> SessionRecord:
    session_id, project = draw(_text), draw(_text)
    state = draw(st.sampled_from(SessionState))
    ended = state is SessionState.ENDED
    return SessionRecord(
        key=f"{session_id}:{project}",
        session_id=session_id,
        project=project,
        owner=draw(_text),
        pid=draw(st.integers(min_value=0, max_value=2**31)),
        cols=draw(st.integers(min_value=1, max_value=10_000)),
        rows=draw(st.integers(min_value=1, max_value=10_000)),
        created_at=draw(_times),
        last_activity=draw(_times),
        state=state,
        input_counts=draw(_counts),
        name=draw(st.text(max_size=30)),
        end_code=draw(st.integers(min_value=1000, max_value=4999)) if ended else None,
        end_reason=draw(st.text(max_size=30)) if ended else "",
    )


@given(records())
def test_any_record_survives_json(record: SessionRecord) -> None:
    read = SessionRecord.from_dict(through_json(record.to_dict()))
    assert read == record
    assert list(read.input_counts) == list(record.input_counts)


def test_a_record_whose_fields_disagree_cannot_be_built() -> None:
    with pytest.raises(RecordError, match="end_code"):
        live(state=SessionState.ENDED)
    with pytest.raises(RecordError, match="key"):
        live(key="other:web")
