"""Property fuzzing of every parser that reads peer input: ids, connect parameters, client frames
and server frames.

Each parser, fed anything at all, either answers a well-formed value or refuses in the
documented way (InvalidParameter → 4000 with a short reason; MessageError → an ``error`` frame);
it never raises anything else, never echoes a credential, and never lets an id become a path.
"""

from __future__ import annotations

import json
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tether.errors import InvalidParameter
from tether.protocol.codes import MAX_REASON_BYTES, CloseCode, clip_reason, retry_after_seconds
from tether.protocol.ids import (
    composite_key,
    is_current_session_id,
    is_valid_client_id,
    is_valid_project_id,
    resolve_session_id,
    split_key,
)
from tether.protocol.messages import (
    MAX_COLS,
    MAX_ROWS,
    Ack,
    ConnectParams,
    Exit,
    Hello,
    Input,
    MessageError,
    Ping,
    Pong,
    Rejected,
    Resize,
    check_subprotocols,
    parse_client_message,
    parse_connect_params,
    parse_server_message,
)

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SECRET = "fuzz-credential-0123456789"
PARAMETERS = ("project", "session", "client", "offset", "cols", "rows", "create", "token")
SERVER_TYPES = ["hello", "ack", "resize", "pong", "exit", "error", "", "ACK"]

# Text that hurts parsers: every plane, surrogates, controls, and the characters ids allow.
hostile_text = st.one_of(
    st.text(max_size=300),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=300),
    st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), max_size=4),
    st.text(alphabet="session_0123456789:.-/\\ \x00abcdefNnUuLl", max_size=140),
    st.from_regex(r"session_[0-9]{12,14}_[a-z0-9]{5,33}(:[a-z]{1,5})?", fullmatch=True),
    st.sampled_from(["", "null", "NULL", "undefined", "NaN", "..", "../../etc/passwd", ":", "::"]),
)
owners = st.text(min_size=1, max_size=40)
project_ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", fullmatch=True)


def _short_reason(error: InvalidParameter) -> None:
    assert error.code == CloseCode.BAD_REQUEST
    assert len(error.reason.encode("utf-8")) <= MAX_REASON_BYTES
    assert "\n" not in error.reason and "\r" not in error.reason


# ----------------------------------------------------------------------------- ids
@FUZZ
@given(hostile_text, owners, project_ids)
def test_any_session_value_resolves_or_is_refused_with_a_short_reason(
    raw: str, owner: str, project: str
) -> None:
    try:
        ref = resolve_session_id(raw, owner=owner, project=project)
    except InvalidParameter as error:
        _short_reason(error)
        assert error.parameter == "session"
        assert len(raw) <= 32 or raw[:33] not in error.reason, "at most 32 characters echoed"
        return
    if ref.session_id is not None:
        assert is_current_session_id(ref.session_id)
        assert "/" not in ref.session_id and ".." not in ref.session_id
        key = composite_key(ref.session_id, project)
        assert split_key(key) == (ref.session_id, project)
        again = resolve_session_id(raw, owner=owner, project=project)
        assert again == ref, "resolution is deterministic"


@FUZZ
@given(hostile_text)
def test_id_predicates_and_split_key_never_raise_unexpectedly(raw: str) -> None:
    assert isinstance(is_valid_project_id(raw), bool)
    assert isinstance(is_valid_client_id(raw), bool)
    assert isinstance(is_current_session_id(raw), bool)
    if is_valid_project_id(raw):
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", raw, flags=re.ASCII)
        assert "/" not in raw and raw not in (".", "..")
    try:
        session_id, project = split_key(raw)
    except ValueError as error:
        assert len(str(error)) < 200
    else:
        assert composite_key(session_id, project) == raw


@FUZZ
@given(hostile_text, hostile_text, owners)
def test_the_same_value_never_names_two_owners_sessions(raw: str, project: str, owner: str) -> None:
    if not is_valid_project_id(project):
        return
    try:
        mine = resolve_session_id(raw, owner=owner, project=project)
        theirs = resolve_session_id(raw, owner=owner + "-other", project=project)
    except InvalidParameter:
        return
    inner = raw.rpartition(":")[0] if ":" in raw else raw
    if mine.session_id is not None and not is_current_session_id(inner):
        assert mine.legacy == raw  # migrated: the owner is part of the hash
        assert mine.session_id != theirs.session_id


# ----------------------------------------------------------------------------- query
query_values = st.one_of(
    hostile_text,
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.sampled_from(["0", "1", "true", "false", "80", "24", "1000", "500", "١٢", "+1", " 1"]),
)
queries = st.dictionaries(
    st.one_of(st.sampled_from(PARAMETERS), st.text(max_size=10)), query_values, max_size=9
)


