"""SIGKILL of the serving process (the worker) loses no shell: the supervisor, or a test playing
systemd's file-descriptor store, hands the PTYs and their state to a new worker on the same
port, with the same shell PIDs, exact input counts and output kept in a memfd."""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import select
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.resuming import ResumingClient
from tests.support.server import (
    SHELL,
    ServerProcess,
    controlled_environment,
    eventually,
    server_stats,
    wait_generation,
)
from tests.support.wsclient import must_connect, strip_ansi
from tether.server import fdstore, pty

pytestmark = pytest.mark.timeout(120)

RECOVERY_LIMIT = 10.0  # seconds: the promise


async def recovered(base_url: str, generation: int) -> dict[str, Any]:
    """Stats once ``generation`` serves, within the issue's promise (RECOVERY_LIMIT)."""
    return await wait_generation(base_url, generation, timeout=RECOVERY_LIMIT)


def pids_by_key(facts: dict[str, Any]) -> dict[str, int]:
    return {s["key"]: s["pid"] for s in facts["sessions"]}


async def test_sigkill_with_nothing_in_flight_is_exact() -> None:
    with ServerProcess(supervise=True).start() as srv:
        conns = [
            await must_connect(srv.ws_url, project="default", client=f"crash-{i:04d}-client")
            for i in range(3)
        ]
        for index, conn in enumerate(conns):
            await conn.send(f"echo ready-{index}-$((6*7))\r")
            await conn.read_until(f"ready-{index}-42")
        before = await asyncio.to_thread(server_stats, srv.base_url)
        worker = before["server"]["pid"]
        assert worker != srv.pid  # the supervisor started it
        started = time.monotonic()
        os.kill(worker, signal.SIGKILL)
        after = await recovered(srv.base_url, 2)
        assert time.monotonic() - started < RECOVERY_LIMIT
        assert after["server"]["pid"] not in (worker, srv.pid)
        assert pids_by_key(after) == pids_by_key(before)
        for index, conn in enumerate(conns):
            assert await conn.wait_closed(5) == 1006  # the worker died: no close frame
            again = await must_connect(
                srv.ws_url,
                project="default",
                client=f"crash-{index:04d}-client",
                session=conn.hello["session"],
                offset=conn.position,
                create=0,
            )
            assert again.hello["gap"] == 0 and again.hello["replay_from"] == conn.position
            assert again.hello["input_acked"] == len(f"echo ready-{index}-$((6*7))\r")
            await again.send("echo alive-$$\r")
            await again.read_until(f"alive-{pids_by_key(before)[conn.hello['key']]}")
            await again.close()
            await conn.close()


async def test_after_a_crash_a_replay_from_the_tail_restores_the_modes_it_lost() -> None:
    # The alternate screen and application cursor keys were set, then scrolled out of a 4 KiB
    # ring: a client replaying from the tail needs them restored, from the new worker too.
    with ServerProcess(args=("--buffer-size", "4096"), supervise=True).start() as srv:
        conn = await must_connect(srv.ws_url, project="default", client="modes-0001-client")
        await conn.send("printf '\\033[?1049h\\033[?1h'; seq 1 3000; echo set-$((6*7))\r")
        await conn.read_until("set-42")
        worker = (await asyncio.to_thread(server_stats, srv.base_url))["server"]["pid"]
        os.kill(worker, signal.SIGKILL)
        await recovered(srv.base_url, 2)
        late = await must_connect(
            srv.ws_url,
            project="default",
            client="modes-0002-client",
            session=conn.hello["session"],
            offset=0,  # long gone: the replay starts at the ring's tail
            create=0,
        )
        assert late.hello["gap"] > 0
        assert "\x1b[?1049h" in late.hello["restore"] and "\x1b[?1h" in late.hello["restore"]
        await late.close()
        await conn.close()


def exit_events(srv: ServerProcess) -> dict[int, dict[str, Any]]:
    """The log's `exit` events by shell pid."""
    lines = srv.log_file.read_text().splitlines() if srv.log_file.exists() else []
    events = [json.loads(line) for line in lines if '"event":"exit"' in line]
    return {event["pid"]: event for event in events}


