"""The client library against an in-process fake server (wire-level behaviour, fast, exact),
and against a real server (through a TCP proxy, or a relay that corrupts the stream).

The fake (tests/client/fake_server.py) speaks the wire protocol over a real aiohttp WebSocket on
127.0.0.1; its "shell" echoes input back as output, so the tests can check the exact output stream
and exactly-once input. Tests wait on conditions re-checked at every event, never on sleeps.
"""

from __future__ import annotations

import asyncio
import gc
import json
import re
import warnings
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from tests.client.fake_server import FakeServer, Relay, until
from tests.support.exactness import assert_replay_matches, assert_typed_exactly_once
from tests.support.server import ServerProcess, start_server
from tether.client import Connected, Disconnected, Gap, Latency, ServerError, Terminal, connect
from tether.client import terminal as client
from tether.errors import ConnectFailed, SessionEnded
from tether.protocol.policy import PolicyEvent, ReconnectPolicy, State
from tether.tools.check_probe import Probe
from tether.tools.proxy import TcpProxy


# ------------------------------------------------------------------------------------ tests
@pytest.fixture
async def server() -> AsyncIterator[FakeServer]:
    fake = await FakeServer().start()
    yield fake
    await fake.stop()


async def collect(term: Terminal, size: int, timeout: float = 10) -> bytes:
    data = bytearray()
    async with asyncio.timeout(timeout):
        async for chunk in term.output():
            data += chunk
            if len(data) >= size:
                break
    return bytes(data)


async def reconnected(term: Terminal, server: FakeServer, connects: int = 2) -> None:
    await until(lambda: len(server.connects) >= connects and term.is_connected, term, server)


@pytest.mark.parametrize(
    ("given", "ws", "http"),
    [
        ("ws://h:1/ws/terminal", "ws://h:1/ws/terminal", "http://h:1"),
        ("ws://h:1", "ws://h:1/ws/terminal", "http://h:1"),
        ("ws://h:1/", "ws://h:1/ws/terminal", "http://h:1"),
        ("http://h:1", "ws://h:1/ws/terminal", "http://h:1"),
        ("https://h", "wss://h/ws/terminal", "https://h"),
        ("wss://h/base/ws/terminal/", "wss://h/base/ws/terminal", "https://h/base"),
        ("HTTP://127.0.0.1:4001/tether", "ws://127.0.0.1:4001/tether/ws/terminal", "http://127.0.0.1:4001/tether"),
        ("127.0.0.1:4001", "ws://127.0.0.1:4001/ws/terminal", "http://127.0.0.1:4001"),
    ],
)  # fmt: skip
def test_url_forms(given: str, ws: str, http: str) -> None:
    assert client.websocket_url(given) == ws
    assert client.http_url(given) == http


@pytest.mark.parametrize("bad", ["ftp://h:1", "ws://", "http:///x"])
def test_bad_urls_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="not a tether URL"):
        client.websocket_url(bad)


async def test_fetch_projects(server: FakeServer) -> None:
    assert await client.fetch_projects(server.url + "/ws/terminal") == ["default", "other"]


async def test_fetch_from_dead_url_fails_clearly() -> None:
    refused = r"^cannot reach the server at http://127\.0\.0\.1:9: connection refused"
    with pytest.raises(ConnectFailed, match=refused):
        await client.fetch_projects("ws://127.0.0.1:9")


async def test_connect_send_and_receive(server: FakeServer) -> None:
    async with connect(server.url, project="default", cols=100, rows=30) as term:
        assert term.session_id and term.session_id.startswith("session_")
        assert term.key == f"{term.session_id}:default"
        assert term.hello["created"] is True
        assert (term.cols, term.rows) == (100, 30)
        await term.send("hello ")
        await term.send(b"world")
        assert await collect(term, 11) == b"hello world"
        assert term.position == 11
        assert term.unacknowledged == 0  # the fake acks before it echoes
        assert term.input_acked == 11
    query = server.connects[0]
    assert "create" not in query and "offset" not in query
    assert query["client"] == term.client_id
    assert term.state is State.STOPPED


async def test_await_form_and_detach(server: FakeServer) -> None:
    term = await connect(server.url, project="default")
    await term.send("x")
    await collect(term, 1)
    session_id, position = await term.detach()
    assert (session_id, position) == (term.session_id, 1)
    again = await connect(server.url, project="default", session=session_id, offset=position)
    await again.send("y")
    assert await collect(again, 1) == b"y"  # resumed at 1: nothing replayed
    await again.close()


