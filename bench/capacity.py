"""One node at its limits: thousands of sessions on one server started with the defaults users get.

    .venv/bin/python -m bench.capacity \
        --sessions 4000 --typers 200 --herd 4000 --out bench/results/capacity-4000.json

``tether serve`` with no tuning flag (crash survival's supervisor on, the default storm rules,
``--max-sessions`` from the limits), only ``--shell 'bash --norc --noprofile'``. Then:

1. the limits the server announced at start (its ``limits`` log line);
2. ``--sessions`` sessions opened (50 at a time), all attached and idle: time to open them, the
   worker's RSS (the shells are other processes), its idle CPU over 10 s; then ``--typers`` of
   them type at a human pace (a key every 50–200 ms for 20 s) and their echo round trips are
   timed; then every shell exits;
3. the herd (:mod:`bench.herd`): ``--herd`` users, in ``--client-procs`` worker processes of
   light clients, attached through ``tether.proxy.TcpProxy`` (in this process), every connection
   aborted at once, every user typing while cut; each resumes with its offset and must see its
   stream byte-exact. The worker's CPU, the supervisor's, the proxy's and the clients' during the
   herd are reported apart. Then every session is ended and the worker's CPU is measured over
   5 s.

The bench runs on uvloop (as the server does).

Prints one JSON object; ``--out`` also writes it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import uvloop

from bench.herd import herd
from bench.targets import SHELL, TetherTarget
from bench.workloads import many_sessions
from tether.client import fetch_json
from tether.errors import ConnectFailed

MIB = 1024 * 1024


class DefaultTether(TetherTarget):
    """The server exactly as ``tether serve`` starts it, but for the shell."""

    def __init__(self, shell: str = SHELL, python: str | None = None) -> None:
        super().__init__(shell=shell, python=python)
        # Another interpreter gets no ``--auth none`` from the embedded server: given here.
        self.args = ("--shell", shell, *(("--auth", "none") if python else ()))


def _limits(target: DefaultTether) -> dict[str, Any]:
    assert target.server is not None
    log = target.server.workdir / "server.log"
    for line in log.read_text(encoding="utf-8").splitlines():
        event = json.loads(line)
        if event.get("event") == "limits":
            return {key: value for key, value in event.items() if key not in ("ts", "level")}
    return {}


async def _until_no_sessions(target: DefaultTether, timeout: float = 120) -> float:
    """End what the previous phase left (the typers' ``cat``) and wait until every shell has
    ended; returns the seconds waited."""
    assert target.server is not None and target.http is not None
    started = time.perf_counter()
    async with target.http.post(target.server.base_url + "/api/sessions/clear") as response:
        response.raise_for_status()
    while time.perf_counter() - started < timeout:
        try:
            stats = await fetch_json(target.server.base_url, "/stats/sessions")
        except ConnectFailed:
            continue  # busy ending thousands of shells: ask again
        if not stats["sessions"]:
            break
        await asyncio.sleep(0.5)
    return time.perf_counter() - started


async def _idle_cpu(target: DefaultTether, seconds: float) -> float:
    before, started = target.cpu_seconds(), time.perf_counter()
    await asyncio.sleep(seconds)
    return 100 * (target.cpu_seconds() - before) / (time.perf_counter() - started)


async def _herd(target: DefaultTether, clients: int, procs: int) -> dict[str, Any]:
    assert target.server is not None and target.worker_pid
    port = int(target.server.base_url.rsplit(":", 1)[1])
    others = tuple(pid for pid in (target.server.pid,) if pid and pid != target.worker_pid)
    load = os.getloadavg()[0]
    figures = await herd(port, clients, procs, (target.worker_pid, *others))
    return {"load_average_1m": load} | figures


async def measure(args: argparse.Namespace, figures: dict[str, Any]) -> None:
    """Fill ``figures`` phase by phase (what was measured stays when a later phase fails)."""
    target = DefaultTether(args.shell, args.server_python)
    await target.start()
    try:
        figures |= {"limits": _limits(target), "rss_start_mib": target.rss() / MIB}
        if args.sessions:
            started = time.perf_counter()
            figures["many"] = await many_sessions(target, args.sessions, args.typers)
            figures["many"]["total_s"] = time.perf_counter() - started
            figures["rss_after_many_mib"] = target.rss() / MIB
        if args.herd:
            figures["ended_all_s"] = await _until_no_sessions(target)
            figures["herd"] = await _herd(target, args.herd, args.client_procs)
            figures["herd"]["ended_all_s"] = await _until_no_sessions(target)
            figures["herd"]["cpu_after_percent"] = await _idle_cpu(target, 5.0)
        figures["rss_end_mib"] = target.rss() / MIB
    finally:
        await target.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.capacity")
    parser.add_argument("--sessions", type=int, default=4000)
    parser.add_argument("--typers", type=int, default=200)
    parser.add_argument("--herd", type=int, default=4000, help="herd clients (0: none)")
    parser.add_argument(
        "--client-procs", type=int, default=2, help="processes the herd's clients run in"
    )
    parser.add_argument("--shell", default=SHELL)
    parser.add_argument(
        "--server-python", help="the server's interpreter (another tree's, for a side by side)"
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    figures: dict[str, Any] = {}
    try:
        uvloop.run(measure(args, figures))
    finally:
        text = json.dumps(figures, indent=2)
        print(text)
        if args.out is not None:
            args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
