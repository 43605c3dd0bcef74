"""The client protocol state machine (pure): position, input ledger, hellos, queries, errors."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.errors import ClientError, LocalProtocolError, RemoteProtocolError
from tether.protocol.client import (
    MAX_INPUT_FRAME,
    PROTOCOL_ERROR,
    Attached,
    ClientOptions,
    ClientProtocol,
    ClientState,
)
from tether.protocol.messages import Ack, Exit, Hello, Pong, Rejected, Resize

SESSION = "session_1754900000000_k3j9x0a1b2c3d4e5f6g7"
BASE_HELLO = Hello(
    session=SESSION, project="web", key=f"{SESSION}:web", created=True, replay_from=0, gap=0,
    head=0, input_acked=0, restore="", cols=80, rows=24, heartbeat=25,
)  # fmt: skip


def hello(**changes: Any) -> str:
    return json.dumps(replace(BASE_HELLO, **changes).to_wire())


def frame(**message: Any) -> str:
    return json.dumps(message)


def new(**options: Any) -> ClientProtocol:
    options.setdefault("client_id", "client-0001")
    return ClientProtocol(ClientOptions("web", **options))


def attached(protocol: ClientProtocol | None = None, **changes: Any) -> ClientProtocol:
    """A protocol through a connect and its hello."""
    protocol = protocol or new()
    protocol.start_connect()
    result = protocol.receive_text(hello(**changes))
    assert isinstance(result, Attached)
    return protocol


def resume(protocol: ClientProtocol, **changes: Any) -> Attached:
    """Lose the connection (1006), connect again, receive a resume hello."""
    protocol.connection_lost(1006)
    query = protocol.start_connect()
    changes.setdefault("created", False)
    changes.setdefault("replay_from", int(query["offset"]) + changes.get("gap", 0))
    changes.setdefault("head", changes["replay_from"])
    result = protocol.receive_text(hello(**changes))
    assert isinstance(result, Attached)
    return result


def sent_input(protocol: ClientProtocol) -> bytes:
    return b"".join(f for f in protocol.frames_to_send() if isinstance(f, bytes))


# ---------------------------------------------------------------------------------- queries
def test_first_query_asks_for_what_the_options_say() -> None:
    protocol = new(size=(100, 30), token="secret")
    states = [protocol.state]
    assert protocol.start_connect() == {
        "project": "web", "client": "client-0001", "cols": "100", "rows": "30", "token": "secret",
    }  # fmt: skip
    assert [*states, protocol.state] == [ClientState.IDLE, ClientState.CONNECTING]


def test_first_query_with_session_offset_and_no_create() -> None:
    protocol = ClientProtocol(ClientOptions("web", session="term-3", offset=12, create=False))
    assert protocol.start_connect() == {
        "project": "web", "session": "term-3", "offset": "12", "create": "0",
    }  # fmt: skip


def test_resume_query_carries_the_canonical_id_position_and_create_0() -> None:
    protocol = attached(new(session="term-3", size=(80, 24)), legacy="term-3")
    protocol.receive_output(b"12345")
    protocol.connection_lost(1006, "gone")
    assert protocol.state is ClientState.IDLE
    assert protocol.start_connect() == {
        "project": "web", "session": SESSION, "client": "client-0001", "cols": "80",
        "rows": "24", "offset": "5", "create": "0",
    }  # fmt: skip


def test_a_failed_first_connect_asks_the_same_again() -> None:
    protocol = new(offset=3)
    first = protocol.start_connect()
    protocol.connection_lost(1013, "busy")
    assert protocol.start_connect() == first
    assert not protocol.is_resuming


def test_resize_sticks_for_later_connects() -> None:
    protocol = attached(new(size=(80, 24)))
    protocol.send_resize(120, 40)
    assert json.loads(protocol.frames_to_send()[0]) == {"type": "resize", "cols": 120, "rows": 40}
    protocol.connection_lost(1006)
    query = protocol.start_connect()
    assert (query["cols"], query["rows"]) == ("120", "40")


def test_a_remote_resize_is_the_size_of_later_connects() -> None:
    protocol = attached(new(size=(80, 24)))
    assert protocol.receive_text(frame(type="resize", cols=90, rows=20)) == Resize(90, 20)
    assert protocol.size == (90, 20)


# --------------------------------------------------------------------------------- position
def test_position_is_replay_from_plus_bytes_received() -> None:
    assert new().key is None and new().position == 0
    protocol = attached(replay_from=40, gap=0, head=50, created=False)
    assert protocol.position == 40
    protocol.receive_output(b"0123456789")
    protocol.receive_output(b"abc")
    assert protocol.position == 53
    assert protocol.key == f"{SESSION}:web"


def test_resume_reports_a_gap_and_moves_to_replay_from() -> None:
    protocol = attached()
    protocol.receive_output(b"x" * 10)
    result = resume(protocol, gap=5)
    assert result.gap == (10, 15) and result.resumed
    assert protocol.position == 15


def test_resume_without_gap_has_none() -> None:
    protocol = attached()
    assert resume(protocol).gap is None


def test_resume_that_starts_elsewhere_is_a_peer_error() -> None:
    protocol = attached()
    protocol.receive_output(b"x" * 10)
    protocol.connection_lost(1006)
    protocol.start_connect()
    for replay_from in (8, 12):  # before the offset (bytes twice), after it without a gap
        wrong = hello(created=False, replay_from=replay_from, head=20)
        with pytest.raises(RemoteProtocolError, match="replay_from"):
            protocol.receive_text(wrong)
    assert protocol.state is ClientState.CONNECTING and protocol.position == 10


def test_a_first_connect_with_an_offset_is_checked_too() -> None:
    protocol = new(session=SESSION, offset=7, create=False)
    protocol.start_connect()
    with pytest.raises(RemoteProtocolError):
        protocol.receive_text(hello(created=False, replay_from=9, head=9))


def test_created_ignores_the_offset() -> None:
    protocol = new(session=SESSION, offset=7)
    protocol.start_connect()
    result = protocol.receive_text(hello(created=True, replay_from=0, head=0))
    assert isinstance(result, Attached) and protocol.position == 0


def test_a_new_shell_despite_create_0_is_a_peer_error() -> None:
    protocol = attached()
    protocol.connection_lost(1006)
    protocol.start_connect()
    with pytest.raises(RemoteProtocolError, match="create=0"):
        protocol.receive_text(hello(created=True))


def test_resuming_into_another_session_or_project_is_a_peer_error() -> None:
    protocol = attached()
    protocol.connection_lost(1006)
    protocol.start_connect()
    other = "session_1754900000000_zzzzzzzzzzzzzzzzzzzz"
    with pytest.raises(RemoteProtocolError, match="resumed"):
        protocol.receive_text(hello(created=False, session=other, key=f"{other}:web"))
    with pytest.raises(RemoteProtocolError, match="project"):
        protocol.receive_text(hello(created=False, project="other", key=f"{SESSION}:other"))


# ----------------------------------------------------------------------------- input ledger
def test_input_is_held_until_acknowledged() -> None:
    protocol = attached()
    protocol.send_input(b"hello")
    assert sent_input(protocol) == b"hello"
    assert (protocol.unacknowledged, protocol.input_acked) == (5, 0)
    assert protocol.receive_text(frame(type="ack", input=3)) == Ack(3)
    assert (protocol.unacknowledged, protocol.input_acked) == (2, 3)
    protocol.receive_text(frame(type="ack", input=2))  # stale: changes nothing
    assert (protocol.unacknowledged, protocol.input_acked) == (2, 3)


def test_input_before_the_first_hello_goes_out_after_it() -> None:
    protocol = new()
    protocol.send_input(b"early")
    assert protocol.frames_to_send() == []
    protocol.start_connect()
    protocol.send_input(b"!")
    assert protocol.frames_to_send() == []
    result = protocol.receive_text(hello())
    assert isinstance(result, Attached) and result.resent == 6 and not result.resumed
    assert sent_input(protocol) == b"early!"


def test_resume_sends_exactly_the_unacknowledged_suffix() -> None:
    protocol = attached()
    protocol.send_input(b"abcdef")
    protocol.frames_to_send()
    protocol.receive_text(frame(type="ack", input=2))
    protocol.send_input(b"gh")  # typed while the connection dies: queued, never written
    result = resume(protocol, input_acked=4)  # the server wrote "abcd" before the loss
    assert result.resent == 4 and not result.rebased
    assert sent_input(protocol) == b"efgh"
    assert protocol.input_acked == 4


def test_input_typed_while_away_is_sent_once_after_the_hello() -> None:
    protocol = attached()
    protocol.connection_lost(1006)
    protocol.send_input(b"away")
    assert protocol.frames_to_send() == []
    protocol.start_connect()
    protocol.receive_text(hello(created=False))
    assert sent_input(protocol) == b"away"


def test_a_reused_client_id_starts_at_the_servers_count() -> None:
    protocol = new(session=SESSION, create=False)
    protocol.send_input(b"xy")
    protocol.start_connect()
    protocol.receive_text(hello(created=False, input_acked=100))
    assert sent_input(protocol) == b"xy" and protocol.input_acked == 100
    protocol.receive_text(frame(type="ack", input=102))
    assert protocol.unacknowledged == 0


def test_a_server_that_counts_afresh_rebases_the_ledger() -> None:
    protocol = attached()
    protocol.send_input(b"abcdef")
    protocol.receive_text(frame(type="ack", input=4))
    result = resume(protocol, input_acked=1)
    assert result.rebased and protocol.input_acked == 1
    assert sent_input(protocol)[-2:] == b"ef"  # what was held is sent again
    protocol.receive_text(frame(type="ack", input=3))
    assert protocol.unacknowledged == 0


def test_without_a_client_id_every_hello_places_the_stream() -> None:
    protocol = attached(ClientProtocol(ClientOptions("web")))
    protocol.send_input(b"abc")
    protocol.frames_to_send()
    result = resume(protocol, input_acked=0)  # a new connection: counted from 0 again
    assert not result.rebased and sent_input(protocol) == b"abc"
    protocol.connection_lost(1006)
    assert "client" not in protocol.start_connect()


def test_large_input_is_split_into_frames() -> None:
    protocol = attached()
    data = bytes(range(256)) * 600
    protocol.send_input(data)
    frames = protocol.frames_to_send()
    rest = len(data) - 2 * MAX_INPUT_FRAME
    assert [len(f) for f in frames] == [MAX_INPUT_FRAME, MAX_INPUT_FRAME, rest]
    assert b"".join(f for f in frames if isinstance(f, bytes)) == data


def test_an_ack_of_bytes_never_sent_is_a_peer_error() -> None:
    protocol = attached()
    protocol.send_input(b"ab")
    with pytest.raises(RemoteProtocolError, match="more than sent"):
        protocol.receive_text(frame(type="ack", input=3))
    assert protocol.unacknowledged == 2


def test_a_resume_hello_counting_bytes_never_sent_is_a_peer_error() -> None:
    protocol = attached()
    protocol.send_input(b"ab")
    protocol.connection_lost(1006)
    protocol.start_connect()
    with pytest.raises(RemoteProtocolError, match="never sent"):
        protocol.receive_text(hello(created=False, input_acked=3))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("type"), st.binary(min_size=1, max_size=20)),
            st.tuples(st.just("write"), st.integers(0, 30)),  # the server writes some bytes
            st.tuples(st.just("ack"), st.just(b"")),
            st.tuples(st.just("cut"), st.just(b"")),
        ),
        max_size=40,
    )
)
def test_exactly_once_input_across_any_cuts(steps: list[tuple[str, Any]]) -> None:
    """An in-memory server writes a prefix of what arrives, acks sometimes, and is cut at random:
    what it wrote in the end is exactly what was typed, in order, once."""
    protocol, typed, written, arrived = attached(), bytearray(), bytearray(), bytearray()
    for action, value in steps:
        if action == "type":
            typed += value
            protocol.send_input(value)
        elif action == "write":
            written += arrived[:value]
            del arrived[:value]
        elif action == "ack" and protocol.state is ClientState.ATTACHED:
            protocol.receive_text(frame(type="ack", input=len(written)))
        elif action == "cut" and protocol.state is ClientState.ATTACHED:
            arrived.clear()  # in flight: lost with the connection
            resume(protocol, input_acked=len(written))
        if protocol.state is ClientState.ATTACHED:
            arrived += sent_input(protocol)
    resume(protocol, input_acked=len(written))
    written += sent_input(protocol)
    assert bytes(written) == bytes(typed)


# ----------------------------------------------------------------------- messages and states
def test_control_messages_are_returned_typed() -> None:
    protocol = attached()
    assert protocol.receive_text(frame(type="pong", t=1.5)) == Pong(1.5)
    assert protocol.receive_text(frame(type="error", code="bad_json", message="m")) == Rejected(
        "bad_json", "m"
    )
    assert protocol.receive_text(frame(type="exit", code=0, signal=None)) == Exit(0, None)
    assert protocol.exit == Exit(0, None)
    assert protocol.receive_text(frame(type="news", what="a newer server")) is None
    assert protocol.state is ClientState.ATTACHED


def test_exit_then_4012_ends() -> None:
    protocol = attached()
    protocol.receive_text(frame(type="exit", code=None, signal=9))
    assert protocol.connection_lost(4012, "shell exited") is ClientState.ENDED
    assert protocol.closed == (4012, "shell exited")
    with pytest.raises(LocalProtocolError):
        protocol.start_connect()
    with pytest.raises(LocalProtocolError):
        protocol.send_input(b"x")


@pytest.mark.parametrize("code", [4004, 4003, 4009, 1000])
def test_a_stop_code_before_the_hello_ends(code: int) -> None:
    protocol = new()
    protocol.start_connect()
    assert protocol.connection_lost(code) is ClientState.ENDED


@pytest.mark.parametrize("code", [1001, 1006, 1011, 1012, 1013, 4129, PROTOCOL_ERROR])
def test_a_retry_code_leaves_room_for_the_next_connect(code: int) -> None:
    protocol = attached()
    assert protocol.connection_lost(code) is ClientState.IDLE


def test_close_ends_and_a_late_loss_changes_nothing() -> None:
    protocol = attached()
    protocol.send_resize(100, 30)
    protocol.close()
    assert protocol.state is ClientState.ENDED and protocol.frames_to_send() == []
    assert protocol.connection_lost(1006) is ClientState.ENDED
    protocol.close()


def test_frames_of_a_lost_connection_are_dropped_but_input_is_kept() -> None:
    protocol = attached()
    protocol.send_input(b"abc")
    protocol.send_ping(1)
    protocol.connection_lost(1006)
    assert protocol.frames_to_send() == [] and protocol.unacknowledged == 3


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[1, 2]",
        frame(type="ack", input="3"),
        frame(type="ack", input=-1),
        frame(type="ack", input=1.5),
        frame(type="ack", input=True),
        frame(type="ack"),
        frame(type="resize", cols=0, rows=24),
        frame(type="exit", code="0", signal=None),
        frame(type=7),
        hello(),  # a second hello
    ],
)
def test_malformed_frames_after_the_hello_are_peer_errors(text: str) -> None:
    protocol = attached()
    protocol.send_input(b"keep")
    with pytest.raises(RemoteProtocolError) as info:
        protocol.receive_text(text)
    assert isinstance(info.value, ClientError) and info.value.code == PROTOCOL_ERROR
    assert len(info.value.reason.encode()) <= 123
    assert protocol.unacknowledged == 4 and protocol.position == 0


@pytest.mark.parametrize(
    "text",
    [
        "",
        "{",
        frame(type="ack", input=0),
        frame(type="news"),
        hello(protocol=2),
        hello(session=""),
        hello(replay_from=5, head=3),
        json.dumps({k: v for k, v in BASE_HELLO.to_wire().items() if k != "input_acked"}),
    ],
)
def test_anything_but_a_valid_hello_first_is_a_peer_error(text: str) -> None:
    protocol = new()
    protocol.start_connect()
    with pytest.raises(RemoteProtocolError):
        protocol.receive_text(text)
    assert protocol.connection_lost(PROTOCOL_ERROR) is ClientState.IDLE
    assert not protocol.is_resuming


def test_output_before_the_hello_is_a_peer_error() -> None:
    protocol = new()
    protocol.start_connect()
    with pytest.raises(RemoteProtocolError, match="before the hello"):
        protocol.receive_output(b"x")


def test_misuse_is_a_local_error() -> None:
    protocol = new()
    with pytest.raises(LocalProtocolError):
        protocol.receive_text(hello())
    with pytest.raises(LocalProtocolError):
        protocol.receive_output(b"x")
    with pytest.raises(LocalProtocolError):
        protocol.connection_lost(1006)  # no connection to lose
    with pytest.raises(LocalProtocolError):
        protocol.send_ping(1)
    with pytest.raises(LocalProtocolError):
        protocol.send_resize(0, 24)
    protocol.start_connect()
    with pytest.raises(LocalProtocolError):
        protocol.start_connect()  # one connection at a time


def test_ping_and_resize_frames() -> None:
    protocol = attached()
    protocol.send_ping(2.5)
    protocol.send_resize(100, 30)
    assert [json.loads(f) for f in protocol.frames_to_send()] == [
        {"type": "ping", "t": 2.5},
        {"type": "resize", "cols": 100, "rows": 30},
    ]
    assert protocol.frames_to_send() == []
