"""The token of ``--auth local`` (the default): generated once per port, kept in a file only
this account can read (:mod:`tether.protocol.localtoken` says where), and reused by every later
start on that port, so that open pages and ``tether attach`` keep working across restarts and
upgrades in place.

A file that others may read, or that another account owns, is refused (ConfigError naming it):
anyone who can read it has a shell.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path

from tether.errors import ConfigError
from tether.protocol.localtoken import token_file
from tether.server.files import check_private

_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{32,128}")


def path_for(port: int, environ: Mapping[str, str] | None = None) -> Path:
    """This account's token file for ``port``."""
    source = os.environ if environ is None else environ
    return Path(token_file(port, source, source.get("HOME") or os.path.expanduser("~")))


def obtain(port: int, environ: Mapping[str, str] | None = None) -> str:
    """The stored token of ``port``, else a new one (stored; with port 0, only once bound)."""
    if port == 0:
        return secrets.token_urlsafe(32)
    path = path_for(port, environ)
    token = read(path)
    if token is None:
        token = secrets.token_urlsafe(32)
        write(path, token)
    return token


def publish(port: int, token: str, environ: Mapping[str, str] | None = None) -> Path:
    """Store ``token`` as the one of ``port`` (no write when it is already there)."""
    path = path_for(port, environ)
    if read(path) != token:
        write(path, token)
    return path


def read(path: Path) -> str | None:
    """The token in ``path``; None when there is none (or it is not a token: it is replaced)."""
    try:
        check_private(path, "auth")
        if path.lstat().st_uid != os.geteuid():
            raise ConfigError("auth", f"{path} belongs to another account")
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError):
        text = ""
    return text if _TOKEN_RE.fullmatch(text) else None


def write(path: Path, token: str) -> None:
    """Write ``token`` to ``path`` atomically, mode 0600, in a directory only we can enter."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _check_directory(path.parent)
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as handle:
                handle.write(token + "\n")
            os.replace(temporary, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
    except OSError as exc:
        raise ConfigError(
            "auth", f"cannot store the local token in {path}: {exc.strerror}"
        ) from None


def _check_directory(directory: Path) -> None:
    info = directory.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise ConfigError("auth", f"{directory} is not a directory of this account")
    if info.st_mode & 0o022:
        raise ConfigError("auth", f"{directory} is writable by others: chmod 700 {directory}")
