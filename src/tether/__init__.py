"""tether: persistent browser terminals — real shells in real PTYs that survive every disconnect.

``tether.connect(...)`` opens a terminal with the client library (:mod:`tether.client`).
"""

from __future__ import annotations

from typing import Any

from tether._version import __version__

__all__ = ["Terminal", "__version__", "connect"]


def __getattr__(name: str) -> Any:
    # The client is imported on first use, so that the server does not pay for it.
    if name in ("connect", "Terminal"):
        from tether import client

        return getattr(client, name)
    raise AttributeError(f"module 'tether' has no attribute {name!r}")
