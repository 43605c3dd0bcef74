"""Where a request comes from and whom it is for: bind, Host, Origin and forwarded addresses.

* **DNS rebinding.** A page on ``http://evil.example:4001`` whose name the attacker re-points at
  127.0.0.1 is, for the browser, same-origin with itself: its requests reach a loopback-bound
  server with ``Host: evil.example:4001`` and a matching ``Origin``. Checking the Host header
  against the names we answer to (loopback addresses, ``localhost``, the configured host names)
  is what stops it. The check is on when the server is bound to loopback or host names are
  configured.
* **Cross-site WebSocket hijacking.** Browsers send cookies with cross-site WebSocket upgrades;
  only the ``Origin`` header tells us which page asked. Allowed: configured origins, and the
  server's own origin (the scheme and Host the request came with).
* **Forwarded addresses** are believed only from configured trusted proxies (addresses or
  networks), walking ``X-Forwarded-For`` from the right past every trusted hop.

Pure functions over strings: no sockets, no web framework.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_LABELS = r"(?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\.)*[a-z0-9_-]{1,63}"
_HOSTNAME_RE = re.compile(_LABELS)
_HOST_PATTERN_RE = re.compile(r"\.?" + _LABELS)  # ".example.com": every subdomain
_ORIGIN_RE = re.compile(r"https?://[^/?#\s]+")


# Parsing an address costs microseconds and runs several times per connection, mostly on the
# same few peers: remembered (bounded; the results are immutable).
@functools.lru_cache(maxsize=4096)
def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


@functools.lru_cache(maxsize=4096)
def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (``127.0.0.0/8``, ``::1``, mapped forms)."""
    host = host.strip("[]").lower().rstrip(".")
    if host == "localhost":
        return True
    address = _ip(host)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address is not None and address.is_loopback


def host_name(header: str) -> str | None:
    """The host part of a Host header (lowercase, no port, no brackets); None if malformed."""
    header = header.strip().lower()
    if header.startswith("["):
        name, bracket, rest = header[1:].partition("]")
        if not bracket or (rest and not _is_port(rest)) or _ip(name) is None:
            return None
        return name
    name, colon, port = header.partition(":")
    if colon and not _is_port(":" + port):
        return None
    name = name.rstrip(".")
    if _ip(name) is not None or _HOSTNAME_RE.fullmatch(name):
        return name
    return None


def _is_port(text: str) -> bool:
    digits = text[1:]
    return text.startswith(":") and digits.isascii() and digits.isdigit() and len(digits) <= 5


def is_valid_host_pattern(pattern: str) -> bool:
    """A configured host name: a DNS name, an IP address, or ``.suffix`` for every subdomain."""
    pattern = pattern.strip().lower()
    return _ip(pattern.strip("[]")) is not None or _HOST_PATTERN_RE.fullmatch(pattern) is not None


@dataclass(frozen=True)
class HostPolicy:
    """Which Host headers are served. Inactive: every Host is (a non-loopback bind, no names)."""

    active: bool
    names: frozenset[str]

    @classmethod
    def for_bind(cls, bind_host: str, allowed_hosts: Iterable[str]) -> HostPolicy:
        names = frozenset(n.strip().lower().strip("[]") for n in allowed_hosts)
        return cls(active=is_loopback_host(bind_host) or bool(names), names=names)

    def allows(self, header: str | None) -> bool:
        if not self.active:
            return True
        name = host_name(header) if header is not None else None
        if name is None:
            return False
        if is_loopback_host(name) or name in self.names:
            return True
        return any(p.startswith(".") and name.endswith(p) for p in self.names)


def is_valid_origin(origin: str) -> bool:
    """A configured origin: ``http(s)://host[:port]``, nothing after."""
    return _ORIGIN_RE.fullmatch(origin.strip()) is not None


def origin_allowed(
    origin: str | None,
    host: str | None,
    allowed: Iterable[str],
    schemes: Iterable[str] = ("http", "https"),
) -> bool:
    """No Origin (not a browser) passes; else it must be configured or our own: one of
    ``schemes`` (the ones we are reached by: ``https`` only over TLS, ``http`` only in plain,
    both behind a TLS-terminating proxy) with ``host``."""
    if origin is None:
        return True
    origin = origin.strip().lower().rstrip("/")
    if origin in (o.strip().lower().rstrip("/") for o in allowed):
        return True
    if not host:
        return False
    host = host.strip().lower()
    return origin in (f"{scheme}://{host}" for scheme in schemes)


def parse_networks(specs: Iterable[str]) -> tuple[Network, ...]:
    """Trusted proxies as networks (a bare address is a /32 or /128); ValueError if malformed."""
    return tuple(ipaddress.ip_network(spec.strip(), strict=False) for spec in specs)


def is_in_networks(address: str, networks: tuple[Network, ...]) -> bool:
    """True when ``address`` (an IP, mapped forms included) is in one of ``networks``."""
    parsed = _ip(address.strip().strip("[]"))
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        parsed = parsed.ipv4_mapped
    return parsed is not None and any(parsed in network for network in networks)


def forwarded_client(peer: str, forwarded_for: str | None, trusted: tuple[Network, ...]) -> str:
    """The client's address: the peer, or the first untrusted hop from the right of
    ``X-Forwarded-For`` when the peer is a trusted proxy. A malformed hop ends the walk at the
    last trusted one (which is then taken as the client).
    """
    if not trusted or not forwarded_for or not is_in_networks(peer, trusted):
        return peer
    client = peer
    for hop in reversed([h.strip() for h in forwarded_for.split(",")]):
        if _ip(hop.strip("[]")) is None:
            break
        client = hop.strip("[]")
        if not is_in_networks(client, trusted):
            break
    return client
