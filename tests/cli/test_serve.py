"""``tether serve`` with its default authentication, ``--auth local``, end to end: the link printed
after the listening line, the private token file, a request without the token refused, the same
token after a restart, and ``tether stats`` / ``tether sessions`` finding it on their own."""

from __future__ import annotations

import asyncio
import json
import os
import select
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.wsclient import must_connect, must_refuse
from tether.cli import main

pytestmark = pytest.mark.timeout(60)


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    lines: list[str]

    @property
    def base_url(self) -> str:
        return self.lines[0].removeprefix("tether listening on ").strip()

    @property
    def ws_url(self) -> str:
        return self.base_url.replace("http://", "ws://") + "/ws/terminal"

    @property
    def token(self) -> str:
        return self.lines[1].partition("#token=")[2].strip()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(20)
        if self.process.stdout is not None:
            self.process.stdout.close()


@pytest.fixture
def machine(tmp_path: Path) -> dict[str, str]:
    """The environment of one account on this machine: its HOME and runtime directory."""
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    (tmp_path / "home").mkdir()
    (tmp_path / "project").mkdir()
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path / "home"),
        "XDG_RUNTIME_DIR": str(runtime),
        "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture
def serve(machine: dict[str, str], tmp_path: Path) -> Iterator[Any]:
    started: list[Served] = []

    def start(port: int) -> Served:
        command = [
            sys.executable, "-m", "tether", "serve", "--port", str(port), "--log-file", "-",
            "--project", f"default={tmp_path / 'project'}", "--shell", "bash --norc --noprofile",
        ]  # fmt: skip
        process = subprocess.Popen(
            command, env=machine, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        served = Served(process, _first_lines(process, 2))
        started.append(served)
        return served

    yield start
    for served in started:
        if served.process.returncode is None:
            served.stop()


def _first_lines(process: subprocess.Popen[bytes], count: int) -> list[str]:
    assert process.stdout is not None
    buffer = b""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and buffer.count(b"\n") < count:
        ready, _, _ = select.select([process.stdout], [], [], 0.2)
        if ready:
            chunk = os.read(process.stdout.fileno(), 65536)
            if not chunk:
                break
            buffer += chunk
    lines = buffer.decode(errors="replace").splitlines()
    assert len(lines) >= count, f"server output: {buffer.decode(errors='replace')[-1500:]}"
    return lines[:count]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _status(url: str, token: str | None = None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as response:
        return response.status


async def test_the_default_prints_a_link_whose_token_alone_lets_in(
    serve: Any, machine: dict[str, str]
) -> None:
    port = _free_port()
    served = serve(port)
    assert served.lines[0] == f"tether listening on http://127.0.0.1:{port}"
    assert served.lines[1] == f"http://127.0.0.1:{port}/#token={served.token}"
    path = Path(machine["XDG_RUNTIME_DIR"]) / "tether" / f"token-{port}"
    assert path.read_text().strip() == served.token
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # Another local account (no token) gets nothing; the link's holder gets a shell.
    assert (await must_refuse(served.ws_url, project="default")).code == 4001
    assert (await must_refuse(served.ws_url, project="default", token="guess" * 9)).code == 4001
    assert await _status(f"{served.base_url}/api/sessions") == 401
    assert await _status(f"{served.base_url}/api/sessions", served.token) == 200
    conn = await must_connect(served.ws_url, project="default", token=served.token)
    await conn.send("echo LOCAL-$((6*7))\r")
    await conn.read_until("LOCAL-42")
    await conn.close()


async def test_the_token_survives_a_restart_on_the_same_port(serve: Any) -> None:
    port = _free_port()
    first = serve(port)
    token = first.token
    first.stop()
    second = serve(port)
    assert second.token == token  # open pages keep working
    assert await _status(f"{second.base_url}/api/sessions", token) == 200


async def test_stats_and_sessions_find_the_token_of_this_account(
    serve: Any, machine: dict[str, str], capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = serve(_free_port())
    conn = await must_connect(served.ws_url, project="default", token=served.token)
    monkeypatch.setenv("XDG_RUNTIME_DIR", machine["XDG_RUNTIME_DIR"])
    monkeypatch.delenv("TETHER_TOKEN", raising=False)
    capsys.readouterr()
    status = await asyncio.to_thread(main, ["sessions", "list", "--url", served.base_url, "--json"])
    out, err = capsys.readouterr()
    assert status == 0, err
    assert [s["key"] for s in json.loads(out)] == [conn.hello["key"]]
    status = await asyncio.to_thread(main, ["stats", "--url", served.ws_url, "--json"])
    assert status == 0, capsys.readouterr().err
    # Another account's runtime directory holds no token: the same command is refused.
    monkeypatch.setenv("XDG_RUNTIME_DIR", machine["HOME"])
    capsys.readouterr()
    status = await asyncio.to_thread(main, ["sessions", "list", "--url", served.base_url])
    assert status != 0 and "401" in capsys.readouterr().err
    await conn.close()


def test_auth_local_on_a_network_address_is_refused_in_one_line(
    machine: dict[str, str], tmp_path: Path
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tether", "serve", "--host", "0.0.0.0", "--port", "0"],
        env=machine,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "--insecure-no-auth" in lines[0]
    assert not (Path(machine["XDG_RUNTIME_DIR"]) / "tether").exists()
