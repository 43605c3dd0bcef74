"""Upgrade in place (SIGUSR2, `tether restart`, POST /api/restart) with real servers, PTYs and
bash: every session survives with the same shell, clients resume at once with gap 0, output is
exact and input written exactly once; broken new code or settings leave the old one serving."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.resuming import ResumingClient
from tests.support.server import (
    ServerProcess,
    eventually,
    server_stats,
    start_server,
    wait_generation,
)
from tests.support.wsclient import must_connect, strip_ansi

pytestmark = pytest.mark.timeout(120)

LINES = 20000


def pids_by_key(facts: dict[str, Any]) -> dict[str, int]:
    return {s["key"]: s["pid"] for s in facts["sessions"]}


def worker_counts(pid: int) -> tuple[int, int, int]:
    """Open fds, child processes and RSS (bytes) of the serving process."""
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    children = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        children += len(Path(f"/proc/{pid}/task/{task}/children").read_text().split())
    rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return fds, children, rss


async def test_upgrade_while_printing_and_typing_loses_and_doubles_nothing() -> None:
    with start_server() as srv:
        printer = ResumingClient(srv.ws_url, "upgrade-printer-0001")
        typist = ResumingClient(srv.ws_url, "upgrade-typist-00001")
        typed = bytearray()
        async with aiohttp.ClientSession() as http:
            for client in (printer, typist):
                await client.connect(http)
                await client.type(b"stty -echo; PS1=''\r")
            before = pids_by_key(server_stats(srv.base_url))
            await typist.type(b"cat > typed.txt\r")
            # Half-way the printer waits for the upgrade (however long its check takes on a
            # busy machine), so that the upgrade lands while output is flowing.
            await printer.type(
                f"for i in $(seq 1 {LINES}); do echo line-$i; (( i % 1000 )) || sleep 0.05;"
                f" (( i == {LINES // 2} )) && until [ -e upgraded ]; do sleep 0.02; done;"
                " done; echo DONE-$((6*7))\r".encode()
            )
            await printer.run_until(b"line-3000\r\n", http, 30, tail=100000)
            os.kill(srv.pid, signal.SIGUSR2)

            upgraded = asyncio.Event()

            async def mark_upgraded() -> None:
                await wait_generation(srv.base_url, 2)
                (srv.project_dir / "upgraded").touch()
                upgraded.set()

            async def type_lines() -> None:
                for i in range(300):
                    if i == 150:  # the other half after the upgrade
                        await upgraded.wait()
                    token = f"key-{i}\n".encode()
                    typed.extend(token)
                    await typist.type(token)
                    await asyncio.sleep(0.005)
                await typist.type(b"\x04echo TYPED-$((6*7))\r")

            await asyncio.gather(
                mark_upgraded(),
                printer.run_until(b"DONE-42", http, 60),
                type_lines(),
                typist.run_until(b"TYPED-42", http, 60),
            )
            after = await wait_generation(srv.base_url, 2)
            await printer.close()
            await typist.close()
        assert after["server"]["pid"] == srv.pid
        assert pids_by_key(after) == before  # the same shells
        for client in (printer, typist):
            assert 1012 in client.close_codes
            assert len(client.hellos) >= 2 and all(h["gap"] == 0 for h in client.hellos)
        text = strip_ansi(bytes(printer.output)).replace("\r", "")
        numbers = [int(n) for n in re.findall(r"^line-(\d+)$", text, flags=re.MULTILINE)]
        assert numbers == list(range(1, LINES + 1))
        assert (srv.project_dir / "typed.txt").read_bytes() == bytes(typed)


async def test_upgrade_with_200_sessions_keeps_every_shell() -> None:
    with start_server("--max-sessions", "400") as srv:
        conns = await asyncio.gather(
            *(must_connect(srv.ws_url, project="default", client=f"many-{i:04d}-client")
              for i in range(200))
        )  # fmt: skip
        before = pids_by_key(server_stats(srv.base_url))
        assert len(before) == 200
        os.kill(srv.pid, signal.SIGUSR2)
        assert {await c.wait_closed(30) for c in conns} == {1012}
        after = await wait_generation(srv.base_url, 2)
        assert pids_by_key(after) == before
        resumed = await asyncio.gather(
            *(must_connect(srv.ws_url, project="default", client=f"many-{i:04d}-client",
                           session=c.hello["session"], offset=c.position, create=0)
              for i, c in enumerate(conns))
        )  # fmt: skip
        assert all(
            r.hello["gap"] == 0 and r.hello["head"] == r.hello["replay_from"] for r in resumed
        )
        for conn in [*conns, *resumed]:
            await conn.close()


async def test_ten_upgrades_in_a_row_leak_nothing() -> None:
    with start_server() as srv:
        conns = [
            await must_connect(srv.ws_url, project="default", client=f"leak-{i:04d}-client")
            for i in range(5)
        ]
        before = pids_by_key(server_stats(srv.base_url))
        counts = []
        for generation in range(2, 12):
            if generation % 3 == 0:
                answer = await asyncio.to_thread(_post_restart, srv)
                assert answer["status"] == "restarting" and answer["pid"] == srv.pid
            elif generation % 3 == 1:
                await asyncio.to_thread(_cli_restart, srv)
            else:
                os.kill(srv.pid, signal.SIGUSR2)
            facts = await wait_generation(srv.base_url, generation)
            assert pids_by_key(facts) == before and facts["server"]["pid"] == srv.pid
            counts.append(await _settled_counts(srv.pid, counts[0][0] if counts else None))
        for conn in conns:
            await conn.close()
    fds, children, rss = zip(*counts, strict=True)
    assert set(children) == {5}  # the shells, and no leftover pre-check or other process
    assert max(fds[1:]) <= fds[0], fds  # each settled (a request in flight holds one more)
    assert rss[-1] - rss[0] < 20 * 1024 * 1024, rss


async def test_signals_that_reach_a_starting_worker_are_run_once_it_is_ready() -> None:
    """SIGHUP and SIGUSR2 that reach the new worker while it serves terminals and aiohttp is
    still loading are remembered and run then; their default action would end the process (and
    without a supervisor every session with it)."""
    with start_server() as srv:
        conn = await must_connect(srv.ws_url, project="default", client="early-signal-client")
        before = pids_by_key(server_stats(srv.base_url))
        os.kill(srv.pid, signal.SIGUSR2)
        assert await conn.wait_closed(30) == 1012
        # The old worker no longer accepts: this connection waits for the new one, and its
        # head, still coming, keeps the new one's early phase open (1 s at most).
        _, slow = await asyncio.open_connection("127.0.0.1", srv.port)
        slow.write(b"GET /ws/terminal?project=default HTTP/1.1\r\n")
        await eventually(lambda: '"early":true' in _log(srv), timeout=30)
        os.kill(srv.pid, signal.SIGHUP)
        os.kill(srv.pid, signal.SIGUSR2)
        slow.close()
        facts = await wait_generation(srv.base_url, 3)
        assert pids_by_key(facts) == before and facts["server"]["pid"] == srv.pid
        held = [json.loads(line) for line in _log(srv).splitlines() if '"signals"' in line]
        assert [event["held"] for event in held] == [["SIGHUP", "SIGUSR2"]]
        await conn.close()


async def test_a_stop_that_reaches_a_starting_worker_drains_as_later() -> None:
    """SIGTERM while the new worker serves terminals early (aiohttp still loading) is held and
    then drains as SIGTERM does: clients told 1001, the process ends with status 0 — not cut
    by the signal's default action."""
    with start_server("--drain-grace", "0.5") as srv:
        conn = await must_connect(srv.ws_url, project="default", client="early-stop-client")
        os.kill(srv.pid, signal.SIGUSR2)
        assert await conn.wait_closed(30) == 1012
        resumed = await must_connect(
            srv.ws_url, project="default", client="early-stop-client",
            session=conn.hello["session"], offset=conn.position, create=0,
        )  # fmt: skip
        _, slow = await asyncio.open_connection("127.0.0.1", srv.port)
        slow.write(b"GET /ws/terminal?project=default HTTP/1.1\r\n")  # holds the early phase
        await eventually(lambda: '"early":true' in _log(srv), timeout=30)
        os.kill(srv.pid, signal.SIGTERM)
        slow.close()
        assert await resumed.wait_closed(30) == 1001
        assert srv.process is not None
        assert await asyncio.to_thread(srv.process.wait, 30) == 0
        held = [json.loads(line) for line in _log(srv).splitlines() if '"signals"' in line]
        assert [event["held"] for event in held] == [["SIGTERM"]]
        for client in (conn, resumed):
            await client.close()