async def test_exact_stream_across_many_drops(server: FakeServer) -> None:
    async with connect(server.url, project="default", time_scale=0.001) as term:
        sent = bytearray()
        for round_ in range(8):
            piece = f"<{round_}:{'x' * round_ * 100}>".encode()
            sent += piece
            await term.send(piece)
            if round_ % 2:
                await server.drop_all()
        received = await collect(term, len(sent))
        assert received == bytes(sent)
        resumes = [q for q in server.connects[1:]]
        assert resumes and all(q["create"] == "0" for q in resumes)
        assert all(q["client"] == term.client_id for q in resumes)
        assert all(q["session"] == term.session_id for q in resumes)


async def test_resume_sends_its_position_as_offset(server: FakeServer) -> None:
    async with connect(server.url, project="default", time_scale=0.001) as term:
        await term.send("12345")
        await collect(term, 5)
        await server.drop_all()
        await reconnected(term, server)
        assert server.connects[1]["offset"] == "5"
        assert term.hello["replay_from"] == 5


async def test_input_written_but_not_acked_is_not_sent_again(server: FakeServer) -> None:
    async with connect(server.url, project="default", time_scale=0.001) as term:
        server.send_acks = False
        await term.send("abc")
        session = server.sessions[term.session_id or ""]
        await until(lambda: session.input_counts.get(term.client_id) == 3, server)
        assert term.unacknowledged == 3
        server.send_acks = True
        await server.drop_all()
        await reconnected(term, server)
        assert term.hello["input_acked"] == 3
        assert term.unacknowledged == 0
        await term.send("d")
        assert await collect(term, 4) == b"abcd"
        assert bytes(session.output) == b"abcd"


async def test_input_lost_with_the_connection_is_sent_again(server: FakeServer) -> None:
    async with connect(server.url, project="default", time_scale=0.001) as term:
        server.accept_input = False
        await term.send("xyz")
        await until(lambda: server.input_frames == 1, server)  # arrived, and was not written
        server.accept_input = True
        await server.drop_all()
        assert await collect(term, 3) == b"xyz"
        assert bytes(server.sessions[term.session_id or ""].output) == b"xyz"


async def test_input_sent_while_disconnected_is_delivered_once(server: FakeServer) -> None:
    async with connect(server.url, project="default", time_scale=0.05) as term:
        await server.drop_all()
        await until(lambda: not term.is_connected, term)
        await term.send("while-away")
        assert await collect(term, 10) == b"while-away"


async def test_4004_on_resume_is_surfaced_never_replaced(server: FakeServer) -> None:
    term = await connect(server.url, project="default", time_scale=0.001)
    server.sessions.clear()  # "the server restarted": the session is gone
    await server.drop_all()
    ended = await term.wait_closed()
    assert isinstance(ended, SessionEnded) and ended.code == 4004
    assert term.state is State.STOPPED
    with pytest.raises(SessionEnded):
        await collect(term, 1)
    with pytest.raises(SessionEnded):
        await term.send("x")
    assert server.sessions == {}  # no new shell was started
    await term.close()


async def test_stop_code_on_live_connection_ends(server: FakeServer) -> None:
    term = await connect(server.url, project="default", time_scale=0.001)
    await server.drop_all(code=4013)
    ended = await term.wait_closed()
    assert ended is not None and ended.code == 4013
    assert len(server.connects) == 1
    await term.close()


@pytest.mark.parametrize(("code", "error"), [(4003, SessionEnded), (1013, ConnectFailed)])
async def test_first_connect_refusal_raises(server: FakeServer, code: int, error: type) -> None:
    server.refusals.append((code, "nope"))
    with pytest.raises(error) as info:
        await connect(server.url, project="default")
    assert info.value.code == code


async def test_dead_url_raises_connect_failed() -> None:
    refused = r"^cannot reach the server at ws://127\.0\.0\.1:9/ws/terminal: connection refused"
    with pytest.raises(ConnectFailed, match=refused):
        await connect("http://127.0.0.1:9", project="default", connect_timeout=2)