@FUZZ
@given(queries)
def test_any_query_parses_or_names_the_bad_parameter(query: dict[str, str]) -> None:
    query = {**query, "token": SECRET}
    try:
        params = parse_connect_params(query)
    except InvalidParameter as error:
        _short_reason(error)
        assert error.parameter in PARAMETERS
        assert SECRET not in error.reason, "the credential is never echoed"
        return
    assert isinstance(params, ConnectParams)
    assert is_valid_project_id(params.project)
    assert params.client is None or is_valid_client_id(params.client)
    assert params.offset is None or 0 <= params.offset <= 2**62
    if params.size is not None:
        cols, rows = params.size
        assert 1 <= cols <= MAX_COLS and 1 <= rows <= MAX_ROWS
    assert isinstance(params.create, bool)


@FUZZ
@given(st.lists(st.text(max_size=20), max_size=5))
def test_any_offered_subprotocols(offered: list[str]) -> None:
    try:
        check_subprotocols(offered)
    except InvalidParameter as error:
        _short_reason(error)
        assert offered and "tether.v1" not in offered
    else:
        assert not offered or "tether.v1" in offered


# ----------------------------------------------------------------------------- client frames
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
message_like = st.fixed_dictionaries(
    {"type": st.sampled_from(["resize", "ping", "input", "hello", "", "RESIZE"]) | json_values},
    optional={
        "cols": json_values | st.integers(0, 1001),
        "rows": json_values | st.integers(0, 501),
        "t": json_values,
        "data": json_values | st.text(max_size=100),
    },
)


def _check(message: object) -> None:
    if isinstance(message, Resize):
        assert 1 <= message.cols <= MAX_COLS and 1 <= message.rows <= MAX_ROWS
        assert type(message.cols) is int and type(message.rows) is int
    elif isinstance(message, Ping):
        json.dumps({"type": "pong", "t": message.t}, allow_nan=False)  # echoable as is
    elif isinstance(message, Input):
        assert isinstance(message.data, str)
    else:
        assert isinstance(message, MessageError)
        wire = message.to_wire()
        assert wire["type"] == "error" and re.fullmatch(r"[a-z_]+", wire["code"])
        assert len(json.dumps(wire)) < 300, "errors never echo a large frame back"


@FUZZ
@given(message_like)
def test_any_json_object_frame(message: dict[str, object]) -> None:
    _check(parse_client_message(json.dumps(message)))


@FUZZ
@given(st.one_of(json_values.map(json.dumps), st.text(max_size=500), st.binary().map(repr)))
def test_any_text_frame(text: str) -> None:
    _check(parse_client_message(text))


def test_deeply_nested_frames_are_bad_json_not_a_crash() -> None:
    for depth in (1_000, 100_000):
        for text in ("[" * depth + "]" * depth, '{"a":' * depth + "1" + "}" * depth):
            _check(parse_client_message(text))
    huge = json.dumps({"type": "x" * 1_000_000})
    message = parse_client_message(huge)
    assert isinstance(message, MessageError) and len(message.message) < 100


@FUZZ
@given(st.text(max_size=400))
def test_close_reasons_are_clipped_to_whole_characters(reason: str) -> None:
    clipped = clip_reason(reason)
    assert len(clipped.encode("utf-8", errors="surrogatepass")) <= MAX_REASON_BYTES
    assert reason.startswith(clipped)
    if len(reason.encode("utf-8", errors="surrogatepass")) <= MAX_REASON_BYTES:
        assert clipped == reason
    assert retry_after_seconds(reason) is None or retry_after_seconds(reason) >= 0


# ----------------------------------------------------------------------------- server frames
_count_like = json_values | st.integers(0, 2**40)
server_message_like = st.fixed_dictionaries(
    {"type": st.sampled_from(SERVER_TYPES) | json_values},
    optional={
        name: _count_like | st.text(max_size=20)
        for name in (
            "input", "cols", "rows", "t", "code", "signal", "message", "protocol", "session",
            "project", "key", "created", "replay_from", "gap", "head", "input_acked", "restore",
            "heartbeat", "legacy",
        )
    },
)  # fmt: skip


def _check_server(message: object) -> None:
    """A server frame parses to a well-typed message, or a short MessageError; never raises."""
    if isinstance(message, MessageError):
        assert message.code in ("bad_json", "bad_field", "unknown_type")
        assert len(message.message) < 200
        return
    assert isinstance(message, Hello | Ack | Resize | Pong | Exit | Rejected)
    wire = message.to_wire()
    assert parse_server_message(json.dumps(wire)) == message  # what parses, re-sends the same
    if isinstance(message, Hello):
        assert 0 <= message.gap <= message.replay_from <= message.head
        assert message.input_acked >= 0 and message.session
    if isinstance(message, Ack):
        assert type(message.input) is int and message.input >= 0


@FUZZ
@given(server_message_like)
def test_any_json_object_server_frame(message: dict[str, object]) -> None:
    _check_server(parse_server_message(json.dumps(message)))


@FUZZ
@given(st.one_of(json_values.map(json.dumps), st.text(max_size=500), st.binary().map(repr)))
def test_any_server_text_frame(text: str) -> None:
    _check_server(parse_server_message(text))


def test_deeply_nested_server_frames_are_bad_json_not_a_crash() -> None:
    for depth in (1_000, 100_000):
        for text in ("[" * depth + "]" * depth, '{"a":' * depth + "1" + "}" * depth):
            _check_server(parse_server_message(text))
