"""The workloads, written once against bench.targets.Link; each returns a dict of figures."""

from __future__ import annotations

import asyncio
import contextlib
import random
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench.targets import Link, Target, TetherTarget
from tether.tools.leftovers import delete_session
from tether.tools.loadkit import Recorder, percentile
from tether.tools.loaduser import TypingUser, new_http
from tether.tools.proxy import TcpProxy

MIB = 2**20
THROUGHPUT_COMMAND = b"head -c 50000000 /dev/zero | base64; echo __BEN''CH_END__\r"
THROUGHPUT_END = b"__BENCH_END__"


async def first_bytes(link: Link, timeout: float = 30) -> bytes:
    async with asyncio.timeout(timeout):
        return await link.receive()


async def read_until(link: Link, needle: bytes, timeout: float = 120) -> int:
    """Read until ``needle``; returns the number of bytes read."""
    total, tail = 0, b""
    async with asyncio.timeout(timeout):
        while True:
            data = await link.receive()
            total += len(data)
            window = tail + data
            if needle in window:
                return total
            tail = window[-len(needle) :]


async def settle(link: Link, quiet: float = 0.2) -> None:
    """Read whatever comes until ``quiet`` seconds pass without output."""
    with contextlib.suppress(TimeoutError, EOFError):
        while True:
            await asyncio.wait_for(link.receive(), quiet)


async def in_parallel(count: int, width: int, job: Callable[[int], Awaitable[Any]]) -> list[Any]:
    indices, results = iter(range(count)), [None] * count

    async def worker() -> None:
        for index in indices:
            results[index] = await job(index)

    await asyncio.gather(*(worker() for _ in range(width)))
    return results


# ------------------------------------------------------------------------------- light ones
async def new_session(target: Target, samples: int = 30, gap: float = 0.2) -> dict[str, Any]:
    """New session → first output byte (the prompt), attempts ``gap`` seconds apart."""
    durations = []
    for _ in range(samples):
        started = time.perf_counter()
        link, _ = await target.open()
        await first_bytes(link)
        durations.append(time.perf_counter() - started)
        await link.send(b"exit\r")
        await link.close()
        await asyncio.sleep(gap)
    return {"new_session_ms": 1000 * statistics.median(durations)}


async def new_session_back_to_back(target: Target) -> dict[str, Any]:
    """As ``new_session``, attempts 10 ms apart (figure ``new_session_hot_ms``)."""
    figures = await new_session(target, gap=0.01)
    return {"new_session_hot_ms": figures["new_session_ms"]}


async def reattach(target: Target, samples: int = 30, gap: float = 0.05) -> dict[str, Any]:
    """Re-attach to a session with buffered output → hello and the first replayed byte.

    ``gap`` is the pause between attempts: on this machine an idle gap of 50 ms doubles the
    latency of every target compared with back-to-back attempts (caches and CPU go cold).
    """
    if not target.replays:
        return {}
    link, name = await target.open()
    await first_bytes(link)
    await link.send(b"seq 1 200\r")
    await settle(link)
    await link.close()
    durations = []
    for _ in range(samples):
        await asyncio.sleep(gap)
        started = time.perf_counter()
        again, _ = await target.open(name)
        await first_bytes(again)
        durations.append(time.perf_counter() - started)
        await again.close()
    last, _ = await target.open(name)
    await last.send(b"exit\r")
    await last.close()
    return {"reattach_ms": 1000 * statistics.median(durations)}


async def reattach_back_to_back(target: Target) -> dict[str, Any]:
    """As ``reattach``, attempts 2 ms apart (figure ``reattach_hot_ms``)."""
    figures = await reattach(target, gap=0.002)
    return {"reattach_hot_ms": figures["reattach_ms"]} if figures else {}


async def start_cat(link: Link) -> None:
    """Replace the shell by ``cat`` (after its prompt was read): keys echo, lines come back."""
    await settle(link, 0.1)
    await link.send(b"exec cat\r")
    await settle(link, 0.3)


async def type_and_time(link: Link, keys: int, pace: tuple[float, float] = (0, 0)) -> list[float]:
    """Type ``keys`` letters into ``cat``, each after the previous echo; Enter every 40."""
    rng, latencies, line = random.Random(), [], bytearray()
    for index in range(keys):
        char = bytes((97 + index % 26,))
        started = time.perf_counter()
        await link.send(char)
        got = await link.receive()
        latencies.append(time.perf_counter() - started)
        line += char
        pending = len(got) - 1
        if len(line) == 40:
            await link.send(b"\r")
            pending += 2 + len(line) + 2
            line.clear()
        while pending > 0:
            pending -= len(await link.receive())
        if pace[1]:
            await asyncio.sleep(rng.uniform(*pace))
    return latencies


