"""The relay's small pure parts: the owner's WebSocket URL, and which close codes it passes on."""

from __future__ import annotations

import pytest

from tether.server.aiohttp_front.forward import _sendable, owner_ws_url


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


@pytest.mark.parametrize(
    ("received", "sent"),
    [
        *[(code, code) for code in (1000, 1001, 1012, 1013, 4004, 4129)],
        *[(code, 1000) for code in (1005, 1006, None, 0, 5000)],  # not sendable: 1000
    ],
)
def test_close_codes_passed_on(received: object, sent: int) -> None:
    assert _sendable(received) == sent
