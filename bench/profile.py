"""Where the tether server spends its time in one workload: py-spy on the server process.

    .venv/bin/python -m bench.profile reattach --repeat 20 --top 25

Starts a tether target, attaches ``py-spy record --format raw`` to the server process, runs the
workload ``--repeat`` times, then prints the functions with the most samples: inclusive (the
function or anything it called was running) and self (it was running itself). ``--idle`` also
counts samples where the server was waiting (py-spy drops them by default: busy time only).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.targets import TetherTarget
from bench.workloads import HEAVY, LIGHT

PY_SPY = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")


def summarize(raw: Path, top: int) -> str:
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        for frame in set(frames):
            inclusive[frame] += count
        own[frames[-1]] += count
    lines = [f"{total} busy samples", "", "inclusive:"]
    lines += [f"{100 * n / total:5.1f}%  {f}" for f, n in inclusive.most_common(top)]
    lines += ["", "self:"]
    lines += [f"{100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> None:
    workload = {**LIGHT, **HEAVY}[args.workload]
    target = TetherTarget(*args.server_args)
    await target.start()
    raw = Path(tempfile.mkdtemp(prefix="bench-profile-")) / "stacks.txt"
    assert target.server is not None and target.server.pid is not None
    worker = target.worker_pid or target.server.pid  # under a supervisor: the serving child
    spy = subprocess.Popen(
        [PY_SPY, "record", "--pid", str(worker), "--format", "raw",
         "--rate", str(args.rate), "--output", str(raw), "--nonblocking",
         *(["--idle"] if args.idle else [])],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await asyncio.sleep(1.0)
        for _ in range(args.repeat):
            await workload(target)
    finally:
        spy.send_signal(2)
        spy.wait(30)
        await target.stop()
    print(summarize(raw, args.top))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("workload", choices=sorted({**LIGHT, **HEAVY}))
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--idle", action="store_true")
    parser.add_argument(
        "--serve-arg",
        dest="server_args",
        action="append",
        default=[],
        help="an extra `tether serve` argument (repeat it): --serve-arg=--shell --serve-arg=dash",
    )
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