async def echo(target: Target, keys: int = 500) -> dict[str, Any]:
    """Keystroke echo round trip: median and p99 over ``keys``."""
    link, _ = await target.open()
    await first_bytes(link)
    await start_cat(link)
    cpu = target.cpu_ns()
    latencies = await type_and_time(link, keys)
    cpu = target.cpu_ns() - cpu
    await link.send(b"\x04")
    await link.close()
    return {
        "echo_p50_ms": 1000 * statistics.median(latencies),
        "echo_p99_ms": 1000 * percentile(latencies, 0.99),
        "echo_cpu_us": cpu / keys / 1000,
    }


async def throughput(target: Target) -> dict[str, Any]:
    """``head -c 50000000 /dev/zero | base64`` read as fast as possible: MB/s, server CPU."""
    link, _ = await target.open()
    await first_bytes(link)
    await settle(link)
    cpu = target.cpu_seconds()
    started = time.perf_counter()
    await link.send(THROUGHPUT_COMMAND)
    total = await read_until(link, THROUGHPUT_END + b"\r\n")
    elapsed = time.perf_counter() - started
    cpu = target.cpu_seconds() - cpu
    await link.send(b"exit\r")
    await link.close()
    return {
        "throughput_mb_s": total / elapsed / 1e6,
        "throughput_cpu_s": cpu,
        "throughput_bytes": total,
    }


async def idle_memory(target: Target, sessions: int = 200) -> dict[str, Any]:
    """Server memory per idle attached session (the shells are other processes)."""
    if target.name == "pty":
        return {}
    await asyncio.sleep(0.5)
    before = target.rss()
    links = await in_parallel(sessions, 20, lambda _: _open_first_byte(target))
    await asyncio.sleep(1.0)
    after = target.rss()
    figures = {"idle_kib_per_session": (after - before) / sessions / 1024}
    if isinstance(target, TetherTarget):
        figures["ring_bytes_per_session"] = await _ring_bytes(target)
    await asyncio.gather(*(_exit(link) for link, _ in links))
    return figures


async def _open_first_byte(target: Target) -> tuple[Link, str]:
    link, name = await target.open()
    await first_bytes(link)
    return link, name


async def _exit(link: Link) -> None:
    with contextlib.suppress(Exception):
        await link.send(b"exit\r")
    await link.close()


async def _ring_bytes(target: TetherTarget) -> float:
    from tether.client import fetch_json

    assert target.server is not None
    stats = await fetch_json(target.server.base_url, "/stats/sessions")
    entries = stats["sessions"]
    return sum(e["buffered_bytes"] for e in entries) / max(1, len(entries))


async def stalled_client(target: Target, stall: float = 15.0) -> dict[str, Any]:
    """A client stops reading while 68 MB are printed: the server's RSS growth."""
    if target.name == "pty":
        return {}
    link, _ = await target.open()
    await first_bytes(link)
    await settle(link)
    await asyncio.sleep(0.5)
    before, peak = target.rss(), 0
    await link.send(THROUGHPUT_COMMAND)
    deadline = time.monotonic() + stall
    while time.monotonic() < deadline:
        peak = max(peak, target.rss())
        await asyncio.sleep(0.2)
    total = await read_until(link, THROUGHPUT_END + b"\r\n", 300)
    await link.send(b"exit\r")
    await link.close()
    return {"stalled_growth_mib": (peak - before) / MIB, "stalled_bytes_after": total}


LIGHT = {
    "new_session": new_session,
    "new_session_hot": new_session_back_to_back,
    "reattach": reattach,
    "reattach_hot": reattach_back_to_back,
    "echo": echo,
    "throughput": throughput,
    "idle_memory": idle_memory,
    "stalled_client": stalled_client,
}


