"""The lifecycle log: JSON lines with the fields operators need, levels, destinations, rotation
by size; and a session driven through its whole life, read back from the file."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.server import inprocess_server
from tests.support.wsclient import must_connect, must_refuse
from tether.server import logs

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def configured(tmp_path: Path) -> Iterator[Any]:
    """Configure the lifecycle logger for one test; undo it afterwards."""
    added: list[logging.Handler] = []

    def configure(**options: Any) -> Path:
        path = options.pop("log_file", tmp_path / "logs" / "lifecycle.log")
        settings = {"level": "info", "max_bytes": 1024 * 1024, "backups": 2, "stderr": False}
        settings.update(options)
        added.extend(logs.configure(path, **settings))
        return Path(path)

    yield configure
    logs.remove(added)
    logger = logging.getLogger(logs.LIFECYCLE_LOGGER)
    logger.propagate = True
    logger.setLevel(logging.NOTSET)


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ------------------------------------------------------------------------------ formatting
def test_each_event_is_one_json_object_with_time_level_and_fields(configured) -> None:
    path = configured()
    logs.log_event("create", key="session_1:web", owner="alice", pid=42, duration_ms=1.5)
    logs.log_event("error", key="session_2:web", reason="cannot start shell")
    first, second = read_lines(path)
    assert first["event"] == "create" and first["level"] == "info"
    assert first["ts"].endswith("Z") and "T" in first["ts"]
    assert (first["key"], first["owner"], first["pid"], first["duration_ms"]) == (
        "session_1:web",
        "alice",
        42,
        1.5,
    )
    assert second["level"] == "error" and second["reason"] == "cannot start shell"


def test_fields_named_like_secrets_never_reach_the_log(configured, capsys) -> None:
    path = configured(stderr=True)
    logs.log_event("attach", key="k", token="hunter2-token", authorization="Bearer x", owner="o")
    (line,) = read_lines(path)
    assert "token" not in line and "authorization" not in line and line["owner"] == "o"
    err = capsys.readouterr().err
    assert "hunter2" not in err and "Bearer" not in err and "owner=o" in err


def test_stderr_is_human_readable_and_has_its_own_level(configured, capsys) -> None:
    path = configured(level="debug", stderr=True, stderr_level="warning")
    logs.log_event("attach", key="session_1:web", addr="10.0.0.1")
    logs.log_at(logging.DEBUG, "storm", key="session_1:web", scope="key")
    logs.log_event("breaker", scope="key", state="open", key="session_1:web")
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1
    assert " warning breaker " in err[0] and "state=open" in err[0] and "{" not in err[0]
    assert [line["event"] for line in read_lines(path)] == ["attach", "storm", "breaker"]


def test_level_filters_the_file(configured) -> None:
    path = configured(level="warning")
    logs.log_event("attach", key="k")
    logs.log_at(logging.DEBUG, "storm", key="k")
    logs.log_event("storm", key="k", tripped=True)
    logs.log_event("error", reason="x")
    assert [line["event"] for line in read_lines(path)] == ["storm", "error"]


def test_the_file_rotates_by_size_keeping_the_configured_backups(configured, tmp_path) -> None:
    path = configured(max_bytes=2048, backups=2)
    for number in range(200):
        logs.log_event("attach", key=f"session_{number}:web", owner="alice")
    files = sorted(p.name for p in path.parent.iterdir())
    assert files == ["lifecycle.log", "lifecycle.log.1", "lifecycle.log.2"]
    for name in files:
        size = (path.parent / name).stat().st_size
        assert 0 < size <= 2048
        read_lines(path.parent / name)  # every rotated file is still whole JSON lines
    assert read_lines(path)[-1]["key"] == "session_199:web"


# ------------------------------------------------------------------------------ a whole life
def events(lines: list[dict[str, Any]], name: str, **match: Any) -> list[dict[str, Any]]:
    return [
        line
        for line in lines
        if line["event"] == name and all(line.get(k) == v for k, v in match.items())
    ]


async def test_a_session_life_is_in_the_log_from_create_to_reap(configured, tmp_path) -> None:
    path = configured(level="debug")
    (tmp_path / "main").mkdir()
    (tmp_path / "gone").mkdir()
    projects = [f"main={tmp_path / 'main'}", f"gone={tmp_path / 'gone'}"]
    settings = {"projects": projects, "storm_threshold": 2, "idle_timeout": 0.4}
    async with inprocess_server(**settings) as srv, aiohttp.ClientSession() as http:
        (tmp_path / "gone").rmdir()
        conn = await must_connect(srv.ws_url, project="main", client="life-client-1")
        key, session = conn.hello["key"], conn.hello["session"]
        await conn.send_json({"type": "resize", "cols": 100, "rows": 30})
        await conn.send("echo LIFE\r")
        await conn.read_until("LIFE\r\n")
        other = await must_connect(srv.ws_url, project="main", session=session)  # attempt 1
        await other.close()
        second = await must_connect(srv.ws_url, project="main", session=session)  # attempt 2
        assert (await must_refuse(srv.ws_url, project="main", session=session)).code == 4129
        await asyncio.sleep(1.1)
        third = await must_connect(srv.ws_url, project="main", session=session)  # trial passes
        await third.close()
        await second.close()
        async with http.delete(f"{srv.base_url}/api/sessions/{key}") as response:
            assert response.status == 200
        assert await conn.wait_closed() == 4013
        await conn.close()

        cleared = await must_connect(srv.ws_url, project="main")
        async with http.post(f"{srv.base_url}/api/sessions/clear", json={"project": "main"}):
            pass
        await cleared.wait_closed()
        await cleared.close()
        exiting = await must_connect(srv.ws_url, project="main")
        await exiting.send("exit 7\r")
        assert await exiting.wait_closed() == 4012
        await exiting.close()
        idle = await must_connect(srv.ws_url, project="main")
        await idle.close()
        for _ in range(5):
            assert (await must_refuse(srv.ws_url, project="gone")).code == 1011
        for _ in range(40):
            if idle.hello["key"] not in srv.server.manager.sessions:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.1)

    lines = read_lines(path)
    (create,) = events(lines, "create", key=key)
    assert create["owner"] == "anonymous" and create["project"] == "main" and create["pid"] > 0

    connects = events(lines, "connect", key=key)
    assert [c["kind"] for c in connects] == ["create", "attach", "attach", "attach"]
    assert all(c["addr"] == "127.0.0.1" and c["duration_ms"] >= 0 for c in connects)
    first = connects[0]
    assert first["client"] == "life-client-1" and first["owner"] == "anonymous"
    assert (first["replay_from"], first["gap"], first["clients"]) == (0, 0, 1)

    (resize,) = events(lines, "resize", key=key)
    assert (resize["cols"], resize["rows"], resize["addr"]) == (100, 30, "127.0.0.1")

    detaches = events(lines, "detach", key=key)
    assert {d["code"] for d in detaches} >= {1000, 4013}
    assert all(d["duration_ms"] >= 0 and d["addr"] == "127.0.0.1" for d in detaches)

    (storm,) = events(lines, "storm", key=key)
    assert storm["level"] == "warning" and storm["tripped"] is True and storm["retry_after"] == 1
    assert events(lines, "refuse", code=4129)[0]["level"] == "debug"
    opened, closed = events(lines, "breaker", key=key)
    assert (opened["state"], opened["scope"], opened["level"]) == ("open", "key", "warning")
    assert (closed["state"], closed["level"]) == ("closed", "info")

    (kill,) = events(lines, "kill", key=key)
    assert kill["owner"] == "anonymous" and kill["age_s"] >= 1
    (clear,) = events(lines, "clear", project="main")
    assert clear["count"] == 1
    (exit_line,) = events(lines, "exit", key=exiting.hello["key"])
    assert exit_line["code"] == 7 and exit_line["age_s"] >= 0
    (reap,) = events(lines, "reap", key=idle.hello["key"])
    assert reap["duration_ms"] >= 400 and reap["owner"] == "anonymous"

    errors = events(lines, "error", project="gone")
    assert len(errors) == 5 and all(e["level"] == "error" and e["reason"] for e in errors)
    (project_breaker,) = events(lines, "breaker", project="gone")
    assert project_breaker["state"] == "open" and project_breaker["failures"] == 5


def test_human_lines_cannot_be_forged_by_a_field_value() -> None:
    """A JWT ``sub`` is any printable string: on stderr it must stay one quoted value, with no
    control character (C1, line separators) reaching the terminal or the log collector."""
    owner = "mallory addr=10.0.0.1 code=1000\u0085\u2028\x9b31m"
    record = logging.LogRecord("tether.lifecycle", logging.INFO, "", 0, "connect", (), None)
    record.fields = {"owner": owner, "addr": "127.0.0.1", "code": 1000}
    line = logs.HumanFormatter().format(record)
    assert line.isprintable() and line.isascii(), line
    pairs = line.split(" connect ", 1)[1]
    assert pairs.count("addr=") == 2 and pairs.endswith("addr=127.0.0.1 code=1000")
    assert pairs.startswith("owner=" + json.dumps(owner)), pairs
    plain = logging.LogRecord("tether.lifecycle", logging.INFO, "", 0, "connect", (), None)
    plain.fields = {"owner": "alice", "key": "session_1:web"}
    assert logs.HumanFormatter().format(plain).endswith("connect owner=alice key=session_1:web")
