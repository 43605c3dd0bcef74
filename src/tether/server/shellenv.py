"""How a shell starts: its environment, built from an allowlist, and the account it runs as.

The server's environment may hold secrets (tokens, ``TETHER_*`` settings, cloud credentials);
none of it reaches a shell except the variables named here.

A server running as root (or holding ``CAP_SETUID`` and ``CAP_SETGID`` as ambient capabilities,
as the shipped systemd unit gives it) may run shells as other accounts: one for everyone
(``--shell-user``) or each owner's own (:func:`shell_for`, docs/security.md). The shell command
is then wrapped in ``setpriv --reuid --regid --init-groups`` with every inheritable and ambient
capability dropped (exec argv, never a shell string), and the environment names that account
(HOME, USER, LOGNAME).
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
_CAP_SETGID, _CAP_SETUID = 6, 7  # linux/capability.h


def run_as(
    user: str, shell: Sequence[str], euid: int | None = None, setting: str = "shell-user"
) -> tuple[str, ...]:
    """The argv that starts ``shell`` as ``user`` (unchanged when we already run as ``user``).

    Raises ConfigError (naming ``setting``) when the user does not exist, the server may not
    switch users, or ``setpriv`` is missing.
    """
    account = account_named(user, setting)
    euid = os.geteuid() if euid is None else euid
    if account.pw_uid == euid:
        return tuple(shell)
    if not may_switch_user(euid):
        raise ConfigError(setting, "switching user needs root, or CAP_SETUID and CAP_SETGID")
    program = shutil.which(_RUN_AS)
    if program is None:
        raise ConfigError(setting, f"{_RUN_AS} (util-linux) is not installed")
    return (
        program,
        f"{_REUID}{account.pw_uid}",
        f"--regid={account.pw_gid}",
        "--init-groups",
        # A server given capabilities (not root) keeps them across a uid change: drop them, or
        # the shell could switch to any account itself.
        "--inh-caps=-all",
        "--ambient-caps=-all",
        "--",
        *shell,
    )


def account_named(user: str, setting: str = "shell-user") -> pwd.struct_passwd:
    """The account database entry of ``user``; ConfigError naming ``setting`` if there is none."""
    try:
        return pwd.getpwnam(user)
    except (KeyError, ValueError):  # ValueError: a NUL in the name
        raise ConfigError(setting, f"no such user {user[:64]!r}") from None


def may_switch_user(euid: int) -> bool:
    """Root may; another user only with CAP_SETUID and CAP_SETGID in its ambient set (the only
    capabilities a spawned ``setpriv`` inherits)."""
    if euid == 0:
        return True
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            line = next((x for x in status if x.startswith("CapAmb:")), "CapAmb: 0")
    except OSError:
        return False
    needed = (1 << _CAP_SETGID) | (1 << _CAP_SETUID)
    return int(line.split()[1], 16) & needed == needed


def shell_for(shell: Sequence[str], account: str | None) -> tuple[str, ...]:
    """``shell`` (as configured, maybe already wrapped for ``--shell-user``) run as ``account``;
    unchanged when ``account`` is None. ConfigError as :func:`run_as`."""
    if account is None:
        return tuple(shell)
    return run_as(account, _split_run_as(shell)[1], setting="account")


def switched_uid(shell: Sequence[str]) -> int | None:
    """The uid ``shell`` (from :func:`run_as`) switches to; None when it runs as the server."""
    account, _ = _split_run_as(shell)
    return account.pw_uid if account is not None else None


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
    program = argv[0] if argv else shell[0]
    # SHELL is a path (programs run it): a bare name is resolved on the shell's PATH.
    env["SHELL"] = program if "/" in program else shutil.which(program, path=env["PATH"]) or program
    return env
