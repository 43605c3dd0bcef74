"""Surviving the server process: upgrade downtime, crash recovery, and what crash safety costs.

    .venv/bin/python -m bench.survival [--sessions 200] [--echoes 2000] [--megabytes 64]
        [--skip-steady] [--only upgrade|crash] [--server-path OTHER/src]
        [--client light|aiohttp]

- **upgrade**: N sessions, each with a connected client; SIGUSR2 to the worker; every client
  resumes at once on its 1012 with its offset. Downtime per client = from the signal (so the
  pre-check of the new code is included) until its hello; and from its 1012 until its hello.
- **crash**: the same N sessions under the supervisor; SIGKILL of the worker; time until the
  port answers with every session, then until every client has resumed.
- **steady state**, supervised (crash safety on: state memfd written on every PTY read and
  write) vs ``--no-supervise``: echo round trip p50/p99 of one byte through ``cat``, and output
  throughput of ``head -c`` through one client.

Prints a JSON object of figures (docs/benchmarks.md, "Surviving the server process").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import time
import urllib.request
from datetime import datetime
from typing import Any

import aiohttp
from tests.support.server import ServerProcess


def _stats(base: str) -> dict[str, Any]:
    with urllib.request.urlopen(base + "/stats/sessions", timeout=5) as response:
        data: dict[str, Any] = json.load(response)
    return data


async def _wait_for(base: str, generation: int, sessions: int) -> float:
    started = time.perf_counter()
    while True:
        try:
            facts = await asyncio.to_thread(_stats, base)
            if facts["server"]["generation"] >= generation and len(facts["sessions"]) >= sessions:
                return time.perf_counter() - started
        except OSError:
            pass
        await asyncio.sleep(0.01)


class Client:
    def __init__(self, url: str, index: int) -> None:
        self.url, self.client_id = url, f"bench-{index:05d}-client"
        self.session: str | None = None
        self.position = 0
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.closed_at = 0.0
        self.resumed_at = 0.0
        self.gap = -1

    async def connect(self, http: aiohttp.ClientSession) -> None:
        query = f"project=default&client={self.client_id}"
        if self.session:
            query += f"&session={self.session}&offset={self.position}&create=0"
        while True:
            try:
                ws = await http.ws_connect(f"{self.url}?{query}", protocols=("tether.v1",))
                first = await ws.receive(timeout=30)
                if first.type == aiohttp.WSMsgType.TEXT:
                    break
                await ws.close()
            except (aiohttp.ClientError, OSError):
                pass
            await asyncio.sleep(0.01)
        hello = json.loads(first.data)
        self.session, self.gap = hello["session"], hello["gap"]
        self.position = hello["replay_from"]
        self.ws = ws

    async def follow(self, http: aiohttp.ClientSession) -> None:
        """Receive until closed, then resume at once (as a client does on 1012)."""
        assert self.ws is not None
        async for message in self.ws:
            if message.type == aiohttp.WSMsgType.BINARY:
                self.position += len(message.data)
        self.closed_at = time.perf_counter()
        await self.connect(http)
        self.resumed_at = time.perf_counter()

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()


class LightClient:
    """:class:`Client` over the herd's light wire (``--client light``, the default): an asyncio
    protocol per connection, no aiohttp session and no task while it waits, so that 1,000 of
    them resuming at once cost the bench little of the two cores the server needs."""

    def __init__(self, host: str, port: int, index: int) -> None:
        self.host, self.port, self.client_id = host, port, f"bench-{index:05d}-client"
        self.session: str | None = None
        self.position = 0
        self.wire: Any = None
        self.closed_at = 0.0
        self.resumed_at = 0.0
        self.gap = -1
        self.resuming = False
        self.finished = False
        self.hello: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def open(self) -> asyncio.Future[None]:
        from bench.herd import _open  # bench.herd imports the workloads: import when used

        query = {"project": "default", "client": self.client_id}
        if self.session:
            query |= {"session": self.session, "offset": str(self.position), "create": "0"}
        if self.hello.done():
            self.hello = asyncio.get_running_loop().create_future()
        self.wire = _open(self, query, self.host, self.port)  # type: ignore[arg-type]
        return self.hello

    def on_text(self, _wire: Any, text: str) -> None:
        message = json.loads(text)
        if message.get("type") == "hello" and not self.hello.done():
            self.session, self.gap = message["session"], message["gap"]
            self.position = message["replay_from"]
            if self.resuming:
                self.resumed_at = time.perf_counter()
            self.hello.set_result(None)

    def on_output(self, _wire: Any, data: bytes) -> None:
        self.position += len(data)

    def on_closed(self, _wire: Any, _code: int, _reason: str) -> None:
        if self.finished:
            return
        if not self.hello.done():  # refused, or the server not back yet: try again shortly
            asyncio.get_running_loop().call_later(0.01, self.open)
        elif not self.resuming:  # the 1012 (or the crash): resume at once
            self.resuming, self.closed_at = True, time.perf_counter()
            self.open()

    async def close(self) -> None:
        self.finished = True
        if self.wire is not None:
            self.wire.close()


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"p50_ms": round(1000 * pick(0.5), 1), "p99_ms": round(1000 * pick(0.99), 1),
            "max_ms": round(1000 * ordered[-1], 1)}  # fmt: skip


async def _outage(
    sessions: int, crash: bool, server_path: str | None = None, light: bool = True
) -> dict[str, Any]:
    env = {"PYTHONPATH": server_path} if server_path else None
    args = ("--max-sessions", str(sessions + 10))
    srv = ServerProcess(args=args, supervise=crash, env=env).start()
    try:
        if light:
            return await _light_outage(srv, sessions, crash)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            clients = [Client(srv.ws_url, i) for i in range(sessions)]
            for start in range(0, sessions, 50):
                await asyncio.gather(*(c.connect(http) for c in clients[start : start + 50]))
            worker = (await asyncio.to_thread(_stats, srv.base_url))["server"]["pid"]
            followers = [asyncio.create_task(c.follow(http)) for c in clients]
            signalled = time.perf_counter()
            os.kill(worker, signal.SIGKILL if crash else signal.SIGUSR2)
            back = await _wait_for(srv.base_url, 2, sessions)
            await asyncio.gather(*followers)
            figures = {
                "sessions": sessions,
                "port_and_sessions_back_s": round(back, 3),
                "from_signal": _percentiles([c.resumed_at - signalled for c in clients]),
                "from_close": _percentiles([c.resumed_at - c.closed_at for c in clients]),
                "gap_nonzero": sum(1 for c in clients if c.gap != 0),
                "phases_from_signal_s": _phases(
                    srv, time.time() - (time.perf_counter() - signalled)
                ),
            }
            await asyncio.gather(*(c.close() for c in clients))
            return figures
    finally:
        srv.cleanup()


async def _light_outage(srv: ServerProcess, sessions: int, crash: bool) -> dict[str, Any]:
    clients = [LightClient("127.0.0.1", srv.port, i) for i in range(sessions)]
    for start in range(0, sessions, 50):
        await asyncio.gather(*(c.open() for c in clients[start : start + 50]))
    worker = (await asyncio.to_thread(_stats, srv.base_url))["server"]["pid"]
    signalled = time.perf_counter()
    os.kill(worker, signal.SIGKILL if crash else signal.SIGUSR2)
    back = await _wait_for(srv.base_url, 2, sessions)
    while not all(c.resumed_at for c in clients):
        await asyncio.sleep(0.01)
    figures = {
        "sessions": sessions,
        "client": "light",
        "port_and_sessions_back_s": round(back, 3),
        "from_signal": _percentiles([c.resumed_at - signalled for c in clients]),
        "from_close": _percentiles([c.resumed_at - c.closed_at for c in clients]),
        "gap_nonzero": sum(1 for c in clients if c.gap != 0),
        "phases_from_signal_s": _phases(srv, time.time() - (time.perf_counter() - signalled)),
    }
    await asyncio.gather(*(c.close() for c in clients))
    return figures


def _phases(srv: ServerProcess, signalled_wall: float) -> dict[str, float]:
    """When the server logged each step of the upgrade or recovery, from the signal."""
    phases: dict[str, float] = {}
    for line in srv.log_file.read_text().splitlines():
        entry = json.loads(line)
        name = entry["event"] + (f":{entry['step']}" if "step" in entry else "")
        if name in ("upgrade:checked", "upgrade:closed", "upgrade:exec", "adopt", "listen"):
            stamp = datetime.fromisoformat(entry["ts"].replace("Z", "+00:00")).timestamp()
            if stamp >= signalled_wall - 0.01:
                phases.setdefault(name, round(stamp - signalled_wall, 3))
    return phases


async def _steady(supervised: bool, echoes: int, megabytes: int) -> dict[str, Any]:
    srv = ServerProcess(supervise=supervised).start()
    try:
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(f"{srv.ws_url}?project=default", protocols=("tether.v1",))
            await ws.receive(timeout=10)
            await ws.send_bytes(b"stty raw -echo; PS1=''; exec cat\r")
            await asyncio.sleep(0.5)  # let the shell settle before timing (bench, not a test)
            while True:  # drain what the shell printed
                try:
                    await ws.receive(timeout=0.2)
                except TimeoutError:
                    break
            rtts = []
            for _ in range(echoes):
                sent = time.perf_counter()
                await ws.send_bytes(b"x")
                got = 0
                while got < 1:
                    message = await ws.receive(timeout=5)
                    if message.type == aiohttp.WSMsgType.BINARY:
                        got += len(message.data)
                rtts.append(time.perf_counter() - sent)
            await ws.close()
            ws = await http.ws_connect(f"{srv.ws_url}?project=default", protocols=("tether.v1",))
            await ws.receive(timeout=10)
            total = megabytes * 1024 * 1024
            started = time.perf_counter()
            await ws.send_bytes(
                f"stty -echo; head -c {total} /dev/zero | tr '\\0' a; exit\r".encode()
            )
            received = 0
            async for message in ws:
                if message.type == aiohttp.WSMsgType.BINARY:
                    received += len(message.data)
            elapsed = time.perf_counter() - started
            return {
                "echo": _percentiles(rtts),
                "throughput_mb_s": round(received / elapsed / 1e6, 1),
            }
    finally:
        srv.cleanup()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, nargs="+", default=[200])
    parser.add_argument("--echoes", type=int, default=2000)
    parser.add_argument("--megabytes", type=int, default=64)
    parser.add_argument("--skip-steady", action="store_true")
    parser.add_argument("--only", choices=("upgrade", "crash"), default=None)
    parser.add_argument(
        "--server-path", default=None, help="run the server from this src/ (A/B against a copy)"
    )
    parser.add_argument(
        "--client",
        choices=("light", "aiohttp"),
        default="light",
        help="the outage's clients: the herd's light wire (default), or aiohttp's (earlier rounds)",
    )
    options = parser.parse_args()
    results: dict[str, Any] = {"cpus": os.cpu_count(), "load": os.getloadavg()[0]}
    kinds = [options.only] if options.only else ["upgrade", "crash"]
    for count in options.sessions:
        for kind in kinds:
            crash = kind == "crash"
            results[f"{kind}_{count}"] = await _outage(
                count, crash, options.server_path, light=options.client == "light"
            )
    if not options.skip_steady:
        for supervised in (False, True, False, True):  # interleaved: the machine is shared
            key = "steady_supervised" if supervised else "steady_no_supervise"
            results.setdefault(key, []).append(
                await _steady(supervised, options.echoes, options.megabytes)
            )
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
