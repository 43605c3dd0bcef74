"""How a shell starts: its environment, built from an allowlist, and the account it runs as.

The server's environment may hold secrets (tokens, ``TETHER_*`` settings, cloud credentials);
none of it reaches a shell except the variables named here.

A server running as root may run shells as an unprivileged account (``--shell-user``): the shell
command is then wrapped, once at start, in ``setpriv --reuid --regid --init-groups --`` (exec
argv, never a shell string), and the environment names that account (HOME, USER, LOGNAME).
"""

from __future__ import annotations

import os
import pwd
import shutil
from collections.abc import Mapping, Sequence

from tether.errors import ConfigError

_PASSED_THROUGH = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "HOME", "USER", "LOGNAME")
_ACCOUNT_VARIABLES = ("HOME", "USER", "LOGNAME")
_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_RUN_AS = "setpriv"
_REUID = "--reuid="


def run_as(user: str, shell: Sequence[str], euid: int | None = None) -> tuple[str, ...]:
    """The argv that starts ``shell`` as ``user`` (unchanged when we already run as ``user``).

    Raises ConfigError when the user does not exist, the server is not root, or no ``setpriv``.
    """
    try:
        account = pwd.getpwnam(user)
    except (KeyError, ValueError):  # ValueError: a NUL in the name
        raise ConfigError("shell-user", f"no such user {user[:64]!r}") from None
    euid = os.geteuid() if euid is None else euid
    if account.pw_uid == euid:
        return tuple(shell)
    if euid != 0:
        raise ConfigError("shell-user", "switching user needs the server to run as root")
    program = shutil.which(_RUN_AS)
    if program is None:
        raise ConfigError("shell-user", f"{_RUN_AS} (util-linux) is not installed")
    return (
        program,
        f"{_REUID}{account.pw_uid}",
        f"--regid={account.pw_gid}",
        "--init-groups",
        "--",
        *shell,
    )


def _split_run_as(shell: Sequence[str]) -> tuple[pwd.struct_passwd | None, Sequence[str]]:
    # Undo run_as: the account the shell will run as (None: ours) and the shell's own argv.
    if not shell or os.path.basename(shell[0]) != _RUN_AS or "--" not in shell:
        return None, shell
    uid = next((a[len(_REUID) :] for a in shell if a.startswith(_REUID)), None)
    try:
        account = pwd.getpwuid(int(uid)) if uid is not None else None
    except (KeyError, ValueError):
        account = None
    return account, shell[list(shell).index("--") + 1 :]


def shell_environment(
    shell: Sequence[str], owner: str, project: str, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment of a new shell for ``owner`` in ``project``."""
    source = os.environ if environ is None else environ
    env = {name: source[name] for name in _PASSED_THROUGH if name in source}
    account, argv = _split_run_as(shell)
    if account is not None:
        for name in _ACCOUNT_VARIABLES:
            env.pop(name, None)  # the server's HOME is not the shell user's
    try:
        account = account or pwd.getpwuid(os.getuid())
        env.setdefault("HOME", account.pw_dir)
        env.setdefault("USER", account.pw_name)
        env.setdefault("LOGNAME", account.pw_name)
    except KeyError:
        pass
    env.setdefault("PATH", _DEFAULT_PATH)
    env.setdefault("LANG", "C.UTF-8")
    env["TERM"] = "xterm-256color"
    env["COLORTERM"] = "truecolor"
    env["SHELL"] = argv[0] if argv else shell[0]
    return env
