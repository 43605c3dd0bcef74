"""Where the machine's CPU goes per new session, while sessions are created as fast as they can be.

    .venv/bin/python -m bench.cpu_per_session [--seconds 8] [--shell "bash --norc --noprofile"]

Runs the ``sessions_per_second`` workload against a freshly started tether and reads, before and
after: the server process's own CPU (user, system), the CPU of the shells it started and reaped
(the server's ``children`` times: every shell is its child and is reaped before the end), this
process's CPU (the load-generating client) and the whole machine's busy time (``/proc/stat``).
Each is divided by the number of sessions made.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

from bench.targets import TetherTarget
from bench.workloads import sessions_per_second
from tether.tools.embedded import SHELL


def _machine_busy_seconds() -> float:
    with open("/proc/stat") as handle:
        fields = [int(x) for x in handle.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")


async def measure(seconds: float, shell: str) -> dict[str, float]:
    target = TetherTarget(shell=shell)
    await target.start()
    try:
        await asyncio.sleep(1.0)
        server = target.process()
        before, client0, machine0 = server.cpu_times(), time.process_time(), _machine_busy_seconds()
        started = time.perf_counter()
        figures = await sessions_per_second(target, seconds=seconds)
        elapsed = time.perf_counter() - started
        after, client1, machine1 = server.cpu_times(), time.process_time(), _machine_busy_seconds()
    finally:
        await target.stop()
    sessions = figures["sessions_per_s"] * elapsed
    shells = (after.children_user + after.children_system) - (
        before.children_user + before.children_system
    )
    per = {
        "server user": after.user - before.user,
        "server system": after.system - before.system,
        "shells": shells,
        "client (this process)": client1 - client0,
    }
    machine = machine1 - machine0
    per["rest (kernel threads, other processes)"] = machine - sum(per.values())
    result = {name: 1000 * value / sessions for name, value in per.items()}
    result["machine, all of it"] = 1000 * machine / sessions
    result["sessions/s"] = figures["sessions_per_s"]
    result["machine busy %"] = 100 * machine / (elapsed * (os.cpu_count() or 1))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cpu_per_session")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--shell", default=SHELL)
    args = parser.parse_args()
    result = asyncio.run(measure(args.seconds, args.shell))
    print(f"shell: {args.shell}")
    rate, busy = result.pop("sessions/s"), result.pop("machine busy %")
    print(f"sessions/s: {rate:.0f}, machine busy {busy:.0f} %")
    print("CPU per session (ms):")
    for name, value in result.items():
        print(f"  {name:40} {value:6.2f}")


if __name__ == "__main__":
    main()
