"""The unmasked-frame check in front of aiohttp's WebSocket reader (RFC 6455, 5.1)."""

from __future__ import annotations

import os
import struct

import pytest

from tether.server.aiohttp_front.masking import MaskedFrameCheck


def _frame(payload: bytes, *, masked: bool = True, opcode: int = 0x2) -> bytes:
    bit = 0x80 if masked else 0
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x80 | opcode, bit | size)
    elif size < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, bit | 126, size)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, bit | 127, size)
    return header + (os.urandom(4) if masked else b"") + payload


@pytest.mark.parametrize("size", [0, 1, 125, 126, 200, 65535, 65536, 70000])
@pytest.mark.parametrize("chunk", [1, 3, 7, 4096, 1 << 20])
def test_masked_streams_pass_in_any_chunking(size: int, chunk: int) -> None:
    stream = _frame(b"x" * size) + _frame(b"ping", opcode=0x9) + _frame(b"y" * size)
    check = MaskedFrameCheck()
    for start in range(0, len(stream), chunk):
        assert check.feed(stream[start : start + chunk]) is None


@pytest.mark.parametrize("chunk", [1, 2, 5, 1 << 20])
def test_the_first_unmasked_frame_is_found_where_it_starts(chunk: int) -> None:
    first = _frame(b"a" * 300)
    stream = first + _frame(b"bad", masked=False) + _frame(b"after")
    check = MaskedFrameCheck()
    for start in range(0, len(stream), chunk):
        found = check.feed(stream[start : start + chunk])
        if found is not None:
            # Its offset in this chunk, or 0 when its header began in an earlier one.
            began_before = found == 0 and start > len(first)
            assert start + found == len(first) or began_before
            return
    raise AssertionError("the unmasked frame was not found")
