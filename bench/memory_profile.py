"""Where a tether server's memory per idle session goes: tracemalloc in an in-process server.

    .venv/bin/python -m bench.memory_profile --sessions 200 --top 25

The server runs in this process
(``tether.server.aiohttp_front.app.create_app``) with tracemalloc on; a child process
opens ``--sessions`` sessions (first byte read, connections kept open: attached and idle), then
``--detach`` closes them. Prints the Python allocations per session by source line, and RSS growth.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import tracemalloc
from pathlib import Path

import psutil
from aiohttp import web

from tether.server.aiohttp_front.app import create_app
from tether.server.config import build_settings

CLIENT = r"""
import asyncio, sys
from tether.tools.loaduser import Wire, new_http, session_id
async def main(url, count, detach):
    async with new_http() as http:
        wires = []
        for _ in range(count):
            wire = await Wire.open(http, url, {"project": "default", "session": session_id()})
            await wire.receive()
            wires.append(wire)
        if detach:
            for wire in wires:
                await wire.close()
        print("ready", flush=True)
        sys.stdin.readline()
asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"))
"""


async def measure(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    (workdir / "project").mkdir()
    (workdir / "home").mkdir()
    os.environ["HOME"] = str(workdir / "home")
    settings = build_settings(
        {
            "projects": [f"default={workdir / 'project'}"],
            "shell": "bash --norc --noprofile",
            "log_file": str(workdir / "server.log"),
            "max_sessions": 5000,
            "auth": "none",
            "allow_same_user_shells": True,
        },
        cwd=workdir,
    )
    runner = web.AppRunner(create_app(settings), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"ws://127.0.0.1:{runner.addresses[0][1]}/ws/terminal"
    process = psutil.Process()
    await asyncio.sleep(0.5)
    tracemalloc.start(args.depth)
    before, rss_before = tracemalloc.take_snapshot(), process.memory_info().rss
    client = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CLIENT, url, str(args.sessions), "1" if args.detach else "0",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert client.stdout is not None and client.stdin is not None
    await client.stdout.readline()
    await asyncio.sleep(1.0)
    after, rss_after = tracemalloc.take_snapshot(), process.memory_info().rss
    stats = after.compare_to(before, args.by)
    traced = sum(stat.size_diff for stat in stats)
    print(f"{args.sessions} sessions ({'detached' if args.detach else 'attached'}):")
    print(f"  RSS growth {(rss_after - rss_before) / args.sessions / 1024:.1f} KiB per session")
    print(f"  traced Python allocations {traced / args.sessions / 1024:.1f} KiB per session")
    for stat in stats[: args.top]:
        frame = stat.traceback[0]
        where = f"{Path(frame.filename).name}" + (f":{frame.lineno}" if args.by == "lineno" else "")
        print(f"  {stat.size_diff / args.sessions:8.0f} B  {stat.count_diff / args.sessions:5.1f} "
              f"blocks  {where}")  # fmt: skip
    client.stdin.write(b"\n")
    await client.stdin.drain()
    await client.wait()
    await runner.cleanup()
    shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.memory_profile")
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--depth", type=int, default=1)
    parser.add_argument("--by", choices=("lineno", "filename"), default="lineno")
    parser.add_argument("--detach", action="store_true", help="close the connections first")
    asyncio.run(measure(parser.parse_args()))


if __name__ == "__main__":
    main()
