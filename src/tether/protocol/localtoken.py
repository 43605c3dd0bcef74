"""Where the token of ``--auth local`` lives, and the link that carries it: the one rule the
server (which writes the file) and the ``tether`` commands (which read it) share.

One file per port, in the user's runtime directory (``$XDG_RUNTIME_DIR/tether/``, private to the
user and emptied at logout), else ``~/.local/state/tether/``. Pure: the caller passes the
environment and the home directory.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import PurePosixPath

FRAGMENT = "#token="


def token_directory(environ: Mapping[str, str], home: str) -> PurePosixPath:
    """The directory holding this account's local tokens."""
    runtime = environ.get("XDG_RUNTIME_DIR", "")
    if runtime.startswith("/"):  # the spec: an absolute path, else ignored
        return PurePosixPath(runtime) / "tether"
    return PurePosixPath(home) / ".local" / "state" / "tether"


def token_file(port: int, environ: Mapping[str, str], home: str) -> PurePosixPath:
    """The token file of the server on ``port``."""
    return token_directory(environ, home) / f"token-{port}"


def link(base_url: str, token: str) -> str:
    """The page's address with the token in its fragment (never sent to a server or a log)."""
    return f"{base_url.rstrip('/')}/{FRAGMENT}{token}"