# ------------------------------------------------------------------------------- heavy ones
async def many_sessions(target: Target, sessions: int = 1000, typers: int = 100) -> dict[str, Any]:
    """``sessions`` idle sessions (RSS, idle CPU), then ``typers`` of them type at human pace."""
    if target.name == "pty":
        links = await in_parallel(typers, 20, lambda _: _open_first_byte(target))
        figures = await _typers([link for link, _ in links], 20.0)
        await asyncio.gather(*(link.close() for link, _ in links))
        return figures
    await asyncio.sleep(0.5)
    before = target.rss()
    started = time.perf_counter()
    links = await in_parallel(sessions, 50, lambda _: _open_first_byte(target))
    opened = time.perf_counter() - started
    await asyncio.sleep(2.0)
    cpu_before, idle_started = target.cpu_seconds(), time.perf_counter()
    await asyncio.sleep(10.0)
    idle_cpu = (target.cpu_seconds() - cpu_before) / (time.perf_counter() - idle_started)
    figures = {
        "sessions": sessions,
        "open_all_s": opened,
        "rss_1000_mib": target.rss() / MIB,
        "rss_growth_per_session_kib": (target.rss() - before) / sessions / 1024,
        "idle_cpu_percent": 100 * idle_cpu,
    }
    figures |= await _typers([link for link, _ in links[:typers]], 20.0)
    await in_parallel(len(links), 50, lambda i: _exit(links[i][0]))
    return figures


async def _typers(links: list[Link], seconds: float) -> dict[str, Any]:
    if not links:
        return {}
    await asyncio.gather(*(start_cat(link) for link in links))
    keys = int(seconds / 0.125)
    results = await asyncio.gather(*(type_and_time(link, keys, (0.05, 0.2)) for link in links))
    latencies = [value for result in results for value in result]
    return {
        "typers": len(links),
        "typers_echo_p50_ms": 1000 * statistics.median(latencies),
        "typers_echo_p99_ms": 1000 * percentile(latencies, 0.99),
        "typers_keys": len(latencies),
    }


async def sessions_per_second(
    target: Target, seconds: float = 10, width: int = 32
) -> dict[str, Any]:
    """New session → first byte → exit, by ``width`` workers for ``seconds``: sessions/s."""
    deadline, done, failures = time.monotonic() + seconds, 0, 0

    async def worker() -> None:
        nonlocal done, failures
        while time.monotonic() < deadline:
            try:
                link, _ = await target.open()
                await first_bytes(link, 10)
                await link.send(b"exit\r")
                await link.close()
                done += 1
            except (ConnectionError, EOFError, TimeoutError, OSError):
                failures += 1
                await asyncio.sleep(0.05)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(width)))
    return {
        "sessions_per_s": done / (time.perf_counter() - started),
        "sessions_failed": failures,
    }


async def herd(target: Target, clients: int = 1000) -> dict[str, Any]:
    """``clients`` attached users cut at once by a proxy; all resume by offset, exact streams."""
    if not isinstance(target, TetherTarget):
        return {}
    assert target.server is not None
    port = int(target.server.base_url.rsplit(":", 1)[1])
    recorder = Recorder()
    async with TcpProxy("127.0.0.1", port) as proxy, new_http() as http:
        url = proxy.url()
        users = [TypingUser(http, url, "default", recorder) for _ in range(clients)]
        await in_parallel(clients, 50, lambda i: users[i].start())
        await asyncio.gather(*(u.type_line(6, (0, 0)) for u in users))
        started = time.perf_counter()
        server_cpu, client_cpu = target.cpu_seconds(), time.process_time()
        proxy.abort_all()
        # Every user types at once, while cut: the keys wait as unacknowledged input.
        await asyncio.gather(
            *(u.type_line(8, (0, 0), timeout=60) for u in users), return_exceptions=True
        )
        elapsed = time.perf_counter() - started
        server_cpu, client_cpu = target.cpu_seconds() - server_cpu, time.process_time() - client_cpu
        replays = await in_parallel(clients, 50, lambda i: users[i].verify_replay())
        failed = sum(1 for u in users if u.failed)
        failures = sorted({str(u.failed) for u in users if u.failed})[:5]
        for user in users:
            await user.close()
    for user in users:
        await delete_session(target.server.base_url, f"{user.session}:default")
    return {
        "herd_clients": clients,
        "herd_all_resumed_s": elapsed,
        # Where that time went: the server's CPU, and this process's (the clients and the proxy).
        "herd_server_cpu_s": server_cpu,
        "herd_client_cpu_s": client_cpu,
        "herd_exact": clients - failed,
        "herd_replays_exact": sum(1 for ok in replays if ok),
        "herd_storm_refusals": recorder.close_codes.get(4129, 0),
        "herd_reattach_p99_ms": recorder.summary().get("reattach", {}).get("p99"),
        # What went wrong, when something did (not a figure of the plot).
        "herd_failures": failures,
        "herd_refusals": {str(code): n for code, n in recorder.close_codes.items()},
    }


HEAVY = {
    "many_sessions": many_sessions,
    "sessions_per_second": sessions_per_second,
    "herd": herd,
}
