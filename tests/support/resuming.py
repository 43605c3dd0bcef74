"""A resuming client written from the protocol (offset + exactly-once input), not tether's own
client, for the tests of surviving the server process and of chaos cuts: it records every
hello, and resumes at once after any close."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

import aiohttp

RESUMABLE = (aiohttp.ClientError, ConnectionError, TimeoutError, OSError)


@dataclass
class ResumingClient:
    url: str
    client_id: str
    session: str | None = None
    output: bytearray = field(default_factory=bytearray)
    unacked: bytearray = field(default_factory=bytearray)
    acked: int = 0
    hellos: list[dict[str, Any]] = field(default_factory=list)
    close_codes: list[int] = field(default_factory=list)
    ws: aiohttp.ClientWebSocketResponse | None = None
    gapless: bool = False  # every resume must find its offset still buffered (gap 0)
    connects: int = 0

    async def connect(self, http: aiohttp.ClientSession) -> None:
        query = f"project=default&client={self.client_id}"
        if self.session:
            query += f"&session={self.session}&offset={len(self.output)}&create=0"
        ws = await http.ws_connect(f"{self.url}?{query}", max_msg_size=0, protocols=("tether.v1",))
        first = await ws.receive(timeout=10)
        if first.type != aiohttp.WSMsgType.TEXT:
            await ws.close()
            raise ConnectionError(f"refused: {first.data} {first.extra}")
        hello = json.loads(first.data)
        self.hellos.append(hello)
        if self.gapless:
            assert hello["gap"] == 0 and hello["replay_from"] == len(self.output), hello
        if hello["replay_from"] > len(self.output):  # a gap: output we will never see
            self.output += b"\x00" * (hello["replay_from"] - len(self.output))
        del self.output[hello["replay_from"] :]
        self.session = hello["session"]
        self._acknowledge(hello["input_acked"])
        self.ws = ws
        self.connects += 1
        if self.unacked:
            await ws.send_bytes(bytes(self.unacked))

    def _acknowledge(self, count: int) -> None:
        assert count >= self.acked, f"the server forgot written input: {count} < {self.acked}"
        assert count - self.acked <= len(self.unacked), "the server counted input never sent"
        del self.unacked[: count - self.acked]
        self.acked = count

    async def type(self, data: bytes) -> None:
        self.unacked += data
        if self.ws is not None and not self.ws.closed:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.ws.send_bytes(data)

    async def run_until(
        self, needle: bytes, http: aiohttp.ClientSession, timeout: float, tail: int = 400
    ) -> None:
        """Receive (resuming at once after any close) until ``needle`` is in the last output."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while needle not in self.output[-tail:]:
            assert loop.time() < deadline, f"{needle!r} not seen: {bytes(self.output[-300:])!r}"
            if self.ws is None or self.ws.closed:
                try:
                    await self.connect(http)
                except RESUMABLE:
                    self.ws = None
                    await asyncio.sleep(0.02)
                continue
            await self._receive_one()

    async def _receive_one(self) -> None:
        assert self.ws is not None
        try:
            message = await self.ws.receive(timeout=1)
        except TimeoutError:
            return
        if message.type == aiohttp.WSMsgType.BINARY:
            self.output += message.data
        elif message.type == aiohttp.WSMsgType.TEXT:
            data = json.loads(message.data)
            if data["type"] == "ack":
                self._acknowledge(data["input"])
        else:
            if message.type == aiohttp.WSMsgType.CLOSE:
                self.close_codes.append(int(message.data))
            self.ws = None

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
            self.ws = None
