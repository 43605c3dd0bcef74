"""The direct front's opening handshake: which heads it takes, what it reads, what it answers."""

from __future__ import annotations

import pytest

from tether.server.direct_front.handshake import (
    head_end,
    read_head,
    switching_protocols,
    terminal_upgrade,
)

KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455, section 1.3


def _head(target: str = "/ws/terminal?project=default", **changes: str | None) -> bytes:
    fields = {
        "Host": "127.0.0.1:8080",
        "Upgrade": "websocket",
        "Connection": "keep-alive, Upgrade",
        "Sec-WebSocket-Key": KEY,
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Protocol": "tether.v1",
    }
    for name, value in changes.items():
        name = name.replace("_", "-")
        if value is None:
            fields.pop(name, None)
        else:
            fields[name] = value
    lines = "".join(f"{name}: {value}\r\n" for name, value in fields.items())
    return f"GET {target} HTTP/1.1\r\n{lines}\r\n".encode()


def test_a_well_formed_upgrade_is_read_into_what_the_core_takes() -> None:
    raw = _head(
        "/ws/terminal?project=default&session=a%20b&session=second&offset=12",
        Cookie="tether_token=abc; other=1",
        X_Forwarded_For="10.0.0.1",
    )
    head = read_head(raw)
    assert head is not None
    upgrade = terminal_upgrade(head)
    assert upgrade is not None and upgrade.key == KEY.encode()
    query = upgrade.upgrade.query
    assert query == {"project": "default", "session": "a b", "offset": "12"}  # the first counts
    assert upgrade.upgrade.cookies == {"tether_token": "abc", "other": "1"}
    assert upgrade.upgrade.headers["sec-websocket-version"] == "13"  # any case
    assert upgrade.upgrade.subprotocols == ("tether.v1",)
    assert upgrade.forwarded_for == ("10.0.0.1",)


@pytest.mark.parametrize(
    "raw",
    [
        _head("/ws/terminalx?project=default"),
        _head("/api/sessions"),
        _head(Upgrade=None),
        _head(Upgrade="h2c"),
        _head(Connection="keep-alive"),
        _head(Sec_WebSocket_Version="8"),
        _head(Sec_WebSocket_Key="not base64!"),
        _head(Sec_WebSocket_Key="c2hvcnQ="),  # 5 bytes, not 16
        _head(Content_Length="3"),
        _head().replace(b"GET", b"POST", 1),
        _head().replace(b"HTTP/1.1", b"HTTP/1.0", 1),
    ],
)
def test_anything_else_is_left_to_aiohttp(raw: bytes) -> None:
    head = read_head(raw)
    assert head is None or terminal_upgrade(head) is None


def test_a_malformed_head_is_not_read() -> None:
    assert read_head(b"GET /ws/terminal HTTP/1.1\r\nno colon here\r\n\r\n") is None


def test_the_end_of_a_head_is_found_only_once_it_came() -> None:
    raw = _head()
    assert head_end(raw[:-1]) == -1
    assert head_end(raw + b"\x81\x85") == len(raw)


def test_the_answer_carries_the_accept_value_of_the_rfc_and_the_offered_subprotocol() -> None:
    answer = switching_protocols(KEY.encode(), ("tether.v1",))
    assert answer.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in answer
    assert b"\r\nSec-WebSocket-Protocol: tether.v1\r\n" in answer
    assert answer.endswith(b"\r\n\r\n")
    assert b"Sec-WebSocket-Protocol" not in switching_protocols(KEY.encode(), ("other",))
