"""Secret files (tokens, private keys, signing secrets): readable by their owner only, as ssh
requires of its keys. Certificates and public keys are not secrets and are not checked."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tether.errors import ConfigError


def check_private(path: Path, setting: str) -> None:
    """ConfigError naming ``path`` when its group or others have any access to it.

    A file that cannot be examined is left to the caller's read, which reports why.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if stat.S_ISREG(mode) and mode & 0o077:
        raise ConfigError(
            setting, f"{path} is accessible by others (mode {mode & 0o777:o}): chmod 600 {path}"
        )
