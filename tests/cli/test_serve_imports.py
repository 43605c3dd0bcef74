"""What ``tether serve`` imports: what serving needs, and no more.

An upgrade in place pays for the server's imports twice (the check of the new code, then the
exec'd worker) while its clients wait, and a crash recovery once (docs/benchmarks.md, issue 13),
so a heavy package that only some settings or other commands use is imported where it is used.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tether.cli import main
from tether.cli._group import COMMAND_MODULES

# Imported only by the settings that need them (--auth jwt, --redis-url) or by other commands;
# pydantic by none (the settings are a dataclass checked by tether.server.fieldtable).
NOT_FOR_SERVE = ("jwt", "cryptography", "redis", "rich", "psutil", "tether.client", "tether.tools")
NOT_FOR_SERVE += ("pydantic",)


def _serve_check(tmp_path: Path, *flags: str) -> set[str]:
    """Run ``tether serve`` as an upgrade's check (it builds the app, says so and exits at
    once); the modules it imported, by ``-X importtime``."""
    env = dict(os.environ, TETHER_UPGRADE_CHECK="1", HOME=str(tmp_path))
    env.pop("NOTIFY_SOCKET", None)
    args = ["serve", "--port", "0", "--log-file", "-", "--project", f"default={tmp_path}", *flags]
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "tether", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout) == (0, "tether: upgrade check ok\n"), done.stderr
    lines = [line.split("|")[-1].strip() for line in done.stderr.splitlines()]
    return {line for line in lines if line and line != "imported package"}


def _heavy(modules: set[str]) -> list[str]:
    return [p for p in NOT_FOR_SERVE if any(m == p or m.startswith(p + ".") for m in modules)]


def test_serve_imports_no_client_tool_jwt_redis_or_rich(tmp_path: Path) -> None:
    modules = _serve_check(tmp_path, "--auth", "none")
    assert "tether.server.aiohttp_front.app" in modules  # the whole server, as the worker
    assert _heavy(modules) == []


def test_jwt_settings_import_what_they_use(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s" * 40)
    secret.chmod(0o600)
    flags = ("--auth", "jwt", "--jwt-secret-file", str(secret), "--allow-same-user-shells")
    # a missing PyJWT fails the check, not the first login
    assert "jwt" in _heavy(_serve_check(tmp_path, *flags))


def test_every_command_is_listed_and_runs(capsys: pytest.CaptureFixture[str]) -> None:
    # Commands are imported when looked up: --help still lists every one of them.
    assert main(["--help"]) == 0
    listed = capsys.readouterr().out
    for name in COMMAND_MODULES:
        assert f"  {name} " in listed
    assert main(["sessions", "--help"]) == 0
    assert "kill" in capsys.readouterr().out


def test_an_unknown_command_is_one_error_and_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["nonesuch"]) == 2
    assert "No such command 'nonesuch'" in capsys.readouterr().err
