"""Session recording with real servers, PTYs and bash (docs/operations.md, "Recording sessions"):
what a session printed and its resizes are in its cast, typed input only when asked, the
operator endpoint and ``tether sessions record`` save it, a writer that cannot keep up drops and
counts without slowing the session, and an upgrade in place goes on appending to the same file."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import signal
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.server import (
    ServerProcess,
    eventually,
    inprocess_server,
    server_stats,
    wait_generation,
)
from tests.support.wsclient import must_connect
from tether.cli import main
from tether.server.recording import part_name

pytestmark = pytest.mark.timeout(90)


def parse_cast(data: bytes) -> tuple[dict[str, Any], list[list[Any]]]:
    """A cast as (header, events); fails on anything that is not asciicast v2."""
    text = data.decode("utf-8")
    assert text.endswith("\n")
    header, *events = (json.loads(line) for line in text.splitlines())
    assert header["version"] == 2 and isinstance(header["timestamp"], int)
    assert header["width"] > 0 and header["height"] > 0 and "TERM" in header["env"]
    times = [event[0] for event in events]
    assert times == sorted(times) and all(t >= 0 for t in times)
    assert all(len(e) == 3 and e[1] in "oir" and isinstance(e[2], str) for e in events)
    return header, events


def output_of(events: list[list[Any]]) -> str:
    return "".join(e[2] for e in events if e[1] == "o")


def cast_with(path: Path, needle: str) -> tuple[dict[str, Any], list[list[Any]]] | None:
    data = path.read_bytes() if path.exists() else b""
    if not data.endswith(b"\n"):  # not made yet, or the recorder's thread is mid-line
        return None
    header, events = parse_cast(data)
    return (header, events) if needle in output_of(events) else None


async def test_output_and_resizes_are_recorded_and_the_api_and_cli_save_them(
    tmp_path: Path, capsys: Any
) -> None:
    casts = tmp_path / "casts"
    async with inprocess_server(record_dir=str(casts)) as srv, aiohttp.ClientSession() as http:
        conn = await must_connect(srv.ws_url, project="default", cols=90, rows=20)
        key = conn.hello["key"]
        await conn.send("echo $((6*7))-h\u00e9llo-\u20ac\r")
        await conn.read_until("42-h\u00e9llo-\u20ac")
        await conn.send_json({"type": "resize", "cols": 120, "rows": 40})
        await conn.send("stty size\r")
        await conn.read_until("40 120")
        path = casts / part_name(key, 0)
        header, events = await eventually(
            lambda: cast_with(path, "40 120"), 3.0, "output not in the cast within a second"
        )
        assert stat.S_IMODE(casts.stat().st_mode) == 0o700
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert (header["width"], header["height"]) == (90, 20)
        assert "42-h\u00e9llo-\u20ac" in output_of(events)  # UTF-8 decoded, whole characters
        assert ["r", "120x40"] in [e[1:] for e in events]
        assert not [e for e in events if e[1] == "i"], "input is not recorded by default"

        url = f"{srv.base_url}/api/sessions/{key}/recording"
        async with http.get(url) as response:
            assert response.status == 200
            assert response.content_type == "application/x-asciicast"
            served = await response.read()
        assert "40 120" in output_of(parse_cast(served)[1])
        async with http.get(f"{srv.base_url}/api/sessions/nosuch:default/recording") as missing:
            assert missing.status == 404
            assert (await missing.json())["error"]["code"] == "not_found"

        saved = tmp_path / "saved.cast"
        argv = ["sessions", "record", key, "--url", srv.base_url, "-o", str(saved)]
        assert await asyncio.to_thread(main, argv) == 0
        assert "40 120" in output_of(parse_cast(saved.read_bytes())[1])
        capsys.readouterr()
        argv = ["sessions", "record", "nosuch:default", "--url", srv.base_url, "-o", str(saved)]
        assert await asyncio.to_thread(main, argv) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("tether: ") and "404" in err and len(err.splitlines()) == 1

        entry = (await (await http.get(f"{srv.base_url}/api/sessions/{key}")).json())["recording"]
        assert entry == {"file": path.name, "dropped_events": 0}
        await conn.close()


async def test_typed_input_is_recorded_only_with_record_input(tmp_path: Path) -> None:
    async with inprocess_server(record_dir=str(tmp_path / "c"), record_input=True) as srv:
        conn = await must_connect(srv.ws_url, project="default")
        await conn.send("echo typed-$((2*21))\r")
        await conn.read_until("typed-42")
        path = tmp_path / "c" / part_name(conn.hello["key"], 0)
        _, events = await eventually(lambda: cast_with(path, "typed-42"), 3.0)
        assert "".join(e[2] for e in events if e[1] == "i") == "echo typed-$((2*21))\r"
        await conn.close()


async def test_a_writer_that_cannot_keep_up_drops_and_counts_but_output_is_whole(
    tmp_path: Path,
) -> None:
    size = 4_000_000
    settings = {"record_dir": str(tmp_path / "c"), "record_queue_bytes": 1024}
    async with inprocess_server(**settings) as srv, aiohttp.ClientSession() as http:
        conn = await must_connect(srv.ws_url, project="default")
        command = f"head -c {size} /dev/zero | tr '\\0' '\\132'; echo; echo END-$((6*7))\r"
        await conn.send(command)  # Z written as \132: the echoed command line holds none
        await conn.read_until(b"END-42", timeout=60)
        assert bytes(conn.output).count(b"Z") == size  # the session never waited for the disk
        entry = await (await http.get(f"{srv.base_url}/api/sessions/{conn.hello['key']}")).json()
        assert entry["recording"]["dropped_events"] > 0
        metrics = await (await http.get(f"{srv.base_url}/metrics")).text()
        line = next(x for x in metrics.splitlines() if x.startswith("tether_recording_dropped"))
        assert float(line.split()[-1]) == entry["recording"]["dropped_events"]
        path = tmp_path / "c" / part_name(conn.hello["key"], 0)
        marks = itertools.count()

        async def recording_again() -> bool:
            # A new line now and then, until one finds room in the queue again
            mark = next(marks)
            if mark % 10 == 0:
                await conn.send(f"echo later-{mark}-$((6*7))\r")
                await conn.read_until(f"later-{mark}-42")
            text = output_of(parse_cast(path.read_bytes())[1]) if path.exists() else ""
            return re.search(r"later-\d+-42", text) is not None

        await eventually(recording_again, 5.0, "the cast goes on after drops")
        await conn.close()


@pytest.mark.parametrize("how", ["upgrade", "crash"])
async def test_after_an_upgrade_or_a_crash_the_same_file_goes_on(tmp_path: Path, how: str) -> None:
    casts = tmp_path / "casts"
    server = ServerProcess(args=("--record-dir", str(casts)), supervise=how == "crash")
    with server.start() as srv:
        conn = await must_connect(srv.ws_url, project="default", client="recorded-client-1")
        key, session = conn.hello["key"], conn.hello["session"]
        await conn.send("echo before-$((6*7))\r")
        await conn.read_until("before-42")
        path = casts / part_name(key, 0)
        await eventually(lambda: cast_with(path, "before-42"), 3.0)
        if how == "upgrade":
            os.kill(srv.pid, signal.SIGUSR2)
        else:  # the worker, under the supervisor
            os.kill((await asyncio.to_thread(server_stats, srv.base_url))["server"]["pid"], 9)
        await wait_generation(srv.base_url, 2)
        await conn.close()
        again = await must_connect(
            srv.ws_url, project="default", session=session, client="recorded-client-1", create=0
        )
        await again.send("echo after-$((6*7))\r")
        await again.read_until("after-42")
        _, events = await eventually(lambda: cast_with(path, "after-42"), 3.0)
        assert "before-42" in output_of(events)  # one valid cast: a single header, whole lines
        assert sorted(os.listdir(casts)) == [path.name]
        await again.close()


OWNER, OPERATOR = "owner-secret-token-0001", "operator-secret-token-02"
TOKENS = f"""
[[tokens]]
owner = "alice"
token = "{OWNER}"
projects = "*"

