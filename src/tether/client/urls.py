"""Server URLs in every accepted form, and the small HTTP requests the client and tools make.

Every tool accepts the WebSocket endpoint (``ws://host:port/ws/terminal``) or the server's base URL
(``ws://host:port``, ``http://host:port``, ``https://…`` → ``wss://…``, a bare ``host:port``, and
base paths behind a reverse proxy such as ``https://host/tether``); :func:`websocket_url` and
:func:`http_url` turn any of them into the form each side needs.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from tether.client.problems import reason, unreachable
from tether.errors import ConnectFailed

WEBSOCKET_PATH = "/ws/terminal"
_SCHEMES = {"ws": "ws", "wss": "wss", "http": "ws", "https": "wss"}


def _split(url: str) -> tuple[str, str, str]:
    """(scheme, netloc, base path) of any accepted form of a server URL."""
    parts = urlsplit(url if "://" in url else f"ws://{url}")
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES or not parts.hostname:
        raise ValueError(f"not a tether URL: {url!r} (use ws://host:port or http://host:port)")
    path = parts.path.rstrip("/")
    path = path.removesuffix(WEBSOCKET_PATH)
    return scheme, parts.netloc, path


def websocket_url(url: str) -> str:
    """The WebSocket endpoint (``ws[s]://host:port[/base]/ws/terminal``) for any server URL."""
    scheme, netloc, path = _split(url)
    return urlunsplit((_SCHEMES[scheme], netloc, path + WEBSOCKET_PATH, "", ""))


def http_url(url: str) -> str:
    """The server's HTTP base URL (``http[s]://host:port[/base]``, no trailing slash)."""
    scheme, netloc, path = _split(url)
    secure = _SCHEMES[scheme] == "wss"
    return urlunsplit(("https" if secure else "http", netloc, path, "", ""))


def describe_error(exc: BaseException) -> str:
    """One short line for an error of a connection or request."""
    return reason(exc)


def auth_headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


async def fetch_json(url: str, path: str, *, token: str | None = None, timeout: float = 10) -> Any:
    """GET ``path`` (e.g. ``/stats/sessions``) from the server at ``url``; the decoded JSON."""
    target = http_url(url) + path
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http,
            http.get(target, headers=auth_headers(token)) as response,
        ):
            response.raise_for_status()
            return await response.json()
    except aiohttp.ClientResponseError as exc:
        raise ConnectFailed(f"GET {target}: HTTP {exc.status} {exc.message}") from exc
    except ValueError as exc:
        raise ConnectFailed(f"GET {target} did not answer JSON: is it tether?") from exc
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise ConnectFailed(unreachable(http_url(url), reason(exc))) from exc


async def fetch_projects(url: str, *, token: str | None = None) -> list[str]:
    """The ids of the projects the caller may use (``GET /api/projects``), in server order."""
    projects = await fetch_json(url, "/api/projects", token=token)
    return [str(project["id"]) for project in projects]
