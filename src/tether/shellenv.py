"""The environment a shell starts with: built from an allowlist, never the server's own.

The server's environment may hold secrets (tokens, ``TETHER_*`` settings, cloud credentials);
none of it reaches a shell except the variables named here.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Mapping, Sequence

_PASSED_THROUGH = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "HOME", "USER", "LOGNAME")
_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def shell_environment(
    shell: Sequence[str], owner: str, project: str, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment of a new shell for ``owner`` in ``project``."""
    source = os.environ if environ is None else environ
    env = {name: source[name] for name in _PASSED_THROUGH if name in source}
    try:
        account = pwd.getpwuid(os.getuid())
        env.setdefault("HOME", account.pw_dir)
        env.setdefault("USER", account.pw_name)
        env.setdefault("LOGNAME", account.pw_name)
    except KeyError:
        pass
    env.setdefault("PATH", _DEFAULT_PATH)
    env.setdefault("LANG", "C.UTF-8")
    env["TERM"] = "xterm-256color"
    env["COLORTERM"] = "truecolor"
    env["SHELL"] = shell[0]
    return env
