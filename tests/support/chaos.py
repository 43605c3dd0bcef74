"""The chaos scenario both the one-server and the cluster tests run: a shell prints numbered
lines and records typed keys while a proxy cuts every connection at random moments; a minimal
resuming client, written from the protocol (not tether's own client), must see every line once
and have typed every key once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
from dataclasses import dataclass

import aiohttp

from tests.support.wsclient import strip_ansi
from tether.tools.proxy import TcpProxy

CLIENT_ID = "chaos-client-0001"


class ResumingClient:
    """A minimal resuming client (offset + exactly-once input), written from the protocol."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.session: str | None = None
        self.output = bytearray()
        self.unacked = bytearray()  # input bytes from index `acked` on
        self.acked = 0
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.connects = 0

    async def connect(self, http: aiohttp.ClientSession) -> None:
        query = f"project=default&client={CLIENT_ID}"
        if self.session:
            query += f"&session={self.session}&offset={len(self.output)}&create=0"
        ws = await http.ws_connect(f"{self.url}?{query}", max_msg_size=0)
        first = await ws.receive(timeout=5)
        assert first.type == aiohttp.WSMsgType.TEXT, (first, ws.close_code)
        hello = json.loads(first.data)
        assert hello["gap"] == 0 and hello["replay_from"] == len(self.output)
        self.session = hello["session"]
        self._acknowledge(hello["input_acked"])
        self.ws = ws
        self.connects += 1
        if self.unacked:
            await ws.send_bytes(bytes(self.unacked))

    def _acknowledge(self, count: int) -> None:
        assert count >= self.acked, "the server never forgets written input"
        del self.unacked[: count - self.acked]
        self.acked = count

    async def type(self, data: bytes) -> None:
        self.unacked += data
        if self.ws is not None and not self.ws.closed:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.ws.send_bytes(data)

    async def run_until(self, needle: bytes, http: aiohttp.ClientSession, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        while needle not in self.output[-400:] and loop.time() < deadline:
            if self.ws is None or self.ws.closed:
                try:
                    await self.connect(http)
                except (aiohttp.ClientError, ConnectionError, TimeoutError, AssertionError):
                    self.ws = None
                    await asyncio.sleep(0.02)
                    continue
            assert self.ws is not None
            try:
                message = await self.ws.receive(timeout=1)
            except TimeoutError:
                continue
            if message.type == aiohttp.WSMsgType.BINARY:
                self.output += message.data
            elif message.type == aiohttp.WSMsgType.TEXT:
                data = json.loads(message.data)
                if data["type"] == "ack":
                    self._acknowledge(data["input"])
            else:
                self.ws = None


@dataclass(frozen=True)
class ChaosRun:
    numbers: list[int]  # the numbered lines the client saw, in order
    typed: bytes  # every key the client typed, in order
    cuts: int  # connections the proxy aborted


async def print_and_type_through_cuts(
    client: ResumingClient,
    proxy: TcpProxy,
    http: aiohttp.ClientSession,
    *,
    lines: int,
    keys: int,
    line_delay: float,
    cut_every: tuple[float, float],
    seed: int,
    timeout: float,
) -> ChaosRun:
    """Run the scenario on ``client`` (already connected through ``proxy``), then end the shell."""
    rng = random.Random(seed)
    typed = bytearray()
    await client.type(b"stty -echo; PS1=''\r")
    await client.type(
        f"(for i in $(seq 1 {lines}); do echo n$i; sleep {line_delay}; done; echo END-OF-$((6*7)))"
        " & cat > typed.txt\r".encode()
    )
    stop = asyncio.Event()

    async def chaos() -> int:
        cuts = 0
        while not stop.is_set():
            await asyncio.sleep(rng.uniform(*cut_every))
            cuts += proxy.abort_all()
        return cuts

    async def typist() -> None:
        for i in range(keys):
            token = f"k{i}\n".encode()
            typed.extend(token)
            await client.type(token)
            await asyncio.sleep(0.01)

    chaos_task = asyncio.create_task(chaos())
    typing_task = asyncio.create_task(typist())
    loop = asyncio.get_running_loop()
    await client.run_until(b"END-OF-42", http, loop.time() + timeout)
    await typing_task
    stop.set()
    cuts = await chaos_task
    await client.type(b"\x04")
    await client.run_until(b"\x00never", http, loop.time() + 1.5)
    if client.ws is not None:
        await client.ws.close()
    text = strip_ansi(bytes(client.output)).replace("\r", "")
    numbers = [int(n) for n in re.findall(r"^n(\d+)$", text, flags=re.MULTILINE)]
    return ChaosRun(numbers, bytes(typed), cuts)
