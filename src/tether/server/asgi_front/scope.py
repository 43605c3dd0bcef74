"""An ASGI scope read into the plain mappings the core takes (the one place that does so)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qsl

from tether.server.core import Server
from tether.server.front import Upgrade

Scope = MutableMapping[str, Any]


class Headers(Mapping[str, str]):
    """A scope's headers, looked up case-insensitively; a repeated name answers its first line."""

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self._lines = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in raw]
        self._first: dict[str, str] = {}
        for name, value in self._lines:
            self._first.setdefault(name, value)

    def __getitem__(self, name: str) -> str:
        return self._first[name.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._first)

    def __len__(self) -> int:
        return len(self._first)

    def get_all(self, name: str) -> list[str]:
        """Every line of ``name``, in order."""
        wanted = name.lower()
        return [value for key, value in self._lines if key == wanted]


def headers_of(scope: Scope) -> Headers:
    return Headers(list(scope.get("headers") or ()))


def cookies_of(headers: Headers) -> dict[str, str]:
    """The request's cookies (an unparsable Cookie header counts as none)."""
    jar: SimpleCookie = SimpleCookie()
    for line in headers.get_all("cookie"):
        try:
            jar.load(line)
        except CookieError:
            continue
    return {name: morsel.value for name, morsel in jar.items()}


def query_of(scope: Scope) -> dict[str, str]:
    """The query string's parameters; a repeated name keeps its first value (as aiohttp's)."""
    raw = bytes(scope.get("query_string") or b"").decode("latin-1")
    query: dict[str, str] = {}
    for name, value in parse_qsl(raw, keep_blank_values=True):
        query.setdefault(name, value)
    return query


def route_of(scope: Scope) -> str:
    """The path below where the application is mounted (``/`` for the mount point itself).

    Starlette's ``Mount`` and uvicorn's ``--root-path`` keep the whole path in ``path`` and the
    mount point in ``root_path``; older routers strip it from ``path``: both are handled.
    """
    path, root = str(scope.get("path") or "/"), str(scope.get("root_path") or "")
    if root and (path == root or path.startswith(root + "/")):
        path = path[len(root) :]
    return path or "/"


def client_address(server: Server, scope: Scope, headers: Headers) -> str:
    """The peer, or the client it forwards for when it is a trusted proxy."""
    client = scope.get("client")
    peer = str(client[0]) if client else ""
    return server.client_address(peer, headers.get_all("x-forwarded-for"))


def upgrade_of(scope: Scope, headers: Headers) -> Upgrade:
    """A ``/ws/terminal`` scope as the core takes it."""
    return Upgrade(
        headers=headers,
        cookies=cookies_of(headers),
        query=query_of(scope),
        subprotocols=tuple(str(p) for p in scope.get("subprotocols") or ()),
    )
