"""Parsing of connect parameters, client text frames and server text frames (pure)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.errors import InvalidParameter
from tether.protocol.messages import (
    Ack,
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


def test_connect_params_defaults_and_values() -> None:
    params = parse_connect_params({"project": "web"})
    assert (params.session, params.client, params.offset, params.size, params.create) == (
        None,
        None,
        None,
        None,
        True,
    )
    params = parse_connect_params(
        {
            "project": "web",
            "session": "x",
            "client": "abcdefgh",
            "offset": "12",
            "cols": "100",
            "rows": "40",
            "create": "0",
        }
    )
    assert (params.offset, params.size, params.create) == (12, (100, 40), False)
    assert parse_connect_params({"project": "web", "cols": "100"}).size is None


@pytest.mark.parametrize("offset", ["-1", "1.5", "1e3", "٣", " 1", "99999999999999999999"])
def test_bad_offsets_are_refused(offset: str) -> None:
    with pytest.raises(InvalidParameter, match="offset"):
        parse_connect_params({"project": "web", "offset": offset})


def test_subprotocols() -> None:
    check_subprotocols([])
    check_subprotocols(["other", "tether.v1"])
    with pytest.raises(InvalidParameter, match="subprotocol"):
        check_subprotocols(["tether.v2"])


def test_client_messages() -> None:
    assert parse_client_message('{"type":"resize","cols":80,"rows":24}') == Resize(80, 24)
    assert parse_client_message('{"type":"ping","t":1}') == Ping(1)
    assert parse_client_message('{"type":"input","data":"ls\\r"}') == Input("ls\r")
    for bad in (
        '{"type":"ping","t":true}',
        '{"type":"ping","t":"1"}',
        '{"type":"resize","cols":80,"rows":true}',
        '{"type":"resize","cols":1001,"rows":1}',
        '{"type":"input","data":"\\ud800"}',  # a lone surrogate: not encodable as UTF-8
        '{"type":"input","data":"ok \\udfff"}',
    ):
        result = parse_client_message(bad)
        assert isinstance(result, MessageError) and result.code == "bad_field"
    deep = "[" * 100000 + "]" * 100000
    assert parse_client_message(deep) == MessageError(
        "bad_json", "text frames must be JSON objects"
    )


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
        lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
    )
)
def test_any_json_value_parses_to_a_message_or_an_error(value: object) -> None:
    result = parse_client_message(json.dumps(value))
    assert isinstance(result, Resize | Ping | Input | MessageError)


@given(
    st.dictionaries(
        st.sampled_from(["project", "session", "client", "offset", "cols", "rows", "create", "x"]),
        st.text(max_size=40),
    )
)
def test_any_query_parses_or_names_a_parameter(query: dict[str, str]) -> None:
    try:
        parse_connect_params(query)
    except InvalidParameter as refused:
        assert refused.code == 4000 and refused.parameter in refused.reason
        assert len(refused.reason.encode()) <= 123


# ----------------------------------------------------------------------------- server frames
SESSION = "session_1754900000000_k3j9x0a1b2c3d4e5f6g7"
HELLO = Hello(
    session=SESSION, project="web", key=f"{SESSION}:web", created=True, replay_from=0, gap=0,
    head=0, input_acked=0, restore="", cols=80, rows=24, heartbeat=25,
)  # fmt: skip


def test_hello_to_wire_is_what_the_server_sends() -> None:
    """The JSON fields and their order, as docs/protocol.md section 3 shows them."""
    assert json.dumps(replace(HELLO, legacy="term-3").to_wire()) == (
        '{"type": "hello", "protocol": 1, "session": "' + SESSION + '", "project": "web", '
        '"key": "' + SESSION + ':web", "created": true, "replay_from": 0, "gap": 0, "head": 0, '
        '"input_acked": 0, "restore": "", "cols": 80, "rows": 24, "heartbeat": 25, '
        '"legacy": "term-3"}'
    )
    assert "legacy" not in HELLO.to_wire()


@pytest.mark.parametrize(
    ("message", "wire"),
    [
        (Ack(12), {"type": "ack", "input": 12}),
        (Resize(100, 30), {"type": "resize", "cols": 100, "rows": 30}),
        (Pong(1.5), {"type": "pong", "t": 1.5}),
        (Exit(0, None), {"type": "exit", "code": 0, "signal": None}),
        (Exit(None, 9), {"type": "exit", "code": None, "signal": 9}),
        (Rejected("bad_json", "m"), {"type": "error", "code": "bad_json", "message": "m"}),
        (Ping(3), {"type": "ping", "t": 3}),
        (Input("ls\r"), {"type": "input", "data": "ls\r"}),
    ],
)
def test_to_wire(message: Any, wire: dict[str, Any]) -> None:
    assert message.to_wire() == wire


def test_rejected_and_message_error_send_the_same_frame() -> None:
    error = MessageError("bad_field", "resize.cols must be an integer 1..1000")
    assert Rejected(error.code, error.message).to_wire() == error.to_wire()


@pytest.mark.parametrize(
    "message",
    [
        HELLO,
        replace(HELLO, legacy="t-3", created=False, replay_from=10, gap=4, head=20, heartbeat=0.5),
        Ack(0), Ack(2**40), Resize(1, 1), Resize(1000, 500), Pong(-1), Pong(0.25),
        Exit(1, None), Exit(None, None), Rejected("unknown_type", ""),
    ],
)  # fmt: skip
def test_server_messages_round_trip(message: Any) -> None:
    assert parse_server_message(json.dumps(message.to_wire())) == message


def test_the_servers_own_frames_parse() -> None:
    """What the server builds today (dicts) parses to the typed messages."""
    assert parse_server_message(json.dumps(MessageError("bad_json", "x").to_wire())) == Rejected(
        "bad_json", "x"
    )


def _without(name: str) -> str:
    wire = HELLO.to_wire()
    del wire[name]
    return json.dumps(wire)


def _hello_with(**fields: Any) -> str:
    return json.dumps(HELLO.to_wire() | fields)


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("", "bad_json"),
        ("nope", "bad_json"),
        ("[]", "bad_json"),
        ('"hello"', "bad_json"),
        ("[" * 100000, "bad_json"),
        ('{"input": 1}', "bad_field"),
        ('{"type": 3}', "bad_field"),
        ('{"type": "later"}', "unknown_type"),
        ('{"type": "ack"}', "bad_field"),
        ('{"type": "ack", "input": "12"}', "bad_field"),
        ('{"type": "ack", "input": 1.0}', "bad_field"),
        ('{"type": "ack", "input": -1}', "bad_field"),
        ('{"type": "ack", "input": true}', "bad_field"),
        ('{"type": "ack", "input": null}', "bad_field"),
        ('{"type": "resize", "cols": 80}', "bad_field"),
        ('{"type": "resize", "cols": 80, "rows": 501}', "bad_field"),
        ('{"type": "pong"}', "bad_field"),
        ('{"type": "pong", "t": NaN}', "bad_field"),
        ('{"type": "pong", "t": "1"}', "bad_field"),
        ('{"type": "exit", "code": 0}', "bad_field"),
        ('{"type": "exit", "code": false, "signal": null}', "bad_field"),
        ('{"type": "exit", "code": 1.5, "signal": null}', "bad_field"),
        ('{"type": "error", "code": 1, "message": "m"}', "bad_field"),
        ('{"type": "error", "code": "c"}', "bad_field"),
        (_without("session"), "bad_field"),
        (_without("input_acked"), "bad_field"),
        (_without("heartbeat"), "bad_field"),
        (_without("protocol"), "bad_field"),
        (_hello_with(protocol=2), "bad_field"),
        (_hello_with(protocol=True), "bad_field"),
        (_hello_with(created="yes"), "bad_field"),
        (_hello_with(session=""), "bad_field"),
        (_hello_with(key="other:web"), "bad_field"),
        (_hello_with(replay_from="0"), "bad_field"),
        (_hello_with(replay_from=5, head=4), "bad_field"),
        (_hello_with(replay_from=2, gap=3, head=9), "bad_field"),
        (_hello_with(input_acked=-3), "bad_field"),
        (_hello_with(restore=None), "bad_field"),
        (_hello_with(cols=0), "bad_field"),
        (_hello_with(heartbeat=-1), "bad_field"),
        (_hello_with(heartbeat=True), "bad_field"),
        (_hello_with(legacy=3), "bad_field"),
    ],
)
def test_malformed_server_frames_are_errors(text: str, code: str) -> None:
    result = parse_server_message(text)
    assert isinstance(result, MessageError) and result.code == code, result


def test_unknown_fields_are_ignored() -> None:
    assert parse_server_message('{"type": "ack", "input": 3, "extra": [1]}') == Ack(3)
    assert parse_server_message(_hello_with(future="field")) == HELLO


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
        lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
    )
)
def test_any_json_value_parses_to_a_server_message_or_an_error(value: object) -> None:
    result = parse_server_message(json.dumps(value))
    assert isinstance(result, Hello | Ack | Resize | Pong | Exit | Rejected | MessageError)
