"""docs/protocol.md, sections 1–4 against a real server with real bash in real PTYs."""

from __future__ import annotations

import asyncio
import re

import pytest

from tests.support.server import inprocess_server
from tests.support.wsclient import connect, must_connect, must_refuse, strip_ansi
from tether.protocol.ids import is_current_session_id, migrate_legacy_id

pytestmark = pytest.mark.timeout(60)


async def shell_pid(conn, marker: str = "PID") -> int:
    await conn.send(f"echo {marker}=$$\r")
    text = strip_ansi(await conn.read_until(re.compile(marker).pattern + "=", 10))
    await conn.read_until(f"\n{marker}=", 10)
    match = re.findall(rf"\n{marker}=(\d+)", strip_ansi(bytes(conn.output)))
    assert match, text
    return int(match[-1])


async def test_new_session_hello_and_shell_answers() -> None:
    async with inprocess_server(heartbeat=7) as srv:
        conn = await must_connect(srv.ws_url, project="default", cols=100, rows=30)
        hello = conn.hello
        assert hello["type"] == "hello" and hello["protocol"] == 1
        assert hello["created"] is True
        assert is_current_session_id(hello["session"])
        assert hello["key"] == f"{hello['session']}:default"
        assert hello["project"] == "default"
        assert (hello["replay_from"], hello["gap"], hello["input_acked"]) == (0, 0, 0)
        assert hello["restore"] == ""
        assert (hello["cols"], hello["rows"]) == (100, 30)
        assert hello["heartbeat"] == 7
        assert "legacy" not in hello
        await conn.send("stty size; echo READY-$((6*7))\r")
        await conn.read_until("READY-42")
        assert "30 100" in strip_ansi(bytes(conn.output))
        await conn.close()


async def test_resume_by_offset_reaches_same_shell_with_exact_stream() -> None:
    async with inprocess_server() as srv:
        first = await must_connect(srv.ws_url, project="default")
        pid = await shell_pid(first)
        await first.send("for i in $(seq 1 200); do echo line-$i; done\r")
        await first.read_until("line-200\r\n")
        position = first.position
        stream = bytes(first.output)
        await first.close()
        await asyncio.sleep(0.1)
        again = await must_connect(
            srv.ws_url, project="default", session=first.hello["session"], offset=position, create=0
        )
        assert again.hello["created"] is False
        assert again.hello["replay_from"] == position and again.hello["gap"] == 0
        assert again.hello["restore"] == ""
        assert await shell_pid(again, "AGAIN") == pid
        full = await must_connect(srv.ws_url, project="default", session=first.hello["session"])
        await full.read_until(b"AGAIN=")
        assert bytes(full.output).startswith(stream), "replay without offset is the whole stream"
        assert full.hello["replay_from"] == 0
        for conn in (again, full):
            await conn.close()


@pytest.mark.parametrize("nullish", ["", "null", "undefined", "NaN", "NULL", "Undefined"])
async def test_nullish_ids_always_create_fresh_sessions(nullish: str) -> None:
    async with inprocess_server() as srv:
        one = await must_connect(srv.ws_url, project="default", session=nullish)
        two = await must_connect(srv.ws_url, project="default", session=nullish)
        assert one.hello["created"] and two.hello["created"]
        assert one.hello["session"] != two.hello["session"]
        assert await shell_pid(one) != await shell_pid(two)
        await one.close()
        await two.close()


@pytest.mark.parametrize(
    "legacy",
    [
        "3f2504e0-4f89-11d3-9a0c-0305e82c3301",
        "term-3",
        "42",
        "session-1754900000000-x",
        "term-3:default",
    ],
)
async def test_legacy_ids_migrate_deterministically_to_the_same_shell(legacy: str) -> None:
    async with inprocess_server() as srv:
        inner = legacy.rsplit(":", 1)[0] if legacy.endswith(":default") else legacy
        expected = migrate_legacy_id(inner, owner="anonymous", project="default")
        one = await must_connect(srv.ws_url, project="default", session=legacy)
        assert one.hello["session"] == expected and one.hello["legacy"] == legacy
        assert one.hello["created"] is True
        pid = await shell_pid(one)
        await one.close()
        two = await must_connect(srv.ws_url, project="default", session=legacy, create=0)
        assert two.hello["session"] == expected and two.hello["created"] is False
        assert await shell_pid(two, "TWO") == pid
        await two.close()
    if "1754900000000" in legacy:
        assert expected.startswith("session_1754900000000_")


async def test_old_composite_for_another_project_is_refused() -> None:
    async with inprocess_server() as srv:
        refused = await must_refuse(srv.ws_url, project="default", session="term-3:other")
        assert refused.code == 4000 and "session" in refused.reason


