"""RFC 6455, section 5.1: a server must close the connection on a client frame that is not
masked (masking is what keeps a hostile page from writing chosen bytes through a proxy's cache).
aiohttp's reader unmasks what is masked and accepts the rest, so :func:`require_masked_frames`
puts a small check in front of it: it walks the frame headers of the bytes as they arrive (only
the headers: payloads are skipped by their length) and, on an unmasked frame, stops feeding the
reader and calls back (the front closes with 1002).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web


class MaskedFrameCheck:
    """Frame boundaries of a client's byte stream, and whether every frame was masked."""

    def __init__(self) -> None:
        self._header = bytearray()  # the current frame's header, while incomplete
        self._payload_left = 0  # bytes of the current frame's payload still to skip

    def feed(self, data: bytes) -> int | None:
        """Take the next bytes; where in ``data`` a frame without the mask bit starts (0 when
        its header began in earlier bytes), or None when every frame so far is masked."""
        position, size = 0, len(data)
        start = 0
        while position < size:
            if self._payload_left:
                step = min(self._payload_left, size - position)
                self._payload_left -= step
                position += step
                continue
            if not self._header:
                start = position
            self._header.append(data[position])
            position += 1
            needed = self._header_size()
            if needed is None or len(self._header) < needed:
                continue
            if not self._header[1] & 0x80:
                return start
            self._payload_left = self._payload_length()
            self._header.clear()
        return None

    def _header_size(self) -> int | None:
        """The whole header's size once its second byte is known (mask key included)."""
        if len(self._header) < 2:
            return None
        length = self._header[1] & 0x7F
        extra = 2 if length == 126 else 8 if length == 127 else 0
        return 2 + extra + (4 if self._header[1] & 0x80 else 0)

    def _payload_length(self) -> int:
        length = self._header[1] & 0x7F
        if length < 126:
            return length
        size = 2 if length == 126 else 8
        return int.from_bytes(self._header[2 : 2 + size], "big")


class _CheckedParser:
    """aiohttp's WebSocket reader, fed only while every frame is masked."""

    def __init__(self, reader: Any, on_unmasked: Callable[[], None]) -> None:
        self._reader = reader
        self._on_unmasked = on_unmasked
        self._check: MaskedFrameCheck | None = MaskedFrameCheck()

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        if self._check is None:
            return False, b""  # refused: the rest is dropped until the close
        unmasked_at = self._check.feed(data)
        if unmasked_at is None:
            result: tuple[bool, bytes] = self._reader.feed_data(data)
            return result
        self._check = None
        if unmasked_at:
            self._reader.feed_data(data[:unmasked_at])  # the masked frames before it count
        self._on_unmasked()
        self._reader.feed_eof()  # the receive loop ends; the front sends its close
        return False, b""

    def feed_eof(self) -> None:
        self._reader.feed_eof()


def require_masked_frames(request: web.Request, on_unmasked: Callable[[], None]) -> None:
    """After the upgrade: refuse unmasked frames on ``request``'s connection.

    aiohttp has no option for it; this wraps the parser its request handler feeds (an internal
    attribute, checked here so that an aiohttp that renames it fails the tests, not silently).
    """
    protocol = request.protocol
    reader = getattr(protocol, "_payload_parser", None)
    if reader is None:
        raise RuntimeError("aiohttp's WebSocket reader not found: masking cannot be checked")
    protocol._payload_parser = _CheckedParser(reader, on_unmasked)
