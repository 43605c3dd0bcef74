"""tether.server.shellenv: the allowlisted environment, and running shells as another account."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from tether.errors import ConfigError
from tether.server.shellenv import (
    may_switch_user,
    run_as,
    shell_environment,
    shell_for,
    switched_uid,
)

SERVER_ENVIRONMENT = {
    "PATH": "/usr/bin:/bin",
    "HOME": "/root",
    "LANG": "en_US.UTF-8",
    "TETHER_AUTH": "jwt",
    "TETHER_JWT_SECRET": "super-secret-signing-key-0123456789",
    "TETHER_TOKENS_FILE": "/etc/tether/tokens.toml",
    "AWS_SECRET_ACCESS_KEY": "aws-secret",
    "LD_PRELOAD": "/tmp/evil.so",
    "PYTHONPATH": "/srv/app",
}


def test_only_allowlisted_variables_pass() -> None:
    env = shell_environment(("/bin/bash",), "alice", "web", SERVER_ENVIRONMENT)
    assert not [name for name in env if name.startswith("TETHER_")]
    for leaked in ("AWS_SECRET_ACCESS_KEY", "LD_PRELOAD", "PYTHONPATH"):
        assert leaked not in env
    assert env["PATH"] == "/usr/bin:/bin" and env["HOME"] == "/root" and env["SHELL"] == "/bin/bash"
    assert env["TERM"] == "xterm-256color"
    assert "super-secret" not in repr(env)


def test_defaults_when_the_server_has_almost_nothing() -> None:
    env = shell_environment(("bash",), "alice", "web", {})
    assert env["PATH"] and env["LANG"] == "C.UTF-8" and env["HOME"]


def _other_account() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no 'nobody' account")


def test_run_as_wraps_the_shell_in_setpriv_when_root() -> None:
    account = _other_account()
    argv = run_as(account.pw_name, ("/bin/bash", "--norc"), euid=0)
    assert os.path.basename(argv[0]) == "setpriv"
    assert f"--reuid={account.pw_uid}" in argv and f"--regid={account.pw_gid}" in argv
    assert argv[-3:] == ("--", "/bin/bash", "--norc")
    env = shell_environment(argv, "alice", "web", SERVER_ENVIRONMENT)
    assert env["HOME"] == account.pw_dir and env["USER"] == account.pw_name
    assert env["LOGNAME"] == account.pw_name and env["SHELL"] == "/bin/bash"


def test_run_as_is_a_no_op_for_ourselves_and_needs_root_otherwise() -> None:
    me = pwd.getpwuid(os.geteuid())
    assert run_as(me.pw_name, ("bash",)) == ("bash",)
    account = _other_account()
    with pytest.raises(ConfigError, match="root"):
        run_as(account.pw_name, ("bash",), euid=account.pw_uid + 1)
    with pytest.raises(ConfigError, match="no such user"):
        run_as("no-such-user-here", ("bash",))


def test_run_as_drops_every_capability_the_server_holds() -> None:
    # A server given CAP_SETUID (the systemd unit) keeps it across a uid change unless told.
    argv = run_as(_other_account().pw_name, ("bash",), euid=0)
    assert "--inh-caps=-all" in argv and "--ambient-caps=-all" in argv
    assert argv.index("--ambient-caps=-all") < argv.index("--")


def test_shell_for_rewraps_the_configured_shell_for_the_owner_account() -> None:
    account = _other_account()
    assert shell_for(("bash", "-l"), None) == ("bash", "-l")
    argv = shell_for(("bash", "-l"), account.pw_name)
    assert argv[-3:] == ("--", "bash", "-l") and switched_uid(argv) == account.pw_uid
    # A --shell-user wrapping is replaced, not nested.
    again = shell_for(argv, account.pw_name)
    assert again == argv and again.count("--") == 1
    me = pwd.getpwuid(os.geteuid()).pw_name
    assert shell_for(argv, me) == ("bash", "-l") and switched_uid(("bash",)) is None
    with pytest.raises(ConfigError, match="account: no such user"):
        shell_for(("bash",), "no-such-user-here")


def test_only_root_or_ambient_setuid_and_setgid_may_switch_users() -> None:
    assert may_switch_user(0)
    ambient = Path("/proc/self/status").read_text().split("CapAmb:")[1].split()[0]
    expected = int(ambient, 16) & 0xC0 == 0xC0
    assert may_switch_user(12345) == expected


def test_a_shell_named_without_a_path_gets_its_path_in_shell(tmp_path: Path) -> None:
    program = tmp_path / "myshell"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    environ = {"PATH": f"/nonexistent:{tmp_path}"}
    assert shell_environment(("myshell", "-l"), "alice", "web", environ)["SHELL"] == str(program)
    # Not found on the PATH: the name as it was given (the spawn then says what is wrong).
    assert shell_environment(("nosuchshell",), "alice", "web", environ)["SHELL"] == "nosuchshell"