def _log(srv: ServerProcess) -> str:
    return srv.log_file.read_text() if srv.log_file.exists() else ""


async def _settled_counts(pid: int, fds_before: int | None) -> tuple[int, int, int]:
    """The worker's counts once no connection is in flight (within a bounded wait)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 3.0
    counts = worker_counts(pid)
    while fds_before is not None and counts[0] > fds_before and loop.time() < deadline:
        await asyncio.sleep(0.05)
        counts = worker_counts(pid)
    return counts


def _post_restart(srv: ServerProcess) -> dict[str, Any]:
    request = urllib.request.Request(
        srv.base_url + "/api/restart",
        method="POST",
        data=b"{}",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.status == 202
        answer: dict[str, Any] = json.load(response)
    return answer


def _cli_restart(srv: ServerProcess) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tether", "restart", "--url", srv.base_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


# A stand-in for "the code now installed", chosen by a file the test writes: the real code, a
# copy with a syntax error, or the real code with an invalid setting.
WRAPPER = """
import json, os, sys
plan = json.load(open(sys.argv[1]))
env = dict(os.environ)
if plan["mode"] == "broken-code":
    env["PYTHONPATH"] = plan["broken"]
argv = [sys.executable, "-m", "tether", *plan["args"]]
if plan["mode"] == "bad-config":
    argv += ["--buffer-size", "12"]
