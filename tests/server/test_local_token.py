"""``--auth local``, the default: where its token lives (server and client agree), how it is
stored and reused, what is refused, and who presenting it makes you."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from tether.client.credentials import stored_token
from tether.errors import ConfigError
from tether.protocol.localtoken import link, token_directory, token_file
from tether.server import auth, localtoken
from tether.server.config import build_settings
from tether.server.identity import ANONYMOUS


@pytest.fixture
def environ(tmp_path: Path) -> dict[str, str]:
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    return {"XDG_RUNTIME_DIR": str(runtime), "HOME": str(tmp_path / "home")}


# ----------------------------------------------------------------------------- where
def test_the_runtime_directory_else_the_state_directory() -> None:
    assert token_directory({"XDG_RUNTIME_DIR": "/run/user/1000"}, "/home/a") == Path(
        "/run/user/1000/tether"
    )
    for unusable in ({}, {"XDG_RUNTIME_DIR": ""}, {"XDG_RUNTIME_DIR": "relative/dir"}):
        assert token_directory(unusable, "/home/a") == Path("/home/a/.local/state/tether")
    assert token_file(4001, {}, "/home/a").name == "token-4001"


def test_the_link_carries_the_token_in_the_fragment() -> None:
    assert link("http://127.0.0.1:4001", "abc") == "http://127.0.0.1:4001/#token=abc"
    assert link("http://127.0.0.1:4001/", "abc") == "http://127.0.0.1:4001/#token=abc"


# ----------------------------------------------------------------------------- stored, reused
def test_a_token_is_generated_once_stored_private_and_reused(environ: dict[str, str]) -> None:
    token = localtoken.obtain(4001, environ)
    path = localtoken.path_for(4001, environ)
    assert path == Path(environ["XDG_RUNTIME_DIR"]) / "tether" / "token-4001"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert len(token) >= 32 and path.read_text().strip() == token
    assert localtoken.obtain(4001, environ) == token  # a restart: the same token
    assert localtoken.obtain(4002, environ) != token  # another port: its own


def test_without_a_runtime_directory_the_state_directory_is_used(tmp_path: Path) -> None:
    environ = {"HOME": str(tmp_path)}
    localtoken.obtain(4001, environ)
    assert (tmp_path / ".local" / "state" / "tether" / "token-4001").is_file()


def test_port_zero_is_stored_once_bound(environ: dict[str, str]) -> None:
    token = localtoken.obtain(0, environ)
    assert not (Path(environ["XDG_RUNTIME_DIR"]) / "tether").exists()
    path = localtoken.publish(41234, token, environ)
    assert path.read_text().strip() == token and stat.S_IMODE(path.stat().st_mode) == 0o600
    before = path.stat().st_mtime_ns
    localtoken.publish(41234, token, environ)  # already there: not rewritten
    assert path.stat().st_mtime_ns == before


def test_a_token_file_others_may_read_is_refused(environ: dict[str, str]) -> None:
    localtoken.obtain(4001, environ)
    path = localtoken.path_for(4001, environ)
    path.chmod(0o644)
    with pytest.raises(ConfigError, match=f"chmod 600 {path}"):
        localtoken.obtain(4001, environ)


def test_a_directory_others_may_write_is_refused(environ: dict[str, str]) -> None:
    directory = Path(environ["XDG_RUNTIME_DIR"]) / "tether"
    directory.mkdir(mode=0o700)
    directory.chmod(0o777)
    with pytest.raises(ConfigError, match="writable by others"):
        localtoken.obtain(4001, environ)


def test_a_damaged_token_file_is_replaced(environ: dict[str, str]) -> None:
    path = localtoken.path_for(4001, environ)
    path.parent.mkdir(mode=0o700)
    path.write_text("not a token\n")
    path.chmod(0o600)
    token = localtoken.obtain(4001, environ)
    assert token != "not a token" and path.read_text().strip() == token


# ----------------------------------------------------------------------------- who it makes you
def test_local_auth_makes_the_anonymous_operator_of_its_token_only() -> None:
    local = auth.LocalAuth("t" * 43)
    assert local.authenticate("t" * 43) == ANONYMOUS and ANONYMOUS.operator
    for refused in (None, "", "t" * 42, "x" * 43, "t" * 10_000):
        assert local.authenticate(refused) is None
    assert not local.enabled  # one owner: no limits per owner, as with none


def test_local_is_the_default_and_is_refused_on_a_network_bind(
    tmp_path: Path, environ: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    settings = build_settings({"log_file": "-"}, cwd=tmp_path)
    assert settings.auth == "local"
    built = auth.from_settings(settings)
    assert isinstance(built, auth.LocalAuth)
    assert built.token == localtoken.path_for(settings.port).read_text().strip()
    with pytest.raises(ConfigError, match="--insecure-no-auth"):
        build_settings({"log_file": "-", "host": "0.0.0.0"}, cwd=tmp_path)


# ----------------------------------------------------------------------------- the commands
def test_commands_find_the_token_for_loopback_urls_only(environ: dict[str, str]) -> None:
    token = localtoken.obtain(4001, environ)
    for url in (
        "http://127.0.0.1:4001",
        "ws://localhost:4001/ws/terminal",
        "http://[::1]:4001/",
        "127.0.0.1:4001",
    ):
        assert stored_token(url, environ) == token, url
    for url in ("http://example.com:4001", "http://192.0.2.1:4001", "http://127.0.0.1:4002"):
        assert stored_token(url, environ) is None, url
    assert stored_token("http://[bad", environ) is None
