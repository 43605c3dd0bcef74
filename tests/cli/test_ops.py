"""``tether stats`` and ``tether sessions list | kill | clear`` through ``main(argv)`` against live
servers (in this process on a real socket, and one ``tether serve`` subprocess)."""

from __future__ import annotations

import asyncio
import io
import json
import urllib.request
from typing import Any

import pytest

from tests.support.server import inprocess_server, start_server
from tests.support.wsclient import must_connect, must_refuse
from tether.cli import main

pytestmark = pytest.mark.timeout(60)
REFUSED = "connection refused (is the server running?)"


async def run(capsys: Any, *argv: str) -> tuple[int, str, str]:
    """Run the CLI in a thread (this loop serves the in-process server meanwhile)."""
    capsys.readouterr()
    status = await asyncio.to_thread(main, list(argv))
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture
def two_projects(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    return [f"a={tmp_path / 'a'}", f"b={tmp_path / 'b'}"]


async def test_stats_prints_sessions_totals_and_tripped_breakers(capsys) -> None:
    async with inprocess_server(storm_threshold=1) as srv:
        conn = await must_connect(srv.ws_url, project="default")
        session, key = conn.hello["session"], conn.hello["key"]
        await (await must_connect(srv.ws_url, project="default", session=session)).close()
        assert (await must_refuse(srv.ws_url, project="default", session=session)).code == 4129
        status, out, err = await run(capsys, "stats", "--url", srv.base_url)
        assert status == 0, err
        assert "sessions 1 (1 attached)" in out and "clients 1" in out
        assert "RSS" in out and "CPU" in out
        assert key in out and "attached" in out and "anonymous" in out
        assert "circuit breakers" in out and "open" in out and "1 s" in out
        assert "thresholds: key 1 per 10.0 s" in out
        await conn.close()


async def test_stats_json_is_both_endpoints_for_scripts(capsys, two_projects) -> None:
    async with inprocess_server(projects=two_projects) as srv:
        conns = [await must_connect(srv.ws_url, project=p) for p in ("a", "b")]
        status, out, _ = await run(capsys, "stats", "--url", srv.ws_url, "--json", "--project", "b")
        assert status == 0
        data = json.loads(out)
        assert data["sessions"]["totals"]["sessions"] == 1
        assert [s["key"] for s in data["sessions"]["sessions"]] == [conns[1].hello["key"]]
        assert data["breakers"]["thresholds"]["key"]["threshold"] == 10
        status, out, _ = await run(capsys, "stats", "--url", srv.base_url)
        assert "no sessions" not in out and "none tripped" in out
        for conn in conns:
            await conn.close()


async def test_sessions_list_as_table_json_and_empty(capsys, two_projects) -> None:
    async with inprocess_server(projects=two_projects) as srv:
        status, out, _ = await run(capsys, "sessions", "list", "--url", srv.base_url)
        assert (status, out.strip()) == (0, "no sessions")
        conns = [await must_connect(srv.ws_url, project=p) for p in ("a", "a", "b")]
        await conns[1].close()
        status, out, _ = await run(capsys, "sessions", "list", "--url", srv.base_url)
        assert status == 0 and "3 session(s)" in out
        assert all(c.hello["key"] in out for c in conns)
        status, out, _ = await run(
            capsys, "sessions", "list", "--url", srv.base_url, "--json", "--project", "a"
        )
        listed = json.loads(out)
        assert {s["key"] for s in listed} == {conns[0].hello["key"], conns[1].hello["key"]}
        for conn in conns:
            await conn.close()


async def test_sessions_kill_by_key_or_session_id(capsys) -> None:
    async with inprocess_server() as srv:
        first = await must_connect(srv.ws_url, project="default")
        second = await must_connect(srv.ws_url, project="default")
        status, out, _ = await run(
            capsys, "sessions", "kill", first.hello["key"], "--url", srv.base_url
        )
        assert (status, out.strip()) == (0, f"killed {first.hello['key']}")
        assert await first.wait_closed() == 4013
        status, out, _ = await run(
            capsys, "sessions", "kill", second.hello["session"], "--url", srv.base_url
        )
        assert (status, out.strip()) == (0, f"killed {second.hello['key']}")
        assert await second.wait_closed() == 4013
        assert srv.server.manager.sessions == {}
        await first.close()
        await second.close()


async def test_sessions_kill_of_an_unknown_session_fails_clearly(capsys) -> None:
    async with inprocess_server() as srv:
        status, out, err = await run(
            capsys, "sessions", "kill", "session_0_nope:default", "--url", srv.base_url
        )
        assert status == 1 and out == ""
        assert err.strip() == "tether: unknown session 'session_0_nope:default'"
        status, _, err = await run(capsys, "sessions", "kill", "nope", "--url", srv.base_url)
        assert status == 1 and err.strip() == "tether: unknown session 'nope'"


async def test_clear_without_a_terminal_or_yes_clears_nothing(capsys, monkeypatch) -> None:
    async with inprocess_server() as srv:
        conn = await must_connect(srv.ws_url, project="default")
        monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))  # a pipe's "y" is no consent
        status, out, err = await run(capsys, "sessions", "clear", "--url", srv.base_url)
        assert (status, out) == (1, "")
        assert err.strip() == (
            "tether: nothing cleared: no terminal to ask on; pass --yes to end 1 session(s)"
        )
        assert conn.hello["key"] in srv.server.manager.sessions
        await conn.close()


