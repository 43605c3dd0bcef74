"""A bare protocol client for tests: speaks docs/protocol.md directly over aiohttp, no policy."""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import aiohttp

ANSI = re.compile(
    rb"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()][0-9A-Za-z]|\r"
)


def strip_ansi(data: bytes) -> str:
    return ANSI.sub(b"", data).decode("utf-8", errors="replace")


@dataclass
class Refused:
    code: int
    reason: str


@dataclass
class Conn:
    """One open terminal connection: its hello, the output received since, its messages."""

    ws: aiohttp.ClientWebSocketResponse
    http: aiohttp.ClientSession
    hello: dict[str, Any]
    output: bytearray = field(default_factory=bytearray)
    messages: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""

    @property
    def position(self) -> int:
        return int(self.hello["replay_from"]) + len(self.output)

    async def pump(self, timeout: float) -> bool:
        """Receive one frame (False on timeout or close)."""
        try:
            message = await asyncio.wait_for(self.ws.receive(), timeout)
        except TimeoutError:
            return False
        if message.type == aiohttp.WSMsgType.BINARY:
            self.output += message.data
        elif message.type == aiohttp.WSMsgType.TEXT:
            self.messages.append(json.loads(message.data))
        elif message.type in (
            aiohttp.WSMsgType.CLOSE,
            aiohttp.WSMsgType.CLOSED,
            aiohttp.WSMsgType.CLOSING,
            aiohttp.WSMsgType.ERROR,
        ):
            if message.type == aiohttp.WSMsgType.CLOSE:
                self.close_code = int(message.data)
            else:
                self.close_code = self.ws.close_code or 1006
            self.close_reason = str(message.extra or "")
            return False
        return True

    async def read_until(self, needle: bytes | str, timeout: float = 10.0) -> bytes:
        """Receive until ``needle`` appears in the output (escape sequences stripped for str)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if isinstance(needle, bytes) and needle in self.output:
                return bytes(self.output)
            if isinstance(needle, str) and needle.replace("\r", "") in strip_ansi(
                bytes(self.output)
            ):
                return bytes(self.output)
            remaining = deadline - loop.time()
            if remaining <= 0 or self.close_code is not None:
                raise AssertionError(
                    f"{needle!r} not seen; got {strip_ansi(bytes(self.output))[-500:]!r}"
                )
            await self.pump(remaining)

    async def message(self, kind: str, timeout: float = 5.0) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for item in self.messages:
                if item.get("type") == kind:
                    self.messages.remove(item)
                    return item
            remaining = deadline - loop.time()
            if remaining <= 0 or self.close_code is not None:
                raise AssertionError(f"no {kind} message; got {self.messages}")
            await self.pump(remaining)

    async def wait_closed(self, timeout: float = 10.0) -> int | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.close_code is None and loop.time() < deadline:
            await self.pump(deadline - loop.time())
        return self.close_code

    async def send(self, data: bytes | str) -> None:
        await self.ws.send_bytes(data.encode() if isinstance(data, str) else data)

    async def send_json(self, message: dict[str, Any]) -> None:
        await self.ws.send_str(json.dumps(message))

    async def close(self) -> None:
        await self.ws.close()
        await self.http.close()


async def connect(
    ws_url: str,
    *,
    protocols: tuple[str, ...] = ("tether.v1",),
    headers: dict[str, str] | None = None,
    max_msg_size: int = 64 * 1024 * 1024,
    **query: Any,
) -> Conn | Refused:
    """Open a connection; returns a :class:`Conn` after its hello, or how it was refused."""
    params = {k: str(v) for k, v in query.items() if v is not None}
    url = f"{ws_url}?{urlencode(params)}" if params else ws_url
    http = aiohttp.ClientSession()
    try:
        ws = await http.ws_connect(
            url, protocols=protocols, headers=headers, autoping=True, max_msg_size=max_msg_size
        )
    except BaseException:
        await http.close()
        raise
    first = await ws.receive(timeout=20)
    if first.type == aiohttp.WSMsgType.TEXT:
        hello = json.loads(first.data)
        assert hello["type"] == "hello", hello
        return Conn(ws, http, hello)
    code = int(first.data) if first.type == aiohttp.WSMsgType.CLOSE else ws.close_code or 1006
    reason = str(first.extra or "")
    await ws.close()
    await http.close()
    return Refused(code, reason)


async def must_connect(ws_url: str, **query: Any) -> Conn:
    result = await connect(ws_url, **query)
    assert isinstance(result, Conn), f"refused: {result}"
    return result


async def must_refuse(ws_url: str, **query: Any) -> Refused:
    result = await connect(ws_url, **query)
    if isinstance(result, Conn):
        await result.close()
        raise AssertionError(f"not refused: {result.hello}")
    return result