os.execve(sys.executable, argv, env)
"""


async def test_broken_code_or_config_leave_the_old_server_serving(tmp_path: Path) -> None:
    package = Path(__import__("tether").__file__).parent
    broken = tmp_path / "broken"
    shutil.copytree(package, broken / "tether", ignore=shutil.ignore_patterns("__pycache__"))
    with (broken / "tether" / "server" / "session.py").open("a") as module:
        module.write("\ndef broken(:\n")
    (tmp_path / "wrapper.py").write_text(WRAPPER)
    plan = tmp_path / "plan.json"
    command = f"{sys.executable} {tmp_path / 'wrapper.py'} {plan}"
    with start_server("--upgrade-command", command) as srv:
        args = Path(f"/proc/{srv.pid}/cmdline").read_bytes().split(b"\0")[:-1]
        serve_args = [a.decode() for a in args[args.index(b"serve") :]]

        def choose(mode: str) -> None:
            plan.write_text(json.dumps({"mode": mode, "broken": str(broken), "args": serve_args}))

        conn = await must_connect(srv.ws_url, project="default", client="broken-test-0001")
        choose("broken-code")
        refused = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "tether", "restart", "--url", srv.base_url],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert refused.returncode == 1
        assert len(refused.stderr.strip().splitlines()) == 1
        assert "SyntaxError" in refused.stderr, refused.stderr
        choose("bad-config")
        with pytest.raises(urllib.error.HTTPError) as answer:
            await asyncio.to_thread(_post_restart, srv)
        assert answer.value.code == 409
        assert "buffer-size" in json.load(answer.value)["error"]["message"]
        os.kill(srv.pid, signal.SIGUSR2)  # refused too: logged, and nothing changes
        await conn.send("echo still-$((6*7))\r")
        await conn.read_until("still-42")
        assert conn.close_code is None
        assert server_stats(srv.base_url)["server"]["generation"] == 1
        choose("good")
        os.kill(srv.pid, signal.SIGUSR2)
        assert await conn.wait_closed(30) == 1012
        assert (await wait_generation(srv.base_url, 2))["server"]["pid"] == srv.pid
        await conn.close()
        log = srv.log_file.read_text()
        assert log.count('"upgrade"') >= 3 and "SyntaxError" in log