async def test_clear_with_yes_and_project_touches_only_that_project(capsys, two_projects) -> None:
    async with inprocess_server(projects=two_projects) as srv:
        a = await must_connect(srv.ws_url, project="a")
        b = await must_connect(srv.ws_url, project="b")
        argv = ("sessions", "clear", "--url", srv.base_url, "--project", "a", "--yes")
        status, out, _ = await run(capsys, *argv)
        assert (status, out.strip()) == (0, "cleared 1 session(s) of project a")
        assert await a.wait_closed() == 4013
        assert list(srv.server.manager.sessions) == [b.hello["key"]]
        status, out, _ = await run(capsys, *argv)
        assert (status, out.strip()) == (0, "no sessions of project a to clear")
        for command in (("sessions", "clear", "--yes"), ("stats",)):
            status, out, err = await run(capsys, *command, "--url", srv.base_url, "--project", "zz")
            assert (status, out) == (2, "")
            assert err.strip() == "tether: unknown project 'zz' (this server has: a, b)"
        for conn in (a, b):
            await conn.close()


async def test_unreachable_server_and_wrong_url_fail_with_a_message(capsys) -> None:
    async with inprocess_server() as srv:
        port = srv.port
    status, out, err = await run(capsys, "stats", "--url", f"http://127.0.0.1:{port}")
    assert status == 1 and out == ""
    assert err == f"tether: cannot reach the server at http://127.0.0.1:{port}: {REFUSED}\n"
    status, _, err = await run(capsys, "sessions", "list", "--url", "ftp://nowhere")
    assert status == 2 and "not a tether URL" in err


async def test_a_url_that_is_not_tether_gives_the_http_error(capsys) -> None:
    async with inprocess_server() as srv:
        status, _, err = await run(capsys, "stats", "--url", f"{srv.base_url}/elsewhere")
        assert status == 1 and "HTTP 404" in err and "Traceback" not in err


def test_stats_against_a_tether_serve_process(capsys) -> None:
    with start_server() as server:
        status = main(["stats", "--url", server.base_url, "--json"])
        out = capsys.readouterr().out
        assert status == 0
        data = json.loads(out)
        assert data["sessions"]["server"]["pid"] == server.pid
        assert data["sessions"]["totals"]["sessions"] == 0
        assert main(["sessions", "list", "--url", server.base_url]) == 0
        assert capsys.readouterr().out.strip() == "no sessions"


async def _rename(base_url: str, key: str, name: str) -> None:
    """``PATCH /api/me/sessions/{key}``: what the page's session list does to rename one."""
    request = urllib.request.Request(
        f"{base_url}/api/me/sessions/{key}",
        data=json.dumps({"name": name}).encode(),
        method="PATCH",
        headers={"Content-Type": "application/json"},
    )
    with await asyncio.to_thread(urllib.request.urlopen, request, timeout=5) as response:
        assert response.status == 200


async def test_sessions_list_shows_display_names_and_json_only_on_stdout(capsys, tmp_path) -> None:
    async with inprocess_server() as srv:
        named = await must_connect(srv.ws_url, project="default")
        plain = await must_connect(srv.ws_url, project="default")
        status, out, _ = await run(capsys, "sessions", "list", "--url", srv.base_url)
        assert status == 0 and " name " not in out  # nobody named one: no empty column
        await _rename(srv.base_url, named.hello["key"], "db [prod] ✓")
        status, out, _ = await run(capsys, "sessions", "list", "--url", srv.base_url)
        assert status == 0 and " name " in out
        rows = {line.split()[1]: line for line in out.splitlines() if "default" in line}
        assert "db [prod] ✓" in rows[named.hello["key"]]  # markup-like text shown as typed
        assert " - " in rows[plain.hello["key"]]
        report = tmp_path / "sessions.json"
        argv = ("sessions", "list", "--url", srv.base_url, "--json", "--out", str(report))
        status, out, err = await run(capsys, *argv)
        assert (status, err) == (0, "")
        listed = json.loads(out)  # stdout is the JSON and nothing else
        assert {s["key"]: s["name"] for s in listed} == {
            named.hello["key"]: "db [prod] ✓",
            plain.hello["key"]: "",
        }
        assert json.loads(report.read_text()) == listed
        status, out, _ = await run(
            capsys, "stats", "--url", srv.base_url, "--json", "--out", str(report)
        )
        assert status == 0 and json.loads(out) == json.loads(report.read_text())
        status, out, err = await run(
            capsys, "sessions", "list", "--url", srv.base_url, "--project", "zz"
        )
        assert (status, out) == (2, "")
        assert err.strip() == "tether: unknown project 'zz' (this server has: default)"
        for conn in (named, plain):
            await conn.close()
