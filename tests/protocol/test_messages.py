"""Parsing of connect parameters and client text frames (pure)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.errors import InvalidParameter
from tether.protocol.messages import (
    Input,
    MessageError,
    Ping,
    Resize,
    check_subprotocols,
    parse_client_message,
    parse_connect_params,
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
