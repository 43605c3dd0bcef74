"""The import paths users write keep working after the package was split into layers."""

from __future__ import annotations

import importlib

import pytest

import tether

# Every path the docs (README, docs/*.md) name for users, and what it must provide.
DOCUMENTED = [
    ("tether", "connect"),
    ("tether", "Terminal"),
    ("tether", "__version__"),
    ("tether.client", "connect"),
    ("tether.client", "Terminal"),
    ("tether.client", "websocket_url"),
    ("tether.client", "http_url"),
    ("tether.client", "fetch_projects"),
    ("tether.client", "Gap"),
    ("tether.client_events", "Gap"),
    ("tether.client_events", "Disconnected"),
    ("tether.policy", "ReconnectPolicy"),
    ("tether.policy", "PolicyEvent"),
    ("tether.codes", "action_for"),
    ("tether.codes", "CloseCode"),
    ("tether.proxy", "TcpProxy"),
    ("tether.embedded", "EmbeddedServer"),
    ("tether.errors", "SessionEnded"),
    ("tether.errors", "ConnectFailed"),
]


@pytest.mark.parametrize(("module", "name"), DOCUMENTED)
def test_documented_import_path_still_works(module: str, name: str) -> None:
    assert getattr(importlib.import_module(module), name) is not None


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("tether.policy", "tether.protocol.policy"),
        ("tether.codes", "tether.protocol.codes"),
        ("tether.proxy", "tether.tools.proxy"),
        ("tether.embedded", "tether.tools.embedded"),
        ("tether.client_events", "tether.client.events"),
    ],
)
def test_compatibility_paths_are_the_same_objects(old: str, new: str) -> None:
    old_module, new_module = importlib.import_module(old), importlib.import_module(new)
    public = [name for name in vars(old_module) if not name.startswith("_")]
    assert public
    for name in public:
        assert getattr(old_module, name) is getattr(new_module, name), name


def test_connect_is_the_client_connect() -> None:
    from tether.client import Terminal, connect

    assert tether.connect is connect
    assert tether.Terminal is Terminal


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        _ = tether.nonexistent  # type: ignore[attr-defined]