async def test_backoff_schedule_and_breaker_through_refusals(server: FakeServer) -> None:
    term = await connect(server.url, project="default", time_scale=0.001)
    events: list[PolicyEvent] = []
    term.add_listener(lambda e: events.append(e) if isinstance(e, PolicyEvent) else None)
    server.refusals.extend([(1013, "busy")] * 6)
    await server.drop_all()
    await reconnected(term, server, 8)
    waits = [round(e.delay / 0.001) for e in events if e.state is State.WAITING and e.delay]
    assert waits == [1, 2, 4, 8, 16]
    opened = [e for e in events if e.state is State.OPEN]  # the 5th failure, then the trial's
    assert [(e.failures, e.code, round(e.delay or 0, 6)) for e in opened] == [
        (5, 1013, 0.03),
        (6, 1013, 0.03),
    ]
    states = [e.state for e in events]
    assert states[-2:] == [State.HALF_OPEN, State.CONNECTED]
    assert len(server.connects) == 1 + 6 + 1
    await term.close()


async def test_retry_after_is_honoured_in_real_seconds(server: FakeServer) -> None:
    term = await connect(server.url, project="default", time_scale=0.001)
    server.refusals.append((4129, "retry-after=1"))
    loop = asyncio.get_running_loop()
    await server.drop_all()
    await until(lambda: len(server.connects) == 2, server)
    refused_at = loop.time()
    await reconnected(term, server, 3)
    assert loop.time() - refused_at >= 0.95
    await term.close()


async def test_1012_reconnects_at_once(server: FakeServer) -> None:
    term = await connect(server.url, project="default")  # unscaled: 1 s would be visible
    events: list[Any] = []
    term.add_listener(events.append)
    await server.drop_all(code=1012)
    async with asyncio.timeout(0.9):
        await reconnected(term, server)
    waiting = [e for e in events if isinstance(e, PolicyEvent) and e.state is State.WAITING]
    assert waiting[0].delay == 0 and waiting[0].code == 1012
    assert any(isinstance(e, Disconnected) and e.code == 1012 for e in events)
    await term.close()


async def test_reconnect_now_forces_half_open_trial(server: FakeServer) -> None:
    slow_open = ReconnectPolicy(time_scale=0.001, open_seconds=30_000)  # open for a real 30 s
    term = await connect(server.url, project="default", policy=slow_open)
    server.refusals.extend([(1013, "busy")] * 5)
    events: list[PolicyEvent] = []
    term.add_listener(lambda e: events.append(e) if isinstance(e, PolicyEvent) else None)
    await server.drop_all()
    await until(lambda: term.state is State.OPEN, term)
    assert term.reconnect_now()
    await reconnected(term, server, 7)
    assert [e.state for e in events][-2:] == [State.HALF_OPEN, State.CONNECTED]
    await term.close()


async def test_ping_measures_latency_and_heartbeat_emits_it(server: FakeServer) -> None:
    async with connect(server.url, project="default", ping_interval=0.05) as term:
        assert 0 <= await term.ping() < 5
        seen: list[Latency] = []
        term.add_listener(lambda e: seen.append(e) if isinstance(e, Latency) else None)
        await until(lambda: bool(seen), term)
        assert term.latency is not None


async def test_gap_is_surfaced_and_screen_reset_in_screen_mode(server: FakeServer) -> None:
    async with connect(server.url, project="default", time_scale=0.001) as term:
        await term.send("0123456789")
        await collect(term, 10)
        events: list[Any] = []
        term.add_listener(events.append)
        session = server.sessions[term.session_id or ""]
        server.accept_input = False
        await server.drop_all()
        session.append(b"ABCDEFGHIJ")  # output while away ...
        session.dropped = 15  # ... of which the first 5 bytes are no longer buffered
        server.accept_input = True
        await reconnected(term, server)
        gaps = [e for e in events if isinstance(e, Gap)]
        assert gaps == [Gap(10, 15)] and gaps[0].lost == 5
        assert term.position == 20
        chunks = []
        async with asyncio.timeout(5):
            async for chunk in term.output(screen=True):
                chunks.append(chunk)
                if b"".join(chunks).endswith(b"FGHIJ"):
                    break
        assert chunks[0] == client.SCREEN_RESET
        assert b"".join(chunks[1:]) == b"FGHIJ"


async def test_events_iterator_ends_when_stopped(server: FakeServer) -> None:
    term = await connect(server.url, project="default")
    events = term.events()
    closing = asyncio.create_task(term.close())  # runs once the iteration below waits
    async with asyncio.timeout(5):
        seen = [event async for event in events]
    await closing
    assert isinstance(seen[-1], PolicyEvent) and seen[-1].state is State.STOPPED
    assert [event async for event in term.events()] == []  # stopped: nothing more comes


