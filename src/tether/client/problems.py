"""The words of the problems every command and tool reports, in one place.

``tether attach``, ``check``, ``load``, ``stress``, ``stats`` and ``sessions`` all say "cannot reach
the server", "unknown project" and "unknown session" with these functions, in one line each,
whatever the library underneath raised (aiohttp, urllib, the socket module).
"""

from __future__ import annotations

import errno
import socket
import ssl
from collections.abc import Iterable

import aiohttp

_ERRNO_WORDS = {
    errno.ECONNREFUSED: "connection refused (is the server running?)",
    errno.ECONNRESET: "connection reset",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
    errno.ETIMEDOUT: "timed out",
    errno.EADDRNOTAVAIL: "address not available",
}


def reason(exc: BaseException) -> str:
    """A short, one-line reason for a failed connection or request."""
    cause: BaseException | None = exc
    if isinstance(exc, aiohttp.ClientConnectorError):
        cause = exc.os_error
    reason_attr = getattr(exc, "reason", None)  # urllib's URLError wraps the socket's error
    if isinstance(reason_attr, BaseException):
        cause = reason_attr
    if isinstance(cause, TimeoutError | socket.timeout) and not getattr(cause, "errno", None):
        return "timed out"
    if isinstance(cause, socket.gaierror):
        return "unknown host name"
    if isinstance(cause, ssl.SSLError):
        return f"TLS failed ({cause.reason or cause})"
    if isinstance(cause, OSError) and cause.errno in _ERRNO_WORDS:
        return _ERRNO_WORDS[cause.errno]
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror.lower()
    if isinstance(reason_attr, str) and reason_attr:
        return reason_attr
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())  # never more than one line


def unreachable(url: str, why: str) -> str:
    """The server at ``url`` did not answer (refused, unknown host, timed out)."""
    return f"cannot reach the server at {url}: {why}"


def unknown_project(project: str, valid: Iterable[str]) -> str:
    """``project`` is not one the server offers; name those it does."""
    names = ", ".join(valid)
    return f"unknown project {project!r} (this server has: {names or 'none'})"


def unknown_session(session: str) -> str:
    """No session with this id or key on the server."""
    return f"unknown session {session!r}"
