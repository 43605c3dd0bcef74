"""tether.tools.loadkit: figures, the verified user on a real server, the probe, embedded server."""

from __future__ import annotations

import asyncio
import random

import pytest

from tests.client.fake_server import FakeServer, until
from tether.tools.embedded import EmbeddedServer
from tether.tools.loadkit import (
    KeyPacer,
    Recorder,
    ServerProbe,
    ToolReport,
    Verdict,
    first_project,
    is_loopback_url,
    percentile,
    summarize,
)
from tether.tools.loaduser import (
    Refused,
    TypingUser,
    UserFailed,
    Wire,
    new_http,
    read_at_least,
    session_id,
)


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.99) == 99
    assert percentile(values, 1.0) == 100
    assert percentile([7.0], 0.99) == 7


def test_summarize_in_milliseconds() -> None:
    figures = summarize([0.001, 0.002, 0.003, 0.004])
    assert figures["count"] == 4
    assert figures["p50"] == 2.0
    assert figures["max"] == 4.0
    assert summarize([]) == {"count": 0}


def test_recorder_caps_kept_errors_but_counts_all() -> None:
    recorder = Recorder(max_errors=2)
    for index in range(5):
        recorder.error(f"e{index}")
    assert recorder.counts["errors"] == 5
    assert recorder.errors == ["e0", "e1"]


def test_report_passes_only_when_every_counted_verdict_passes() -> None:
    report = ToolReport("load", "ws://x", "p", {})
    assert not report.passed  # nothing measured is not a pass
    report.verdicts = [
        Verdict("a", "correctness", "", "", True),
        Verdict("b", "tether", "", "", False),
    ]
    assert report.passed
    report.strict = True
    assert not report.passed
    assert report.to_json()["verdicts"][1]["name"] == "b"


def test_key_pacer_keeps_within_the_rule() -> None:
    pacer = KeyPacer(threshold=3, window=10, margin=0)
    for now in (0.0, 1.0, 2.0):
        assert pacer.delay(now) == 0
        pacer.record(now)
    assert pacer.delay(3.0) == 7.0
    assert pacer.delay(10.5) == 0  # the first attempt left the window


def test_session_ids_are_current_format() -> None:
    sid = session_id()
    prefix, stamp, random_part = sid.split("_")
    assert prefix == "session" and len(stamp) == 13 and len(random_part) == 20


def test_loopback_urls() -> None:
    assert is_loopback_url("ws://127.0.0.1:4001/ws/terminal")
    assert is_loopback_url("http://localhost:4001")
    assert not is_loopback_url("http://example.com:4001")


async def test_typing_user_survives_cuts_with_exact_stream() -> None:
    async with EmbeddedServer() as server, new_http() as http:
        project = await first_project(server.base_url)
        recorder = Recorder()
        user = TypingUser(http, server.base_url, project, recorder, rng=random.Random(1))
        await user.start()
        for abrupt in (True, False, True):
            await user.type_line(6, (0.0, 0.005))
            await user.cut(abrupt=abrupt)
        await user.send(b"xy")  # typed, then cut before Enter: re-sent exactly once
        await user.cut(abrupt=True)
        await user.type_line(3, (0.0, 0.005))
        assert await user.verify_replay()
        await user.finish()
        assert user.failed is None
        assert user.acked >= user.sent - 1  # all but the final ^D, whose ack may not come
        assert recorder.counts["reconnect_successes"] == 4
        assert recorder.counts["clean_exits"] == 1
        assert user.verified == len(user.expected)
        assert user.transcript.count(b"xy") == 2  # its echo, and cat's copy of the line


async def test_typing_user_detects_a_foreign_byte() -> None:
    async with EmbeddedServer() as server, new_http() as http:
        project = await first_project(server.base_url)
        recorder = Recorder()
        user = TypingUser(http, server.base_url, project, recorder)
        await user.start()
        # Another client of the same session types a byte the user did not: the check fails.
        params = {"project": project, "session": user.session, "create": "0"}
        intruder = await Wire.open(http, user.url, params)
        assert isinstance(intruder, Wire)
        await intruder.send(b"Z")
        with pytest.raises(UserFailed, match="stream differs"):
            await user.type_line(3, (0.0, 0.0), timeout=5)
        await intruder.close()
        await user.close()
        probe = ServerProbe(server.base_url)
        await probe.locate()
        assert probe.is_local
        sample = await probe.sample()
        assert sample.shells == 1 and sample.fds is not None and sample.rss_bytes > 0
        assert recorder.counts["errors"] == 1


async def test_wire_reports_refusals() -> None:
    async with EmbeddedServer() as server, new_http() as http:
        from tether.client import websocket_url

        url = websocket_url(server.base_url)
        refused = await Wire.open(http, url, {"project": "nope"})
        assert not isinstance(refused, Wire) and refused.code == 4003
        gone = await Wire.open(
            http, url, {"project": "default", "session": session_id(), "create": "0"}
        )
        assert not isinstance(gone, Wire) and gone.code == 4004
        await asyncio.sleep(0)


@pytest.mark.parametrize("bad", ["not json", '{"type": "hello", "protocol": 1}', '{"type": "ack"}'])
async def test_wire_refuses_a_malformed_hello_without_crashing(bad: str) -> None:
    server = await FakeServer().start()
    try:
        server.hellos.append(bad)
        async with new_http() as http:
            result = await Wire.open(http, server.url + "/ws/terminal", {"project": "default"})
        assert isinstance(result, Refused) and result.code == 1002 and result.reason
        await until(lambda: server.close_codes == [1002], server)
    finally:
        await server.stop()


async def test_wire_ends_with_1002_on_a_malformed_frame_and_resumes_with_its_protocol() -> None:
    server = await FakeServer().start()
    try:
        async with new_http() as http:
            url = server.url + "/ws/terminal"
            wire = await Wire.open(http, url, {"project": "default", "client": "load_client1"})
            assert isinstance(wire, Wire) and wire.hello.created
            assert await wire.send(b"abc")
            assert await read_at_least(wire, 3) == b"abc"
            server.inject('{"type": "ack", "input": 1000}')  # more than was ever sent
            assert await wire.receive() == Refused(1002, "ack of 1000 input bytes, more than sent")
            again = await Wire.open(http, url, wire.protocol)  # resumes: offset 3, create=0
            assert isinstance(again, Wire) and not again.hello.created
            assert server.connects[1]["offset"] == "3" and server.connects[1]["create"] == "0"
            assert await again.send(b"d")
            assert await read_at_least(again, 1) == b"d"
            await again.close()
        assert bytes(next(iter(server.sessions.values())).output) == b"abcd"
    finally:
        await server.stop()