async def test_connected_event_reports_resume(server: FakeServer) -> None:
    term = await connect(server.url, project="default", time_scale=0.001)
    seen: list[Connected] = []
    term.add_listener(lambda e: seen.append(e) if isinstance(e, Connected) else None)
    await server.drop_all()
    await until(lambda: bool(seen), term)
    assert seen[0].resumed and seen[0].hello["session"] == term.session_id
    await term.close()


# ------------------------------------------------------------------ against the real server
@pytest.fixture(scope="module")
def real_server() -> Iterator[ServerProcess]:
    with start_server() as running:
        yield running


async def reconnected_through(proxy: TcpProxy, term: Terminal) -> None:
    accepted = proxy.statistics().accepted
    await until(lambda: proxy.statistics().accepted > accepted and term.is_connected, term)


async def test_real_server_exact_stream_and_exactly_once_input_through_cuts(
    real_server: ServerProcess,
) -> None:
    async with TcpProxy("127.0.0.1", real_server.port) as proxy:
        term = await connect(proxy.url(), project="default", time_scale=0.001)
        probe = Probe(term)
        await probe.shell_pid()
        await term.send("stty -echo; echo cat-rea''dy; cat > typed.txt\r")
        await probe.wait_for(re.compile(rb"cat-ready"))
        typed = bytearray()
        for index in range(300):
            line = f"line-{index:04d}-{'z' * (index % 50)}\n".encode()
            typed += line
            await term.send(line)
            if index % 50 == 7:  # (few enough resumes to stay under the server's storm limit)
                proxy.abort_all()  # the connection dies with input in flight
            if index % 50 == 10:  # ... a few lines were typed while away; wait for the resume
                await reconnected_through(proxy, term)
            if index == 150:
                proxy.cut()  # unreachable for a while: input keeps queueing
                await until(lambda: not term.is_connected, term)
                await proxy.restore()
        await assert_typed_exactly_once(term, probe, typed)
        assert proxy.statistics().aborted >= 6
        session = str(term.session_id)
        await term.detach()
        await probe.drain()
    # A fresh connection replays from 0: the stream the cut connections delivered was exact.
    replay = await connect(
        real_server.ws_url, project="default", session=session, offset=0, create=False
    )
    await assert_replay_matches(replay, probe)


async def test_real_server_restart_surfaces_4004(real_server: ServerProcess) -> None:
    term = await connect(real_server.ws_url, project="default", time_scale=0.01)
    pid = await Probe(term).shell_pid()
    await asyncio.to_thread(real_server.restart)
    ended = await asyncio.wait_for(term.wait_closed(), 30)
    assert ended is not None and ended.code == 4004
    with pytest.raises(SessionEnded):
        await term.send("echo still there?\r")
    stats = await client.fetch_json(real_server.base_url, "/stats/sessions")
    assert stats["sessions"] == []  # no new shell was silently started
    assert all(q_pid != pid for q_pid in [s.get("pid") for s in stats["sessions"]])
    await term.close()


# ------------------------------------------------------------- a server that breaks the protocol
GOOD_HELLO = {
    "type": "hello", "protocol": 1, "session": "session_1754900000000_fake0000000000000099",
    "project": "default", "key": "session_1754900000000_fake0000000000000099:default",
    "created": True, "replay_from": 0, "gap": 0, "head": 0, "input_acked": 0, "restore": "",
    "cols": 80, "rows": 24, "heartbeat": 25,
}  # fmt: skip
BAD_HELLOS = [
    "not json",
    json.dumps({"type": "ack", "input": 0}),
    json.dumps(GOOD_HELLO | {"input_acked": "0"}),
    json.dumps(GOOD_HELLO | {"replay_from": 5}),
    json.dumps({key: value for key, value in GOOD_HELLO.items() if key != "session"}),
]
BAD_FRAMES = [
    '{"type": "ack", "input": "3"}',
    '{"type": "ack", "input": 99999}',  # more than was ever sent
    '{"type": "resize", "cols": "wide", "rows": 24}',
    '{"type": "exit", "code": "zero"}',
    "{not json",
    "[]",
]


@pytest.mark.parametrize("bad", BAD_HELLOS)
async def test_a_malformed_first_hello_fails_the_connect_clearly(
    server: FakeServer, bad: str
) -> None:
    server.hellos.append(bad)
    with pytest.raises(ConnectFailed, match="bad hello") as info:
        await connect(server.url, project="default")
    assert info.value.code == 1002
    await until(lambda: server.close_codes == [1002], server)  # the client said why


