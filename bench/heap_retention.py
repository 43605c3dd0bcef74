"""Reproduce the server RSS growth seen by ``tether stress`` (aborts mid-replay).

    .venv/bin/python bench/heap_retention.py CYCLES [asyncio|uvloop] [trace]

The server runs in this process; a child opens CYCLES/8 sessions holding ~325 KB of output each
and makes CYCLES replays from offset 0 (20 at a time), each aborted at a random point. Prints the
RSS growth after every session ended, then after ``malloc_trim(0)``; with ``trace`` also the
largest Python allocations still alive (tracemalloc).

It runs the garbage collector before it measures, so it shows what survives a collection. The
growth that ``tether stress`` saw came from ended sessions held by a reference cycle until a
collection (fixed: docs/benchmarks.md, problem 7), which this measurement hides by design.
"""

import asyncio
import gc
import os
import sys
import tempfile
import tracemalloc
from pathlib import Path

import psutil
import uvloop
from aiohttp import web

from tether.server.aiohttp_front.app import create_app
from tether.server.config import build_settings

CLIENT = r"""
import asyncio, sys, random
from tether.tools.loaduser import Wire, new_http, session_id, read_at_least, read_until
async def main(url, cycles):
    async with new_http() as http:
        async def source():
            sid = session_id()
            w = await Wire.open(http, url, {"project": "default", "session": sid})
            await read_at_least(w, 1)
            await w.send(b"head -c 240000 /dev/urandom | base64 -w 120; echo __D''ONE__\r")
            await read_until(w, b"__DONE__\r\n", 60)
            return sid, w
        sources = await asyncio.gather(*(source() for _ in range(cycles // 8)))
        async def worker(k):
            for i in range(k, cycles, 20):
                sid = sources[i % len(sources)][0]
                query = {"project": "default", "session": sid, "offset": "0", "create": "0"}
                r = await Wire.open(http, url, query)
                await read_at_least(r, random.randrange(1, 300000))
                r.abort()
        await asyncio.gather(*(worker(k) for k in range(20)))
        for _, w in sources:
            await w.send(b"exit\r")
        await asyncio.sleep(1)
        print("done", flush=True)
        sys.stdin.readline()
asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


async def main():
    wd = Path(tempfile.mkdtemp())
    (wd / "p").mkdir()
    (wd / "h").mkdir()
    os.environ["HOME"] = str(wd / "h")
    s = build_settings(
        {
            "projects": [f"default={wd / 'p'}"],
            "shell": "bash --norc --noprofile",
            "log_file": str(wd / "log"),
            "storm_threshold": 100000,
        },
        cwd=wd,
    )
    runner = web.AppRunner(create_app(s), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"ws://127.0.0.1:{runner.addresses[0][1]}/ws/terminal"
    tracemalloc.start(6) if sys.argv[3:] == ["trace"] else None
    gc.collect()
    before = tracemalloc.take_snapshot() if tracemalloc.is_tracing() else None
    rss0 = psutil.Process().memory_info().rss
    c = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CLIENT,
        url,
        sys.argv[1],
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    await c.stdout.readline()
    await asyncio.sleep(2)
    gc.collect()
    after = tracemalloc.take_snapshot() if before else None
    rss1 = psutil.Process().memory_info().rss
    import ctypes

    ctypes.CDLL("libc.so.6").malloc_trim(0)
    rss2 = psutil.Process().memory_info().rss
    print("after malloc_trim MiB", (rss2 - rss0) / 2**20)
    print(
        "rss growth MiB",
        (rss1 - rss0) / 2**20,
        "sessions",
        len(
            runner.app[
                __import__(
                    "tether.server.aiohttp_front.context", fromlist=["SERVER_KEY"]
                ).SERVER_KEY
            ].manager.sessions
        ),
    )
    stats = after.compare_to(before, "traceback") if before else []
    for st in stats[:6]:
        print(st.size_diff / 1024, "KiB", st.count_diff, "blocks")
        for line in st.traceback.format()[-12:]:
            print("   ", line)
    c.stdin.write(b"\n")
    await c.stdin.drain()
    await c.wait()
    await runner.cleanup()


(uvloop.run if len(sys.argv) > 2 and sys.argv[2] == "uvloop" else asyncio.run)(main())