async def test_shells_reaped_by_the_supervisor_report_their_exit_status() -> None:
    # One shell exits while no worker runs (the supervisor waits 1 s before restarting it),
    # the other after the new worker adopted it: both are the supervisor's children to reap,
    # and both statuses reach the new worker (its log, the client's `exit` message).
    env = {"TETHER_SUPERVISOR_RESTART_DELAY": "1"}
    with ServerProcess(env=env, supervise=True).start() as srv:
        early = await must_connect(srv.ws_url, project="default", client="exit-0001-client")
        late = await must_connect(srv.ws_url, project="default", client="exit-0002-client")
        for conn in (early, late):
            await conn.send("echo up-$((6*7))\r")
            await conn.read_until("up-42")
        before = pids_by_key(await asyncio.to_thread(server_stats, srv.base_url))
        early_pid, late_pid = before[early.hello["key"]], before[late.hello["key"]]
        await early.send("sleep 0.3; exit 5\r")
        worker = (await asyncio.to_thread(server_stats, srv.base_url))["server"]["pid"]
        os.kill(worker, signal.SIGKILL)
        after = await recovered(srv.base_url, 2)
        assert late.hello["key"] in pids_by_key(after)
        found = await eventually(lambda: exit_events(srv).get(early_pid), timeout=10)
        assert (found["code"], found["signal"]) == (5, None)
        again = await must_connect(
            srv.ws_url,
            project="default",
            client="exit-0002-client",
            session=late.hello["session"],
            offset=late.position,
            create=0,
        )
        await again.send("exit 7\r")
        message = await again.message("exit", timeout=10)
        assert (message["code"], message["signal"]) == (7, None)
        assert exit_events(srv)[late_pid]["code"] == 7
        for conn in (early, late, again):
            await conn.close()


async def test_a_worker_whose_supervisor_is_killed_drains_and_leaves_no_shell() -> None:
    with ServerProcess(supervise=True).start() as srv:
        conn = await must_connect(srv.ws_url, project="default", client="orphan-0001-client")
        await conn.send("echo up-$((6*7))\r")
        await conn.read_until("up-42")
        facts = await asyncio.to_thread(server_stats, srv.base_url)
        worker, shell = facts["server"]["pid"], facts["sessions"][0]["pid"]
        os.kill(srv.pid, signal.SIGKILL)  # the supervisor: nothing would restart a crash now
        assert srv.process is not None and srv.process.wait(10) == -signal.SIGKILL
        assert await conn.wait_closed(10) == 1001  # drained as on SIGTERM, not cut
        gone = pty.is_zombie_or_gone
        await eventually(lambda: gone(worker) and gone(shell), timeout=15)
        await conn.close()


async def test_sigkill_during_output_and_typing_keeps_shells_and_counts_input_once() -> None:
    await _kill_during_output_and_typing(kills=3, lines=6000, seed=13)


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.nightly  # deselected by default: ./dev test -m nightly
async def test_twenty_sigkills_at_random_moments_nightly() -> None:
    await _kill_during_output_and_typing(kills=20, lines=60000, seed=None)


