"""The relay's small pure parts: the owner's WebSocket URL, the upgrade request sent to it, and
where the owner's frames end (so that a drain closes the client between two frames)."""

from __future__ import annotations

import struct

import pytest

from tether.server.aiohttp_front.forward import (
    FrameBoundaries,
    close_frame,
    owner_ws_url,
    upgrade_request,
)


@pytest.mark.parametrize(
    ("advertised", "expected"),
    [
        ("http://10.0.0.1:4001", "ws://10.0.0.1:4001/ws/terminal?session=s&project=p"),
        ("https://node.example:443/", "wss://node.example:443/ws/terminal?session=s&project=p"),
    ],
)
def test_owner_ws_url(advertised: str, expected: str) -> None:
    assert owner_ws_url(advertised, {"session": "s", "project": "p"}) == expected


def test_the_query_is_encoded() -> None:
    assert owner_ws_url("http://a:1", {"token": "a b&c"}).endswith("?token=a+b%26c")


def test_the_upgrade_request_keeps_the_advertised_path_and_the_headers() -> None:
    sent = upgrade_request("http://a:1/t/", {"session": "s"}, {"Host": "h", "X-A": "1"})
    assert sent == b"GET /t/ws/terminal?session=s HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n\r\n"


def frame(payload: bytes, *, masked: bool = False, opcode: int = 0x2) -> bytes:
    size = len(payload)
    mask = 0x80 if masked else 0
    if size < 126:
        header = bytes((0x80 | opcode, mask | size))
    elif size < 1 << 16:
        header = bytes((0x80 | opcode, mask | 126)) + struct.pack(">H", size)
    else:
        header = bytes((0x80 | opcode, mask | 127)) + struct.pack(">Q", size)
    return header + (b"KEYS" if masked else b"") + payload


def test_frame_ends_are_found_whatever_the_cut() -> None:
    stream = frame(b"a" * 5) + frame(b"b" * 300) + frame(b"c" * 70000) + frame(b"", masked=True)
    boundaries = [0, 7, 7 + 304, 7 + 304 + 70010, len(stream)]
    for chunk in (1, 2, 3, 7, 100, 4096, len(stream)):
        frames = FrameBoundaries()
        for start in range(0, len(stream), chunk):
            data = stream[start : start + chunk]
            inside = [b - start for b in boundaries if start <= b <= start + len(data)]
            assert frames.feed(data) == (inside[0] if inside else -1), (chunk, start)
        assert frames.at_boundary


def test_at_boundary_only_between_frames() -> None:
    frames = FrameBoundaries()
    assert frames.at_boundary and frames.feed(b"") == 0
    assert frames.feed(frame(b"xyz")[:3]) == 0  # it started at a boundary
    assert not frames.at_boundary and frames.feed(b"y") == -1
    assert frames.feed(frame(b"xyz")[4:] + frame(b"q")[:1]) == 1  # the first frame's end
    assert not frames.at_boundary
    assert frames.feed(frame(b"q")[1:]) == 2 and frames.at_boundary


def test_a_close_frame_is_noticed() -> None:
    frames = FrameBoundaries()
    frames.feed(frame(b"data"))
    assert not frames.closed
    frames.feed(close_frame(1000, "bye")[:2])
    assert frames.closed


def test_close_frame() -> None:
    assert close_frame(1001, "going") == b"\x88\x07\x03\xe9going"
    assert len(close_frame(1001, "x" * 500)) == 2 + 125  # the reason is clipped
