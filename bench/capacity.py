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
3. the herd: ``--herd`` users attached through ``tether.proxy.TcpProxy``, every connection
   aborted at once, every user typing while cut; each resumes with its offset and must see its
   stream byte-exact. Then the worker's CPU over 5 s once they are back.

Prints one JSON object; ``--out`` also writes it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

from bench.targets import SHELL, TetherTarget
from bench.workloads import herd, many_sessions
from tether.client import fetch_json

MIB = 1024 * 1024


class DefaultTether(TetherTarget):
    """The server exactly as ``tether serve`` starts it, but for the shell."""

    def __init__(self, shell: str = SHELL) -> None:
        super().__init__(shell=shell)
        self.args = ("--shell", shell)


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
        stats = await fetch_json(target.server.base_url, "/stats/sessions")
        if not stats["sessions"]:
            break
        await asyncio.sleep(0.5)
    return time.perf_counter() - started


async def _idle_cpu(target: DefaultTether, seconds: float) -> float:
    before, started = target.cpu_seconds(), time.perf_counter()
    await asyncio.sleep(seconds)
    return 100 * (target.cpu_seconds() - before) / (time.perf_counter() - started)


async def measure(args: argparse.Namespace, figures: dict[str, Any]) -> None:
    """Fill ``figures`` phase by phase (what was measured stays when a later phase fails)."""
    target = DefaultTether(args.shell)
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
            figures["herd"] = await herd(target, args.herd)
            figures["herd"]["cpu_after_percent"] = await _idle_cpu(target, 5.0)
        figures["rss_end_mib"] = target.rss() / MIB
    finally:
        await target.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.capacity")
    parser.add_argument("--sessions", type=int, default=4000)
    parser.add_argument("--typers", type=int, default=200)
    parser.add_argument("--herd", type=int, default=4000, help="herd clients (0: none)")
    parser.add_argument("--shell", default=SHELL)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    figures: dict[str, Any] = {}
    try:
        asyncio.run(measure(args, figures))
    finally:
        text = json.dumps(figures, indent=2)
        print(text)
        if args.out is not None:
            args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