async def _kill_during_output_and_typing(kills: int, lines: int, seed: int | None) -> None:
    rng = random.Random(seed)
    with ServerProcess(supervise=True).start() as srv:
        printer = ResumingClient(srv.ws_url, "crash-printer-000001")
        typist = ResumingClient(srv.ws_url, "crash-typist-0000001")
        typed = bytearray()
        async with aiohttp.ClientSession() as http:
            for client in (printer, typist):
                await client.connect(http)
                await client.type(b"stty -echo; PS1=''\r")
            before = pids_by_key(await asyncio.to_thread(server_stats, srv.base_url))
            await typist.type(b"cat > typed.txt\r")
            await printer.type(
                f"for i in $(seq 1 {lines}); do echo line-$i; (( i % 100 )) || sleep 0.03;"
                " done; echo DONE-$((6*7))\r".encode()
            )

            async def kill_now_and_then() -> None:
                for generation in range(2, 2 + kills):
                    # At a random moment, not just after a request: its answer would come in
                    # the loop iteration where the worker writes the clients' resent input.
                    worker = (await recovered(srv.base_url, generation - 1))["server"]
                    await asyncio.sleep(rng.uniform(0.2, 0.5))
                    os.kill(worker["pid"], signal.SIGKILL)
                await recovered(srv.base_url, 1 + kills)

            async def type_lines() -> None:
                for i in range(70 * kills):
                    token = f"key-{i}\n".encode()
                    typed.extend(token)
                    await typist.type(token)
                    await asyncio.sleep(0.01)
                await typist.type(b"\x04echo TYPED-$((6*7))\r")

            await asyncio.gather(
                kill_now_and_then(),
                printer.run_until(b"DONE-42", http, 30 + 3 * kills),
                type_lines(),
                typist.run_until(b"TYPED-42", http, 30 + 3 * kills),
            )
            after = await recovered(srv.base_url, 1 + kills)
            await printer.close()
            await typist.close()
        assert pids_by_key(after) == before  # every shell still there
        written = (srv.project_dir / "typed.txt").read_bytes()
        assert written == bytes(typed), _token_difference(written, bytes(typed))  # never doubled
        text = strip_ansi(bytes(printer.output)).replace("\r", "")
        numbers = [int(n) for n in re.findall(r"^line-(\d+)$", text, flags=re.MULTILINE)]
        assert numbers == sorted(set(numbers)), "a line arrived twice"
        missing = sorted(set(range(1, lines + 1)) - set(numbers))
        reported = sum(h["gap"] for c in (printer, typist) for h in c.hellos)
        # Output kept in the memfd: nothing is lost but the one read(2) in flight at a kill
        # (docs/architecture.md); any other loss would have been reported as a gap.
        assert reported > 0 or _runs(missing) <= kills, (missing, reported)


def _token_difference(written: bytes, typed: bytes) -> str:
    got, sent = written.split(b"\n"), typed.split(b"\n")
    doubled = sorted({t for t in got if got.count(t) > 1})
    missing = [t for t in sent if t not in got]
    return f"doubled: {doubled[:10]}, missing: {missing[:10]}, {len(got)} vs {len(sent)} lines"


def _runs(numbers: list[int]) -> int:
    return sum(1 for i, n in enumerate(numbers) if i == 0 or numbers[i - 1] != n - 1)


# ----------------------------------------------------------------------------- systemd's part
class FakeSystemd:
    """What systemd does for a Type=notify service with FileDescriptorStoreMax=: a notify
    socket that keeps the fds it is sent, and LISTEN_FDS for the next start."""

    def __init__(self, srv: ServerProcess) -> None:
        self.srv = srv
        self.name = f"tether-test-systemd-{os.getpid()}-{id(self)}"
        self.sock = fdstore.server_socket(self.name)
        self.store = fdstore.FdStore()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        srv = self.srv
        srv.home.mkdir(parents=True, exist_ok=True)
        srv.project_dir.mkdir(parents=True, exist_ok=True)
        serve = [
            sys.executable, "-m", "tether", "serve", "--host", "127.0.0.1",
            "--port", str(srv.port), "--shell", SHELL, "--log-file", str(srv.log_file),
            "--auth", "none", "--allow-same-user-shells", "--kill-grace", "1",
            "--drain-grace", "0.2", "--project", f"default={srv.project_dir}",
        ]  # fmt: skip
        env = controlled_environment(srv.home, {"NOTIFY_SOCKET": "@" + self.name})
        count = len(self.store.entries)
        if count:  # LISTEN_PID must be the service's pid: let a shell exec into it
            env |= {k: v for k, v in self.store.environment(0).items() if k != "LISTEN_PID"}
            serve = ["/bin/sh", "-c", 'LISTEN_PID=$$ exec "$@"', "sh", *serve]
        self.process = subprocess.Popen(
            serve,
            cwd=srv.workdir,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=self.store.place if count else None,
            pass_fds=tuple(range(fdstore.LISTEN_FDS_START, fdstore.LISTEN_FDS_START + count)),
        )
        self.store.ready = False
        deadline = time.monotonic() + 20
        while not self.store.ready:
            assert time.monotonic() < deadline and self.process.poll() is None, "never READY=1"
            select.select([self.sock], [], [], 0.1)
            self.store.receive(self.sock)

    def names(self) -> list[str]:
        self.store.receive(self.sock)
        return [name for name, _ in self.store.entries]

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(20)
        self.store.close()
        self.sock.close()