[[tokens]]
owner = "ops"
token = "{OPERATOR}"
projects = "*"
operator = true
"""


async def test_only_an_operator_gets_a_recording(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(TOKENS)
    tokens.chmod(0o600)
    settings = {"auth": "token", "tokens_file": str(tokens), "record_dir": str(tmp_path / "c")}
    async with inprocess_server(**settings) as srv, aiohttp.ClientSession() as http:
        bearer = {"Authorization": f"Bearer {OWNER}"}
        conn = await must_connect(srv.ws_url, project="default", headers=bearer)
        await conn.send("echo mine-$((6*7))\r")
        await conn.read_until("mine-42")
        url = f"{srv.base_url}/api/sessions/{conn.hello['key']}/recording"
        path = tmp_path / "c" / part_name(conn.hello["key"], 0)
        await eventually(lambda: cast_with(path, "mine-42"), 3.0)
        for headers, status in (({}, 401), (bearer, 403)):
            async with http.get(url, headers=headers) as response:
                assert response.status == status
                assert "error" in await response.json()
        async with http.get(url, headers={"Authorization": f"Bearer {OPERATOR}"}) as response:
            assert response.status == 200 and b"mine-42" in await response.read()
        await conn.close()


def test_a_record_dir_others_can_open_is_refused_in_one_line(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o755)
    command = [sys.executable, "-m", "tether", "serve", "--no-supervise", "--auth", "none"]
    command += ["--port", "0", "--log-file", "-", "--record-dir", str(shared)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 2 and "listening" not in result.stdout
    err = result.stderr.strip()
    assert err.startswith("tether: invalid configuration: record-dir") and "chmod 700" in err
    assert len(err.splitlines()) == 1
