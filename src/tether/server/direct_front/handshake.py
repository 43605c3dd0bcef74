"""The opening handshake of ``/ws/terminal``, sans I/O: is a request head ours, and what to answer.

:func:`read_head` parses a request head (``httptools``, the parser uvicorn uses) into a
:class:`Head`; :func:`terminal_upgrade` says whether it is a well-formed WebSocket upgrade of
``GET /ws/terminal`` that this front takes — anything else (another path, a malformed or
unusual request, a body) is left to the aiohttp front, which answers it exactly as before;
:func:`switching_protocols` is the 101 answer (RFC 6455, section 4.2.2).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import http.cookies
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl

import httptools
from multidict import CIMultiDict, CIMultiDictProxy

from tether.protocol.messages import SUBPROTOCOL
from tether.server.front import Upgrade

PATH = b"/ws/terminal"
REQUEST_PREFIX = b"GET " + PATH  # what a request this front may take starts with
MAX_HEAD = 16 * 1024  # a longer head goes to aiohttp (which refuses what it finds too long)
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455, section 1.3


@dataclass(frozen=True, slots=True)
class Head:
    """A parsed request head: the target and its headers (names looked up in any case)."""

    method: bytes
    target: bytes
    version: str
    headers: CIMultiDictProxy[str]


@dataclass(frozen=True, slots=True)
class TerminalUpgrade:
    """A ``/ws/terminal`` upgrade this front answers."""

    upgrade: Upgrade
    key: bytes  # Sec-WebSocket-Key, for the accept value
    forwarded_for: tuple[str, ...]  # every X-Forwarded-For line, in order


class _Collector:
    """The callbacks ``httptools`` calls while it parses one head."""

    __slots__ = ("complete", "fields", "target")

    def __init__(self) -> None:
        self.target = b""
        self.fields: list[tuple[str, str]] = []
        self.complete = False

    def on_url(self, url: bytes) -> None:
        self.target += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.fields.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self.complete = True


def head_end(buffered: bytes | bytearray) -> int:
    """Where the head in ``buffered`` ends (just after its blank line), or -1 while incomplete."""
    end = buffered.find(b"\r\n\r\n")
    return -1 if end < 0 else end + 4


def read_head(head: bytes) -> Head | None:
    """The request head ``head`` (up to and including its blank line), or None when malformed."""
    collected = _Collector()
    parser = httptools.HttpRequestParser(collected)
    try:
        parser.feed_data(head)
    except httptools.HttpParserUpgrade:
        pass  # an Upgrade header: the parser stops after the head, which is all we want
    except httptools.HttpParserError:
        return None
    if not collected.complete:
        return None
    return Head(
        method=parser.get_method(),
        target=collected.target,
        version=parser.get_http_version(),
        headers=CIMultiDictProxy(CIMultiDict(collected.fields)),
    )


def terminal_upgrade(head: Head) -> TerminalUpgrade | None:
    """``head`` as an upgrade of ``/ws/terminal`` this front takes, else None (aiohttp's)."""
    headers = head.headers
    path, _, query = head.target.partition(b"?")
    if head.method != b"GET" or path != PATH or head.version != "1.1":
        return None
    if "Content-Length" in headers or "Transfer-Encoding" in headers:
        return None
    if headers.get("Upgrade", "").strip().lower() != "websocket":
        return None
    connection = {token.strip().lower() for token in headers.get("Connection", "").split(",")}
    if "upgrade" not in connection or headers.get("Sec-WebSocket-Version", "").strip() != "13":
        return None
    key = headers.get("Sec-WebSocket-Key", "").strip().encode("latin-1")
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            return None
    except (binascii.Error, ValueError):
        return None
    offered = headers.get("Sec-WebSocket-Protocol", "")  # its first line, as aiohttp reads it
    upgrade = Upgrade(
        headers=headers,
        cookies=_cookies(headers.getall("Cookie", ())),
        query=_query(query),
        subprotocols=tuple(item.strip() for item in offered.split(",") if item.strip()),
    )
    return TerminalUpgrade(upgrade, key, tuple(headers.getall("X-Forwarded-For", ())))


def switching_protocols(key: bytes, subprotocols: Sequence[str]) -> bytes:
    """The 101 answer to a handshake with ``key``, naming ``tether.v1`` when it was offered."""
    accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
    chosen = b"Sec-WebSocket-Protocol: " + SUBPROTOCOL.encode() + b"\r\n"
    named = chosen if SUBPROTOCOL in subprotocols else b""
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\n" + named + b"\r\n"
    )


def _query(raw: bytes) -> dict[str, str]:
    """The query's parameters; the first of a repeated name counts (as aiohttp's ``get``)."""
    found: dict[str, str] = {}
    for name, value in parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True):
        found.setdefault(name, value)
    return found


def _cookies(lines: tuple[str, ...] | list[str]) -> dict[str, str]:
    if not lines:
        return {}
    jar: http.cookies.SimpleCookie = http.cookies.SimpleCookie()
    for line in lines:
        jar.load(line)
    return {name: morsel.value for name, morsel in jar.items()}