async def test_same_session_id_under_two_projects_is_two_shells(tmp_path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    projects = [f"web={tmp_path / 'a'}", f"api={tmp_path / 'b'}"]
    async with inprocess_server(projects=projects) as srv:
        sid = "session_1754900000000_abcdef123456"
        web = await must_connect(srv.ws_url, project="web", session=sid)
        api = await must_connect(srv.ws_url, project="api", session=sid)
        assert web.hello["key"] == f"{sid}:web" and api.hello["key"] == f"{sid}:api"
        assert await shell_pid(web) != await shell_pid(api)
        await web.send("pwd\r")
        await web.read_until(str(tmp_path / "a"))
        await web.close()
        await api.close()


async def test_create_zero_never_creates() -> None:
    async with inprocess_server() as srv:
        gone = await must_refuse(
            srv.ws_url, project="default", session="session_1754900000000_nosuchsession", create=0
        )
        assert gone.code == 4004
        nullish = await must_refuse(srv.ws_url, project="default", create=0)
        assert nullish.code == 4004
        assert srv.server.manager.sessions == {}


async def test_exit_sends_exit_message_then_4012_and_leaves_a_tombstone() -> None:
    async with inprocess_server() as srv:
        conn = await must_connect(srv.ws_url, project="default")
        await conn.send("echo BYE; exit 3\r")
        assert await conn.wait_closed() == 4012
        assert "BYE" in strip_ansi(bytes(conn.output))
        exits = [m for m in conn.messages if m["type"] == "exit"]
        assert exits == [{"type": "exit", "code": 3, "signal": None}]
        await conn.close()
        late = await must_refuse(
            srv.ws_url, project="default", session=conn.hello["session"], create=0
        )
        assert late.code == 4012
        restart = await must_connect(srv.ws_url, project="default", session=conn.hello["session"])
        assert (
            restart.hello["created"] is True and restart.hello["session"] == conn.hello["session"]
        )
        await restart.close()


async def test_exactly_once_input_across_reconnects() -> None:
    async with inprocess_server() as srv:
        client = "client-abcdefgh"
        conn = await must_connect(srv.ws_url, project="default", client=client)
        await conn.send("cat > typed.txt\r")
        await conn.send("hello ")
        ack = await conn.message("ack")
        assert ack["input"] == len("cat > typed.txt\rhello ")
        await conn.close()
        again = await must_connect(
            srv.ws_url,
            project="default",
            client=client,
            session=conn.hello["session"],
            offset=conn.position,
            create=0,
        )
        assert again.hello["input_acked"] == ack["input"]
        await again.send("world\r\x04")
        await again.send("echo TYPED-$(cat typed.txt)\r")
        await again.read_until("TYPED-hello world\r\n")
        assert (srv.workdir / "project" / "typed.txt").read_bytes() == b"hello world\n"
        other = await must_connect(srv.ws_url, project="default", session=conn.hello["session"])
        assert other.hello["input_acked"] == 0, "a connection without client id counts alone"
        await again.close()
        await other.close()


async def test_input_text_message_counts_utf8_bytes() -> None:
    async with inprocess_server() as srv:
        conn = await must_connect(srv.ws_url, project="default", client="utf8-client-1")
        await conn.send_json({"type": "input", "data": "echo héllo-€\r"})
        ack = await conn.message("ack")
        assert ack["input"] == len("echo héllo-€\r".encode())
        await conn.read_until("héllo-€\r\n")
        await conn.close()


async def test_same_client_id_replaces_older_connection_with_4009() -> None:
    async with inprocess_server() as srv:
        old = await must_connect(srv.ws_url, project="default", client="tab-12345678")
        new = await must_connect(
            srv.ws_url, project="default", client="tab-12345678", session=old.hello["session"]
        )
        assert await old.wait_closed() == 4009
        await new.send("echo STILL-HERE\r")
        await new.read_until("STILL-HERE\r\n")
        await old.close()
        await new.close()


async def test_resize_last_writer_wins_and_is_broadcast() -> None:
    async with inprocess_server() as srv:
        one = await must_connect(srv.ws_url, project="default")
        two = await must_connect(srv.ws_url, project="default", session=one.hello["session"])
        await one.send_json({"type": "resize", "cols": 120, "rows": 40})
        assert await two.message("resize") == {"type": "resize", "cols": 120, "rows": 40}
        await two.send_json({"type": "resize", "cols": 90, "rows": 20})
        assert await one.message("resize") == {"type": "resize", "cols": 90, "rows": 20}
        await one.send("stty size\r")
        await one.read_until("20 90")
        three = await must_connect(
            srv.ws_url, project="default", session=one.hello["session"], cols=70, rows=10
        )
        assert (three.hello["cols"], three.hello["rows"]) == (70, 10)
        for conn in (one, two, three):
            await conn.close()


async def test_ping_pong_and_bad_messages_keep_the_connection() -> None:
    async with inprocess_server() as srv:
        conn = await must_connect(srv.ws_url, project="default")
        await conn.send_json({"type": "ping", "t": 12.5})
        assert await conn.message("pong") == {"type": "pong", "t": 12.5}
        cases = {
            "not json": "bad_json",
            "[1, 2]": "bad_json",
            '{"type": "warp"}': "unknown_type",
            '{"type": "resize", "cols": 0, "rows": 10}': "bad_field",
            '{"type": "resize", "cols": "80", "rows": 24}': "bad_field",
            '{"type": "ping"}': "bad_field",
            '{"type": "input", "data": 5}': "bad_field",
            '{"no": "type"}': "bad_field",
        }
        for text, code in cases.items():
            await conn.ws.send_str(text)
            error = await conn.message("error")
            assert error["code"] == code, (text, error)
            assert error["message"]
        await conn.send("echo ALIVE\r")
        await conn.read_until("ALIVE\r\n")
        await conn.close()


async def test_concurrent_connects_for_one_new_key_create_one_shell() -> None:
    async with inprocess_server(storm_threshold=100) as srv:
        sid = "session_1754900000000_concurrent0001"
        results = await asyncio.gather(
            *(connect(srv.ws_url, project="default", session=sid) for _ in range(12))
        )
        conns = [r for r in results if hasattr(r, "hello")]
        assert len(conns) == 12
        assert sum(1 for c in conns if c.hello["created"]) == 1
        pids = {await shell_pid(c, f"P{i}") for i, c in enumerate(conns[:3])}
        assert len(pids) == 1
        assert len(srv.server.manager.sessions) == 1
        for conn in conns:
            await conn.close()
