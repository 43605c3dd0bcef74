"""tether.server.hostcheck: loopback, Host headers (DNS rebinding), origins, forwarded hops"""

from __future__ import annotations

import pytest

from tether.server.hostcheck import (
    HostPolicy,
    forwarded_client,
    host_name,
    is_loopback_host,
    is_valid_host_pattern,
    is_valid_origin,
    origin_allowed,
    parse_networks,
)


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "127.255.0.9", "::1", "[::1]", "localhost", "LOCALHOST.", "::ffff:127.0.0.1"],
)
def test_loopback_hosts(host: str) -> None:
    assert is_loopback_host(host)


@pytest.mark.parametrize(
    "host",
    [
        "0.0.0.0",
        "::",
        "",
        "192.168.1.2",
        "10.0.0.1",
        "example.com",
        "localhost.evil.com",
        # A prefix is not an address: these are not loopback (issue 12).
        "::1abc",
        "::1:0",
        "127.0.0.1.evil.example",
        "::ffff:128.0.0.1",
    ],
)
def test_non_loopback_hosts(host: str) -> None:
    assert not is_loopback_host(host)


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("127.0.0.1:4001", "127.0.0.1"),
        ("LocalHost:80", "localhost"),
        ("[::1]:4001", "::1"),
        ("[::1]", "::1"),
        ("tether.example.com.", "tether.example.com"),
        ("a_b.example", "a_b.example"),
        ("example.com:99999", "example.com"),
        ("example.com:123456", None),
        ("example.com:", None),
        ("example.com:x", None),
        ("[::1", None),
        ("[nothost]:80", None),
        ("[::1]x", None),
        ("evil.com/", None),
        ("user@host", None),
        ("", None),
        ("-bad-.com", None),
        (".dev.example", None),  # a pattern, never a host
    ],
)
def test_host_name(header: str, name: str | None) -> None:
    assert host_name(header) == name


LOOPBACK = HostPolicy.for_bind("127.0.0.1", ["tether.test", ".dev.example"])


@pytest.mark.parametrize(
    "header",
    ["127.0.0.1:4001", "localhost:4001", "[::1]:4001", "127.0.0.2", "tether.test", "x.dev.example"],
)
def test_loopback_bind_serves_loopback_and_configured_names(header: str) -> None:
    assert LOOPBACK.allows(header)


@pytest.mark.parametrize(
    "header",
    [None, "", "evil.example:4001", "tether.test.evil.com", "dev.example", "192.168.0.9", "x/y"],
)
def test_loopback_bind_refuses_other_hosts(header: str | None) -> None:
    assert not LOOPBACK.allows(header)


def test_policy_is_active_on_loopback_or_with_names() -> None:
    assert HostPolicy.for_bind("localhost", []).active
    assert HostPolicy.for_bind("0.0.0.0", ["a.example"]).active
    open_policy = HostPolicy.for_bind("0.0.0.0", [])
    assert not open_policy.active and open_policy.allows("anything.example")


@pytest.mark.parametrize("pattern", ["a.example", ".example.org", "10.0.0.1", "::1", "[::1]"])
def test_valid_host_patterns(pattern: str) -> None:
    assert is_valid_host_pattern(pattern)


@pytest.mark.parametrize("pattern", ["", "a b", "http://x", "x/y", "*.example.com", "a..b"])
def test_invalid_host_patterns(pattern: str) -> None:
    assert not is_valid_host_pattern(pattern)


@pytest.mark.parametrize(
    ("origin", "valid"),
    [
        ("https://a.example", True),
        ("http://127.0.0.1:4001", True),
        ("a.example", False),
        ("https://a.example/", False),
        ("ftp://a.example", False),
        ("null", False),
    ],
)
def test_valid_origins(origin: str, valid: bool) -> None:
    assert is_valid_origin(origin) is valid


@pytest.mark.parametrize(
    ("origin", "host", "allowed", "expected"),
    [
        (None, "127.0.0.1:4001", (), True),  # not a browser
        ("http://127.0.0.1:4001", "127.0.0.1:4001", (), True),  # our own origin
        ("https://t.example", "t.example", (), True),  # ours, behind a TLS proxy
        ("HTTP://T.EXAMPLE", "t.example", (), True),
        ("http://evil.example", "127.0.0.1:4001", (), False),
        ("http://127.0.0.1:4002", "127.0.0.1:4001", (), False),  # another port is another origin
        ("null", "127.0.0.1:4001", (), False),
        ("", "127.0.0.1:4001", (), False),
        ("http://evil.example", None, (), False),
        ("https://app.example", "t.example", ("https://app.example",), True),
        ("https://app.example", "t.example", ("https://app.example/",), True),
    ],
)
def test_origin_allowed(origin, host, allowed, expected) -> None:
    assert origin_allowed(origin, host, allowed) is expected


TRUSTED = parse_networks(["127.0.0.1", "10.0.0.0/8"])


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("127.0.0.1", "203.0.113.5", "203.0.113.5"),
        ("127.0.0.1", "1.1.1.1, 203.0.113.5", "203.0.113.5"),  # the rightmost untrusted hop
        ("127.0.0.1", "203.0.113.5, 10.1.2.3", "203.0.113.5"),  # past a trusted inner proxy
        ("127.0.0.1", "10.1.2.3", "10.1.2.3"),  # only trusted hops: the leftmost
        ("127.0.0.1", "spoofed, 203.0.113.5", "203.0.113.5"),
        ("127.0.0.1", "203.0.113.5, garbage", "127.0.0.1"),  # a malformed hop is not believed
        ("127.0.0.1", "", "127.0.0.1"),
        ("127.0.0.1", None, "127.0.0.1"),
        ("192.0.2.7", "203.0.113.5", "192.0.2.7"),  # an untrusted peer's header is ignored
        ("::ffff:127.0.0.1", "2001:db8::1", "2001:db8::1"),
    ],
)
def test_forwarded_client(peer: str, forwarded: str | None, client: str) -> None:
    assert forwarded_client(peer, forwarded, TRUSTED) == client


def test_no_trusted_proxies_means_the_peer() -> None:
    assert forwarded_client("127.0.0.1", "203.0.113.5", ()) == "127.0.0.1"


def test_parse_networks_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        parse_networks(["10.0.0.0/33"])