@pytest.mark.parametrize("bad", BAD_FRAMES)
async def test_a_malformed_frame_closes_with_1002_and_resumes_exactly(
    server: FakeServer, bad: str
) -> None:
    async with connect(server.url, project="default", time_scale=0.001) as term:
        events: list[Any] = []
        term.add_listener(events.append)
        await term.send("abc")
        assert await collect(term, 3) == b"abc"
        server.inject(bad)
        await reconnected(term, server)
        lost = [e for e in events if isinstance(e, Disconnected)]
        assert [e.code for e in lost] == [1002] and lost[0].reason
        assert server.close_codes == [1002]
        assert server.connects[1]["offset"] == "3" and server.connects[1]["create"] == "0"
        await term.send("def")
        assert await collect(term, 3) == b"def"
        assert bytes(server.sessions[term.session_id or ""].output) == b"abcdef"


async def test_an_unknown_message_type_is_ignored(server: FakeServer) -> None:
    async with connect(server.url, project="default") as term:
        events: list[Any] = []
        term.add_listener(events.append)
        server.inject('{"type": "news", "from": "a newer server"}')
        await term.send("x")
        assert await collect(term, 1) == b"x"  # frames come in order: the news came first
        assert not [e for e in events if isinstance(e, Disconnected)]
        assert len(server.connects) == 1 and term.is_connected


async def test_a_malformed_hello_on_resume_is_a_failed_attempt(server: FakeServer) -> None:
    term = await connect(server.url, project="default", time_scale=0.001)
    events: list[PolicyEvent] = []
    term.add_listener(lambda e: events.append(e) if isinstance(e, PolicyEvent) else None)
    await term.send("12")
    await collect(term, 2)
    server.hellos.append('{"type": "hello"}')
    await server.drop_all()
    await reconnected(term, server, 3)
    failed = [e for e in events if e.state is State.WAITING and e.code == 1002]
    assert len(failed) == 1 and failed[0].failures == 1
    await term.send("3")
    assert await collect(term, 1) == b"3"
    await term.close()


async def test_real_server_behind_a_corrupting_relay(real_server: ServerProcess) -> None:
    """A proxy injects a malformed frame: the Terminal drops that connection (1002) and resumes
    the same shell by offset, with an exact stream and every keystroke once."""
    async with Relay(real_server.ws_url) as relay:
        term = await connect(relay.url, project="default", time_scale=0.001)
        events: list[Any] = []
        term.add_listener(events.append)
        probe = Probe(term)
        pid = await probe.shell_pid()
        for bad in ('{"type": "ack", "input": "oops"}', "\x00not json"):
            connects = relay.connects
            await relay.inject(bad)
            await until(lambda: relay.connects > connects and term.is_connected, term, relay)  # noqa: B023
            assert await probe.shell_pid() == pid
        assert [e.code for e in events if isinstance(e, Disconnected)] == [1002, 1002]
        hello = term.protocol.hello
        assert hello is not None and not hello.created
        session = str(term.session_id)
        await term.detach()
        await probe.drain()
    replay = await connect(
        real_server.ws_url, project="default", session=session, offset=0, create=False
    )
    await assert_replay_matches(replay, probe)


async def test_input_and_resize_after_close_go_nowhere(server: FakeServer) -> None:
    term = await connect(server.url, project="default")
    await term.close()
    await term.send("late")
    await term.resize(100, 30)
    with pytest.raises(ConnectFailed, match="not connected"):
        await term.ping()
    assert server.input_frames == 0


async def test_resize_is_sent_and_clamped_to_the_protocols_limits(server: FakeServer) -> None:
    async with connect(server.url, project="default", time_scale=0.001) as term:
        seen: list[ServerError] = []
        term.add_listener(lambda e: seen.append(e) if isinstance(e, ServerError) else None)
        await term.resize(5000, 0)
        await until(lambda: bool(seen), term)  # the fake answers every resize with an error
        assert (term.cols, term.rows) == (1000, 1)
        await server.drop_all()
        await reconnected(term, server)
        assert (server.connects[1]["cols"], server.connects[1]["rows"]) == ("1000", "1")


async def test_a_terminal_whose_shell_exited_leaves_nothing_open(
    real_server: ServerProcess,
) -> None:
    term = await connect(real_server.ws_url, project=real_server.project)
    await term.send("exit 3\r")
    ended = await term.wait_closed()
    assert ended is not None and ended.code == 4012
    assert term.exit_status is not None and term.exit_status.code == 3
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del term  # never closed by the caller: the shell's exit released everything
        gc.collect()
    assert [str(w.message) for w in caught] == []