@pytest.fixture
def systemd() -> Iterator[FakeSystemd]:
    with ServerProcess() as srv:
        srv.port = _free_port()
        fake = FakeSystemd(srv)
        try:
            yield fake
        finally:
            fake.stop()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_under_systemds_protocol_the_fd_store_brings_sessions_back(
    systemd: FakeSystemd,
) -> None:
    systemd.start()
    base = systemd.srv.base_url
    names = systemd.names()
    assert names.count("listen.0") == 1 and names.count("server") == 1
    conns = [
        await must_connect(systemd.srv.ws_url, project="default", client=f"sd-{i:04d}-client")
        for i in range(2)
    ]
    for conn in conns:
        await conn.send("echo stored-$((6*7))\r")
        await conn.read_until("stored-42")
    before = await asyncio.to_thread(server_stats, base)
    names = systemd.names()
    assert sum(n.startswith("pty.") for n in names) == 2
    assert sum(n.startswith("state.") for n in names) == 2
    systemd.kill()
    systemd.start()  # what Restart= does: the stored fds come back as LISTEN_FDS
    after = await recovered(base, 2)
    assert pids_by_key(after) == pids_by_key(before)
    resumed = await must_connect(
        systemd.srv.ws_url,
        project="default",
        client="sd-0000-client",
        session=conns[0].hello["session"],
        offset=conns[0].position,
        create=0,
    )
    assert resumed.hello["gap"] == 0
    assert resumed.hello["input_acked"] == len("echo stored-$((6*7))\r")
    key = conns[1].hello["key"]
    request = urllib.request.Request(f"{base}/api/sessions/{key}", method="DELETE")
    await asyncio.to_thread(urllib.request.urlopen, request)
    await resumed.send("echo after-$((6*7))\r")
    await resumed.read_until("after-42")  # the store has had time to hear of the kill
    names = systemd.names()
    assert sum(n.startswith("pty.") for n in names) == 1  # FDSTOREREMOVE of the killed one
    assert sum(n.startswith("state.") for n in names) == 1
    for conn in [*conns, resumed]:
        await conn.close()


async def test_crash_then_upgrade_then_crash_keeps_everything_exact() -> None:
    # The state memfd crosses the upgrade's exec and goes on being written after it.
    with ServerProcess(supervise=True).start() as srv:
        conn = await must_connect(srv.ws_url, project="default", client="mixed-0001-client")
        await conn.send("echo one-$((6*7))\r")
        await conn.read_until("one-42")
        before = await asyncio.to_thread(server_stats, srv.base_url)
        sent = len("echo one-$((6*7))\r")
        position = conn.position
        for generation, how in ((2, signal.SIGKILL), (3, signal.SIGUSR2), (4, signal.SIGKILL)):
            worker = (await recovered(srv.base_url, generation - 1))["server"]["pid"]
            os.kill(worker, how)
            assert await conn.wait_closed(10) == (1012 if how == signal.SIGUSR2 else 1006)
            await conn.close()
            facts = await recovered(srv.base_url, generation)
            assert pids_by_key(facts) == pids_by_key(before)
            conn = await must_connect(
                srv.ws_url,
                project="default",
                client="mixed-0001-client",
                session=before["sessions"][0]["session"],
                offset=position,
                create=0,
            )
            assert conn.hello["gap"] == 0 and conn.hello["input_acked"] == sent
            command = f"echo gen-{generation}-$((6*7))\r"
            await conn.send(command)
            await conn.read_until(f"gen-{generation}-42")
            sent += len(command)
            position = conn.position
        await conn.close()


def test_a_worker_that_cannot_start_is_not_restarted_in_a_loop(tmp_path: Path) -> None:
    srv = ServerProcess(
        args=("--auth", "token", "--tokens-file", str(tmp_path / "missing.toml")), supervise=True
    )
    with pytest.raises(RuntimeError, match="tokens") as failed:
        srv.start()  # the supervisor exits with the worker's status and its one-line reason
    srv.cleanup()
    assert str(failed.value).count("invalid configuration") == 1  # started once, not again
    assert "restarting" not in str(failed.value)
