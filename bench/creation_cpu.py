"""What a new session costs the server in CPU, side by side: the worker's and the supervisor's
CPU per session while ``--sessions`` sessions are opened, read to their first byte and told
to exit, ``--width`` at a time (the ``sessions_per_second`` loop, bounded by count).

    .venv/bin/python -m bench.creation_cpu --targets tether,old \\
        --python old=/tmp/tether-old/.venv/bin/python --serve-args "old=--auth none" --rounds 3

On a shared machine the rate swings with the other processes' load; the CPU a session costs
the server moves much less, and it is what bounds the rate once the cores are busy. Targets
take turns (one round is every target once), so slow periods fall on all of them alike.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import statistics
import time
from pathlib import Path

import psutil

from bench.targets import TetherTarget, make_target
from bench.workloads import first_bytes


async def measure(target: TetherTarget, sessions: int, width: int) -> dict[str, float]:
    assert target.server is not None and target.server.pid is not None
    worker, supervisor = target.process(), psutil.Process(target.server.pid)
    pending = iter(range(sessions))

    async def client() -> None:
        for _ in pending:
            link, _name = await target.open()
            await first_bytes(link, 10)
            await link.send(b"exit\r")
            await link.close()

    await asyncio.sleep(0.5)
    before = worker.cpu_times(), supervisor.cpu_times(), time.process_time()
    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(width)))
    elapsed = time.perf_counter() - started
    await asyncio.sleep(0.5)  # the last sessions' ends
    after = worker.cpu_times(), supervisor.cpu_times(), time.process_time()

    def per_session(seconds: float) -> float:
        return 1000 * seconds / sessions

    return {
        "sessions_per_s": sessions / elapsed,
        "worker_ms": per_session(sum(after[0][:2]) - sum(before[0][:2])),
        "worker_user_ms": per_session(after[0].user - before[0].user),
        "worker_system_ms": per_session(after[0].system - before[0].system),
        "supervisor_ms": per_session(sum(after[1][:2]) - sum(before[1][:2])),
        "shells_ms": per_session(
            after[0].children_user
            + after[0].children_system
            - before[0].children_user
            - before[0].children_system
        ),
        "bench_client_ms": per_session(after[2] - before[2]),
    }


async def run(args: argparse.Namespace) -> dict[str, list[dict[str, float]]]:
    pythons = dict(item.split("=", 1) for item in args.python)
    extra = {name: tuple(shlex.split(a)) for name, a in (i.split("=", 1) for i in args.serve_args)}
    names = args.targets.split(",")
    results: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for round_number in range(args.rounds):
        for name in names[round_number % len(names) :] + names[: round_number % len(names)]:
            target = make_target(name, pythons=pythons, extra_args=extra)
            assert isinstance(target, TetherTarget), "tether targets only"
            await target.start()
            try:
                figures = await measure(target, args.sessions, args.width)
            finally:
                await target.stop()
            results[name].append(figures)
            shown = {key: round(value, 3) for key, value in figures.items()}
            print(f"round {round_number + 1} {name:10} {shown}", flush=True)
    return results


def table(results: dict[str, list[dict[str, float]]]) -> str:
    names = list(results)
    keys = list(next(iter(results.values()))[0])
    lines = ["| median of the rounds | " + " | ".join(names) + " |"]
    lines.append("|---|" + "---|" * len(names))
    for key in keys:
        cells = [f"{statistics.median(r[key] for r in results[n]):.3g}" for n in names]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.creation_cpu")
    parser.add_argument("--targets", default="tether")
    parser.add_argument("--python", action="append", default=[], metavar="NAME=PATH")
    parser.add_argument("--serve-args", action="append", default=[], metavar="NAME=ARGS")
    parser.add_argument("--sessions", type=int, default=1500)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results = asyncio.run(run(args))
    print(table(results))
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
