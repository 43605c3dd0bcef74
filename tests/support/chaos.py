"""The chaos scenario both the one-server and the cluster tests run: a shell prints numbered
lines and records typed keys while a proxy cuts every connection at random moments; a minimal
resuming client, written from the protocol (not tether's own client), must see every line once
and have typed every key once."""

from __future__ import annotations

import asyncio
import random
import re
from dataclasses import dataclass

import aiohttp

from tests.support.resuming import ResumingClient
from tests.support.wsclient import strip_ansi
from tether.tools.proxy import TcpProxy

CLIENT_ID = "chaos-client-0001"


def chaos_client(url: str) -> ResumingClient:
    """The scenario's client: resumes must never find a gap."""
    return ResumingClient(url, CLIENT_ID, gapless=True)


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
    await client.run_until(b"END-OF-42", http, timeout)
    await typing_task
    stop.set()
    cuts = await chaos_task
    # End `cat` (typed.txt is complete once the shell runs the next command), then the shell.
    await client.type(b"\x04echo TYPED-$((6*7))\r")
    await client.run_until(b"TYPED-42", http, timeout)
    await client.close()
    text = strip_ansi(bytes(client.output)).replace("\r", "")
    numbers = [int(n) for n in re.findall(r"^n(\d+)$", text, flags=re.MULTILINE)]
    return ChaosRun(numbers, bytes(typed), cuts)
