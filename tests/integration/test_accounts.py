"""Shells as their owners' own Unix accounts (docs/security.md): the attacks of issue 12,
section 1, tried from inside a shell against a live server, and the settings that refuse to start.

Two unprivileged accounts are created for the module (``useradd``) and removed at its end, even
on failure. The server runs as root, as it would with per-owner accounts outside systemd.
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import jwt
import pytest

from tests.support.server import start_server
from tests.support.wsclient import Conn, must_connect, must_refuse, strip_ansi

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("useradd") is None or shutil.which("setpriv") is None,
        reason="needs root, useradd and setpriv",
    ),
]

CLOUD_SECRET = "cloud-secret-in-the-server-environment-0001"
JWT_SECRET = "jwt-signing-secret-for-account-tests-000001"


@dataclass(frozen=True)
class Accounts:
    alice: pwd.struct_passwd
    bob: pwd.struct_passwd


@pytest.fixture(scope="module")
def accounts() -> Iterator[Accounts]:
    suffix = secrets.token_hex(3)
    names = (f"tt-alice-{suffix}", f"tt-bob-{suffix}")
    created: list[str] = []
    try:
        for name in names:
            subprocess.run(
                ["useradd", "--create-home", "--shell", "/bin/bash", name],
                check=True,
                capture_output=True,
            )
            created.append(name)
        yield Accounts(pwd.getpwnam(names[0]), pwd.getpwnam(names[1]))
    finally:
        for name in created:
            subprocess.run(["pkill", "-KILL", "-u", name], capture_output=True)
            subprocess.run(["userdel", "--remove", name], capture_output=True)


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory every account may enter: a secret in it is kept by its own mode only."""
    path = Path(tempfile.mkdtemp(prefix="tether-accounts-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _tokens(directory: Path, entries: list[tuple[str, str, str | None]]) -> Path:
    lines = []
    for owner, token, account in entries:
        lines += ["[[tokens]]", f'owner = "{owner}"', f'token = "{token}"', 'projects = "*"']
        if account is not None:
            lines.append(f'account = "{account}"')
    path = directory / "tokens.toml"
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return path


async def _run(conn: Conn, command: str) -> str:
    """Run ``command`` in the shell; its output (with the command line echoed)."""
    marker = f"DONE-{secrets.token_hex(4)}"
    start = len(conn.output)
    await conn.send(f"{command}; echo {marker[:5]}''{marker[5:]}\r")
    await conn.read_until(marker)
    return strip_ansi(bytes(conn.output[start:]))


# ----------------------------------------------------------------------------- the attacks
async def test_owners_shells_run_as_their_accounts_and_cannot_reach_secrets_or_each_other(
    accounts: Accounts, open_dir: Path
) -> None:
    alice_token, bob_token = "alice-token-" + "a" * 20, "bob-token-" + "b" * 20
    tokens = _tokens(
        open_dir,
        [("alice", alice_token, accounts.alice.pw_name), ("bob", bob_token, accounts.bob.pw_name)],
    )
    env = {"TETHER_TEST_CLOUD_KEY": CLOUD_SECRET}
    args = ("--auth", "token", "--tokens-file", str(tokens))
    with start_server(*args, env=env, same_user_shells=False) as server:
        alice = await must_connect(server.ws_url, project="default", token=alice_token)
        bob = await must_connect(server.ws_url, project="default", token=bob_token)
        try:
            assert accounts.alice.pw_name in await _run(alice, "id -un")
            who = await _run(bob, 'echo "$(id -un) $HOME $USER $LOGNAME"')
            bob_home = accounts.bob.pw_dir
            assert f"{accounts.bob.pw_name} {bob_home} {accounts.bob.pw_name}" in who
            alice_pid = (await _run(alice, "echo PID=$$")).split("PID=")[-1].split()[0]
            found = re.search(r"/dev/pts/\d+", await _run(alice, "tty"))
            assert found is not None
            alice_tty = found.group()

            # 1. the server's environment (tokens, cloud keys) through /proc
            environ = await _run(bob, f"cat /proc/{server.pid}/environ")
            assert CLOUD_SECRET not in environ and "Permission denied" in environ
            # 2. the tokens file (bob could otherwise log in as alice)
            stolen = await _run(bob, f"cat {tokens}")
            assert alice_token not in stolen and "Permission denied" in stolen
            # 3. alice's terminal, through her shell's fd 0 and through the device itself
            via_proc = await _run(bob, f"echo PWNED-1 > /proc/{alice_pid}/fd/0")
            via_device = await _run(bob, f"echo PWNED-2 > {alice_tty}")
            assert "Permission denied" in via_proc and "Permission denied" in via_device
            owner = await _run(alice, f"stat -c OWNER=%U {alice_tty}")
            assert f"OWNER={accounts.alice.pw_name}" in owner
            assert "PWNED" not in strip_ansi(bytes(alice.output))
            # 4. no capability of the server's survives into a shell
            caps = await _run(bob, "grep -E '^Cap(Eff|Prm|Amb)' /proc/self/status")
            assert caps.count("0000000000000000") == 3, caps
        finally:
            await alice.close()
            await bob.close()


async def test_jwt_account_claim_and_user_map_name_the_account(
    accounts: Accounts, open_dir: Path
) -> None:
    secret_file = open_dir / "jwt.secret"
    secret_file.write_text(JWT_SECRET + "\n")
    secret_file.chmod(0o600)
    user_map = open_dir / "users.toml"
    user_map.write_text(f'bob = "{accounts.bob.pw_name}"\n')
    args = (
        "--auth", "jwt", "--jwt-secret-file", str(secret_file),
        "--jwt-account-claim", "account", "--user-map", str(user_map),
    )  # fmt: skip

    def token(sub: str, **claims: object) -> str:
        body = {"sub": sub, "projects": "*", "exp": int(time.time()) + 300, **claims}
        return jwt.encode(body, JWT_SECRET, algorithm="HS256")

    with start_server(*args, same_user_shells=False) as server:
        alice = await must_connect(
            server.ws_url, project="default", token=token("alice", account=accounts.alice.pw_name)
        )
        bob = await must_connect(server.ws_url, project="default", token=token("bob"))
        try:
            assert accounts.alice.pw_name in await _run(alice, "id -un")
            assert accounts.bob.pw_name in await _run(bob, "id -un")
        finally:
            await alice.close()
            await bob.close()
        # No account, root, or an account that does not exist: not let in.
        for refused in (
            token("carol"),
            token("carol", account="root"),
            token("carol", account="no-such-account-here"),
        ):
            assert (await must_refuse(server.ws_url, project="default", token=refused)).code == 4001


# ----------------------------------------------------------------------------- refusing to start
def _serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tether", "serve", "--log-file", "-", "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/tmp"},
        stdin=subprocess.DEVNULL,
    )


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_shared_accounts_are_refused_unless_allowed(accounts: Accounts, open_dir: Path) -> None:
    project = ("--project", f"p={open_dir}")
    no_account = _tokens(open_dir, [("alice", "a" * 20, None), ("bob", "b" * 20, None)])
    line = _one_line(_serve("--auth", "token", "--tokens-file", str(no_account), *project))
    assert "'alice' has no account" in line and "--allow-same-user-shells" in line
    shared = accounts.alice.pw_name
    one = _tokens(open_dir, [("alice", "a" * 20, shared), ("bob", "b" * 20, shared)])
    line = _one_line(_serve("--auth", "token", "--tokens-file", str(one), *project))
    assert "share account" in line
    server_account = _tokens(open_dir, [("alice", "a" * 20, "root")])
    line = _one_line(_serve("--auth", "token", "--tokens-file", str(server_account), *project))
    assert "root or the server's own account" in line
    line = _one_line(_serve("--auth", "jwt", "--jwt-secret-env", "X", *project))
    assert "--jwt-account-claim or --user-map" in line


def test_secret_files_readable_by_others_are_refused(open_dir: Path) -> None:
    project = ("--project", f"p={open_dir}")
    tokens = _tokens(open_dir, [("alice", "a" * 20, None)])
    tokens.chmod(0o640)
    args = ("--auth", "token", "--tokens-file", str(tokens), "--allow-same-user-shells")
    line = _one_line(_serve(*args, *project))
    assert str(tokens) in line and f"chmod 600 {tokens}" in line
    secret = open_dir / "jwt.secret"
    secret.write_text(JWT_SECRET)
    secret.chmod(0o604)
    args = ("--auth", "jwt", "--jwt-secret-file", str(secret), "--allow-same-user-shells")
    line = _one_line(_serve(*args, *project))
    assert f"chmod 600 {secret}" in line and JWT_SECRET not in line


# ----------------------------------------------------------------------------- non-dumpable
async def test_a_same_account_shell_cannot_read_the_server_environment(
    accounts: Accounts, open_dir: Path
) -> None:
    """The server as an unprivileged account with --allow-same-user-shells: its shells share its
    uid, and only PR_SET_DUMPABLE keeps /proc/<server>/environ from them (a root server could
    not show this: its shells are never of its uid)."""
    if not os.access(sys.executable, os.X_OK) or not _reachable_by(accounts.alice, sys.executable):
        pytest.skip("this interpreter is not usable by another account")
    home = Path(accounts.alice.pw_dir)
    token = "alice-token-" + "c" * 20
    tokens = _tokens(open_dir, [("alice", token, None)])
    os.chown(tokens, accounts.alice.pw_uid, accounts.alice.pw_gid)
    command = [
        "setpriv", f"--reuid={accounts.alice.pw_uid}", f"--regid={accounts.alice.pw_gid}",
        "--init-groups", "--",
        sys.executable, "-m", "tether", "serve", "--port", "0", "--log-file", "-",
        "--project", f"default={home}", "--shell", "bash --norc --noprofile",
        "--auth", "token", "--tokens-file", str(tokens), "--allow-same-user-shells",
        # the worker itself: a supervisor would exec this interpreter again as alice, and the
        # test venv's interpreter lives under root's home, closed to her
        "--no-supervise",
    ]  # fmt: skip
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "TETHER_TEST_CLOUD_KEY": CLOUD_SECRET,
        "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
    }
    process = subprocess.Popen(
        command, env=env, cwd=home, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        ws_url = _listening_url(process).replace("http://", "ws://") + "/ws/terminal"
        conn = await must_connect(ws_url, project="default", token=token)
        try:
            assert accounts.alice.pw_name in await _run(conn, "id -un")
            environ = await _run(conn, f"cat /proc/{process.pid}/environ")
        finally:
            await conn.close()
        assert CLOUD_SECRET not in environ and "Permission denied" in environ
    finally:
        process.terminate()
        process.wait(20)
        if process.stdout is not None:
            process.stdout.close()


def _reachable_by(account: pwd.struct_passwd, path: str) -> bool:
    probe = subprocess.run(
        ["setpriv", f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}", "--init-groups",
         "--", path, "-c", "import tether"],
        capture_output=True,
        env={"PYTHONPATH": os.pathsep.join(p for p in sys.path if p), "PATH": "/usr/bin:/bin"},
        timeout=30,
    )  # fmt: skip
    return probe.returncode == 0


def _listening_url(process: subprocess.Popen[bytes]) -> str:
    assert process.stdout is not None
    buffer = b""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.2)
        if not ready:
            continue
        chunk = os.read(process.stdout.fileno(), 65536)
        if not chunk:
            break
        buffer += chunk
        for line in buffer.decode(errors="replace").splitlines():
            if line.startswith("tether listening on "):
                return line.removeprefix("tether listening on ").strip()
    raise AssertionError(f"server did not start: {buffer.decode(errors='replace')[-1500:]}")
