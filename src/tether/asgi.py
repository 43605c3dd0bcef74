"""tether inside another Python web application: an ASGI application (docs/embedding.md).

>>> from tether.asgi import create_app
>>> term = create_app(settings, identify=who_is_it)   # doctest: +SKIP
>>> host_app.mount("/term", term)                      # doctest: +SKIP

It needs no web framework at run time; any ASGI server runs it, and FastAPI or Starlette mount
it under a path of their own.
"""

from __future__ import annotations

import os

from tether.server.asgi_front.app import IdentifyHook, TetherApp
from tether.server.asgi_front.scope import Scope, cookies_of, headers_of
from tether.server.clock import Clock
from tether.server.config import Settings, build_settings
from tether.server.config import from_environment as _settings_from_environment
from tether.server.identity import Identity

__all__ = [
    "IdentifyHook",
    "Identity",
    "Scope",
    "TetherApp",
    "cookies_of",
    "create_app",
    "from_environment",
    "headers_of",
]


def create_app(
    settings: Settings, *, identify: IdentifyHook | None = None, clock: Clock | None = None
) -> TetherApp:
    """An ASGI application serving ``/ws/terminal``, the page and the probes for ``settings``.

    ``identify(scope)`` (sync or async) maps the host application's request to a tether owner:
    an :class:`Identity`, or None (HTTP 401, WebSocket close 4001). Without it, tether's own
    auth settings decide (``token``, ``jwt`` or ``none``; ``local`` needs ``tether serve``).
    Raises :class:`~tether.errors.ConfigError` for settings it cannot serve.
    """
    return TetherApp(settings, identify=identify, clock=clock)


def from_environment() -> TetherApp:
    """An application from ``TETHER_*`` variables, with tether's own auth: for
    ``uvicorn --factory tether.asgi:from_environment``."""
    return create_app(build_settings(_settings_from_environment(os.environ)))
