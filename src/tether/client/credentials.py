"""The credential a command uses when given none: the token a ``--auth local`` server of this
account stored for its port (:mod:`tether.protocol.localtoken` says where). Only for loopback
URLs: a token is never sent to another machine because it happens to use the same port."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from tether.protocol.localtoken import token_file

_DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}


def stored_token(url: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The local token of the server at ``url``; None when not loopback or none is stored."""
    port = _loopback_port(url)
    if port is None:
        return None
    source = os.environ if environ is None else environ
    path = Path(token_file(port, source, source.get("HOME") or os.path.expanduser("~")))
    try:
        token = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return token or None


def _loopback_port(url: str) -> int | None:
    try:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return None
    host = parts.hostname or ""
    if host != "localhost":
        try:
            if not ipaddress.ip_address(host).is_loopback:
                return None
        except ValueError:
            return None
    return port
