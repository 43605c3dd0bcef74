"""Several nodes, one Redis: what the forwarding hop and the registry cost, and a herd.

    .venv/bin/python -m bench.cluster [--echoes 1000] [--megabytes 32] [--herd 1000]
                                      [--sim-nodes 100] [--sim-sessions 4000]

- **hop**: two nodes; one session, owned by node0. Echo round trip of one byte through ``cat``
  and output throughput (``head -c``), direct to node0 vs through node1 (the relay), interleaved
  in one run.
- **registry**: new sessions per second (16 workers: create → first byte → ``exit``) and
  re-attach p50 (hello + first replayed byte) on one node without Redis vs one node with Redis,
  and re-attach through a non-owner node.
- **herd**: ``--herd`` clients spread over 3 nodes (each session made on a random node), every
  connection cut at once (through one TCP proxy per node), every client resuming through another
  random node; the time until all have resumed, and whether every resume was exact.
- **simulation**: ``--sim-nodes`` simulated nodes register and claim ``--sim-sessions`` keys each
  in one real Redis (no shells), then every key is looked up once (a herd of cross-node
  reconnects), while every node renews its lease once a second: operations per second one Redis
  sustained, and the bytes per session.

Prints a JSON object of figures (docs/benchmarks.md, "Several nodes, one Redis").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.redis import RedisServer
from tests.support.server import ServerProcess

from tether.server.cluster.lease import LeaseSettings
from tether.server.cluster.registry import RedisRegistry
from tether.server.store.redis import redis_client
from tether.tools.proxy import TcpProxy

SUBPROTOCOLS = ("tether.v1",)
NODE_ENV = {"TETHER_CLUSTER_RECORD_INTERVAL": "5"}
NODE_ARGS = ("--storm-threshold", "100000", "--max-sessions", "5000", "--no-supervise")


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def pick(share: float) -> float:
        return round(1000 * ordered[min(len(ordered) - 1, int(share * len(ordered)))], 3)

    return {"p50_ms": pick(0.5), "p99_ms": pick(0.99), "count": len(ordered)}


@contextlib.contextmanager
def _nodes(
    count: int, redis: RedisServer | None, sources: dict[int, str] | None = None
) -> Iterator[list[ServerProcess]]:
    """``sources``: node index → a copy of ``src/`` that node runs (PYTHONPATH), to compare
    two versions of the code in one run."""
    nodes: list[ServerProcess] = []
    try:
        for index in range(count):
            cluster = ("--redis-url", redis.url, "--node-id", f"n{index}") if redis else ()
            env = NODE_ENV | ({"PYTHONPATH": sources[index]} if index in (sources or {}) else {})
            nodes.append(ServerProcess(args=(*NODE_ARGS, *cluster), env=env).start())
        yield nodes
    finally:
        for node in nodes:
            node.cleanup()


@contextlib.contextmanager
def _redis() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.close()


async def _open(
    http: aiohttp.ClientSession, url: str, query: str
) -> tuple[aiohttp.ClientWebSocketResponse, dict[str, Any]]:
    ws = await http.ws_connect(f"{url}?project=default&{query}", protocols=SUBPROTOCOLS)
    first = await ws.receive(timeout=30)
    assert first.type is aiohttp.WSMsgType.TEXT, (first, ws.close_code)
    return ws, json.loads(first.data)


async def _drain(ws: aiohttp.ClientWebSocketResponse, quiet: float = 0.3) -> None:
    while True:
        try:
            await ws.receive(timeout=quiet)
        except TimeoutError:
            return


async def _echoes(ws: aiohttp.ClientWebSocketResponse, count: int) -> list[float]:
    samples = []
    for _ in range(count):
        sent = time.perf_counter()
        await ws.send_bytes(b"x")
        while True:
            message = await ws.receive(timeout=10)
            if message.type is aiohttp.WSMsgType.BINARY:
                break
        samples.append(time.perf_counter() - sent)
    return samples


async def _throughput(http: aiohttp.ClientSession, url: str, megabytes: int) -> float:
    ws, _ = await _open(http, url, "")
    return await _stream_rate(ws, megabytes)


async def _stream_rate(ws: aiohttp.ClientWebSocketResponse, megabytes: int) -> float:
    """MB/s of ``megabytes`` of output the shell on ``ws`` prints, then exits."""
    total = megabytes * 1024 * 1024
    started = time.perf_counter()
    await ws.send_bytes(f"stty -echo; head -c {total} /dev/zero | tr '\\0' a; exit\r".encode())
    received = 0
    async for message in ws:
        if message.type is aiohttp.WSMsgType.BINARY:
            received += len(message.data)
    return received / (time.perf_counter() - started) / 1e6


async def hop(echoes: int, megabytes: int, other_src: str | None = None) -> dict[str, Any]:
    """``other_src``: also through a third node running that copy of ``src/`` (the code
    before a change), interleaved with the others."""
    routes = {"direct": 0, "through_node": 1} | ({"through_other": 2} if other_src else {})
    sources = {2: other_src} if other_src else None
    with _redis() as redis, _nodes(len(routes), redis, sources) as nodes:
        async with aiohttp.ClientSession() as http:
            owner, hello = await _open(http, nodes[0].ws_url, "client=bench-hop-client-1")
            await owner.send_bytes(b"stty raw -echo; PS1=''; exec cat\r")
            await _drain(owner)
            sockets = {"direct": owner}
            for name, index in routes.items():
                if index:
                    query = f"session={hello['session']}&create=0&client=bench-hop-{name}"
                    sockets[name], _ = await _open(http, nodes[index].ws_url, query)
            for ws in sockets.values():
                await _drain(ws)
            figures: dict[str, list[float]] = {name: [] for name in routes}
            for _ in range(10):  # interleaved: the machine is shared
                for name, ws in sockets.items():
                    # All are attached: the echo reaches all; time it on the one that typed.
                    figures[name] += await _echoes(ws, echoes // 10)
                    for other in sockets.values():
                        if other is not ws:
                            await _drain(other, 0.05)
            for ws in sockets.values():
                await ws.close()
            rates: dict[str, list[float]] = {name: [] for name in routes}
            cpu: dict[str, list[float]] = {name: [] for name in routes}
            for _ in range(2):
                # A new session is made on the node connected to: to measure the hop, make it
                # on node0 and read it through another node (a direct run reads node0).
                for name, index in routes.items():
                    via = nodes[index].ws_url
                    before = _cpu_seconds(nodes[index].pid)
                    rates[name].append(
                        await _throughput(http, via, megabytes)
                        if not index
                        else await _throughput_via(http, nodes[0].ws_url, via, megabytes)
                    )
                    cpu[name].append(_cpu_seconds(nodes[index].pid) - before)
    return {
        **{f"echo_{name}": _percentiles(samples) for name, samples in figures.items()},
        "throughput_mb_s": {name: [round(r, 1) for r in runs] for name, runs in rates.items()},
        # CPU of the node the client reads from (the owner when direct, else the relay)
        "cpu_s_per_run": {name: [round(c, 2) for c in runs] for name, runs in cpu.items()},
    }


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _throughput_via(
    http: aiohttp.ClientSession, owner_url: str, via_url: str, megabytes: int
) -> float:
    maker, hello = await _open(http, owner_url, "")
    await maker.close()
    ws, _ = await _open(http, via_url, f"session={hello['session']}&create=0")
    return await _stream_rate(ws, megabytes)


async def _new_sessions_per_second(url: str, seconds: float = 5.0, workers: int = 16) -> float:
    done = 0
    deadline = time.perf_counter() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                ws, _ = await _open(http, url, "")
                while (await ws.receive(timeout=30)).type is not aiohttp.WSMsgType.BINARY:
                    pass
                await ws.send_bytes(b"exit\r")
                await ws.close()
                done += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(workers)))
        return done / (time.perf_counter() - started)


async def _reattach(url: str, session: str, samples: int = 30) -> list[float]:
    times = []
    async with aiohttp.ClientSession() as http:
        for _ in range(samples):
            started = time.perf_counter()
            ws, _ = await _open(http, url, f"session={session}&create=0&offset=0")
            while (await ws.receive(timeout=10)).type is not aiohttp.WSMsgType.BINARY:
                pass
            times.append(time.perf_counter() - started)
            await ws.close()
            await asyncio.sleep(0.05)
    return times


async def registry_cost() -> dict[str, Any]:
    results: dict[str, Any] = {}
    for _ in range(2):  # interleaved: the machine is shared
        for name in ("without_redis", "with_redis"):
            with contextlib.ExitStack() as stack:
                redis = stack.enter_context(_redis()) if name == "with_redis" else None
                nodes = stack.enter_context(_nodes(2 if redis else 1, redis))
                rate = await _new_sessions_per_second(nodes[0].ws_url)
                async with aiohttp.ClientSession() as http:
                    ws, hello = await _open(http, nodes[0].ws_url, "")
                    await ws.send_bytes(b"seq 1 2000\r")
                    await _drain(ws)
                    await ws.close()
                entry = results.setdefault(name, {"new_sessions_per_s": [], "reattach": []})
                entry["new_sessions_per_s"].append(round(rate, 1))
                entry["reattach"] += await _reattach(nodes[0].ws_url, hello["session"])
                if redis is not None:
                    through = await _reattach(nodes[1].ws_url, hello["session"])
                    entry.setdefault("reattach_through_node", []).extend(through)
    for entry in results.values():
        for key in ("reattach", "reattach_through_node"):
            if key in entry:
                entry[key] = _percentiles(entry[key])
    return results


class HerdClient:
    def __init__(self, index: int, proxies: list[TcpProxy], rng: random.Random) -> None:
        self.client_id = f"herd-{index:05d}-client"
        self.proxies, self.rng = proxies, rng
        self.session = ""
        self.position = 0
        self.exact = True
        self.ws: aiohttp.ClientWebSocketResponse | None = None

    async def connect(self, http: aiohttp.ClientSession) -> None:
        query = f"client={self.client_id}"
        if self.session:
            query += f"&session={self.session}&offset={self.position}&create=0"
        while True:
            url = self.rng.choice(self.proxies).url()
            try:
                ws, hello = await _open(http, url, query)
                break
            except (aiohttp.ClientError, OSError, AssertionError, TimeoutError):
                await asyncio.sleep(0.02 + self.rng.random() * 0.05)
        if self.session:
            self.exact &= hello["gap"] == 0 and hello["replay_from"] == self.position
        self.session = hello["session"]
        self.ws = ws

    async def read_until_closed(self) -> None:
        assert self.ws is not None
        async for message in self.ws:
            if message.type is aiohttp.WSMsgType.BINARY:
                self.position += len(message.data)


async def herd(count: int) -> dict[str, Any]:
    rng = random.Random(5)
    with _redis() as redis, _nodes(3, redis) as nodes:
        proxies = [TcpProxy("127.0.0.1", node.port) for node in nodes]
        for proxy in proxies:
            await proxy.start()
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as http:
            clients = [HerdClient(i, proxies, rng) for i in range(count)]
            for start in range(0, count, 50):
                await asyncio.gather(*(c.connect(http) for c in clients[start : start + 50]))
            for client in clients:
                assert client.ws is not None
                await client.ws.send_bytes(f"echo ready-{client.client_id}\r".encode())
            readers = [asyncio.create_task(c.read_until_closed()) for c in clients]
            await asyncio.sleep(2)  # let the echoes arrive (a bench, not a test)
            cut_at = time.perf_counter()
            for proxy in proxies:
                proxy.abort_all()
            await asyncio.gather(*readers)
            await asyncio.gather(*(c.connect(http) for c in clients))
            resumed = time.perf_counter() - cut_at
            for client in clients:
                assert client.ws is not None
                await client.ws.close()
        for proxy in proxies:
            await proxy.close()
    return {
        "clients": count,
        "all_resumed_s": round(resumed, 3),
        "exact": sum(c.exact for c in clients),
    }


async def simulate(nodes: int, sessions: int, width: int = 64) -> dict[str, Any]:
    """Simulated nodes (registrations, claims, lookups) against one real Redis, no shells."""
    with _redis() as redis:
        client = redis_client(redis.url, timeout=5.0)
        settings = LeaseSettings(lease=5.0, renew_every=1.0, timeout=2.0)
        registries = [
            RedisRegistry(client, f"sim-node-{n:03d}", url=f"http://10.0.{n // 256}.{n % 256}:4001",
                          settings=settings)
            for n in range(nodes)
        ]  # fmt: skip
        leases = [await registry.register() for registry in registries]
        before = int((await client.info("memory"))["used_memory"])
        stop = asyncio.Event()

        async def renew_forever() -> int:
            renewals = 0
            while not stop.is_set():
                for registry, lease in zip(registries, leases, strict=True):
                    await registry.renew(lease)  # type: ignore[arg-type]
                    renewals += 1
                await asyncio.sleep(1.0)
            return renewals

        renewer = asyncio.create_task(renew_forever())
        keys = [(n, f"session_{n:03d}{i:07d}_simulatedsimulated:default") for n in range(nodes)
                for i in range(sessions)]  # fmt: skip
        queue = iter(keys)

        async def claimer() -> None:
            for n, key in queue:
                await registries[n].claim(key, leases[n], owner=f"user{n % 977}")  # type: ignore[arg-type]

        started, cpu = time.perf_counter(), await _redis_cpu(client)
        await asyncio.gather(*(claimer() for _ in range(width)))
        claim_s, claim_cpu = time.perf_counter() - started, await _redis_cpu(client) - cpu
        after = int((await client.info("memory"))["used_memory"])
        lookups = iter(key for _, key in keys)

        async def looker() -> None:
            for key in lookups:
                await registries[0].lookup(key)

        started, cpu = time.perf_counter(), await _redis_cpu(client)
        await asyncio.gather(*(looker() for _ in range(width)))
        lookup_s, lookup_cpu = time.perf_counter() - started, await _redis_cpu(client) - cpu
        stop.set()
        renewals = await renewer
        await client.aclose()
    total = nodes * sessions
    return {
        "nodes": nodes,
        "sessions": total,
        "claims_per_s": round(total / claim_s),
        "lookups_per_s": round(total / lookup_s),
        # What one Redis core would sustain: operations per second of Redis's own CPU time.
        "claims_per_redis_cpu_s": round(total / claim_cpu),
        "lookups_per_redis_cpu_s": round(total / lookup_cpu),
        "renewals": renewals,
        "claim_bytes_per_session": round((after - before) / total),
        "client_concurrency": width,
    }


async def _redis_cpu(client: Any) -> float:
    info = await client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--echoes", type=int, default=1000)
    parser.add_argument("--megabytes", type=int, default=32)
    parser.add_argument("--herd", type=int, default=1000)
    parser.add_argument("--sim-nodes", type=int, default=100)
    parser.add_argument("--sim-sessions", type=int, default=4000)
    parser.add_argument("--only", nargs="*", default=["hop", "registry", "herd", "simulation"])
    parser.add_argument(
        "--other-src", help="hop: also relay through a node running this copy of src/"
    )
    options = parser.parse_args()
    results: dict[str, Any] = {"cpus": os.cpu_count(), "load_before": os.getloadavg()[0]}
    if "hop" in options.only:
        results["hop"] = await hop(options.echoes, options.megabytes, options.other_src)
    if "registry" in options.only:
        results["registry"] = await registry_cost()
    if "herd" in options.only:
        results["herd"] = await herd(options.herd)
    if "simulation" in options.only:
        results["simulation"] = await simulate(options.sim_nodes, options.sim_sessions)
    results["load_after"] = os.getloadavg()[0]
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
