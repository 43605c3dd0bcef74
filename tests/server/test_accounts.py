"""tether.server.accounts: which Unix account an owner's shells run as, and what is refused.

Existing system accounts (``daemon``, ``bin``) stand in for people here; nothing is spawned
(tests/integration/test_accounts.py runs real shells as accounts created for the test).
"""

from __future__ import annotations

import pwd
import time
from pathlib import Path

import jwt
import pytest

from tether.errors import ConfigError
from tether.server import auth
from tether.server.accounts import AccountPolicy, load_user_map
from tether.server.config import build_settings
from tether.server.identity import Identity

SERVER_UID = 0
SECRET = "jwt-signing-secret-for-account-units-0001"


@pytest.fixture(autouse=True)
def _system_accounts() -> None:
    for name in ("daemon", "bin"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            pytest.skip(f"no {name!r} account here")


def test_the_account_comes_from_the_token_or_claim_else_the_map() -> None:
    policy = AccountPolicy({"alice": "daemon"}, required=True, server_uid=SERVER_UID)
    alice = Identity(owner="alice")
    assert policy.assign(alice) == Identity(owner="alice", account="daemon")
    assert policy.assign(alice, "bin") == Identity(owner="alice", account="bin")
    assert policy.assign(Identity(owner="carol")) is None  # required, and none


def test_root_the_server_s_own_and_unknown_accounts_are_not_usable() -> None:
    daemon_uid = pwd.getpwnam("daemon").pw_uid
    policy = AccountPolicy({}, required=False, server_uid=daemon_uid)
    for account in ("root", "daemon", "no-such-account-here", "nul\0name"):
        assert not policy.is_usable(account), account
        assert policy.assign(Identity(owner="a"), account) is None
    assert policy.assign(Identity(owner="a")) == Identity(owner="a")  # not required: server's


def test_owners_sharing_an_account_or_without_one_are_refused_at_start() -> None:
    policy = AccountPolicy({}, required=True, server_uid=SERVER_UID)
    policy.check_owners([("alice", "daemon"), ("alice", "daemon"), ("bob", "bin")], "t")
    with pytest.raises(ConfigError, match="'alice' and 'bob' share account 'daemon'"):
        policy.check_owners([("alice", "daemon"), ("bob", "daemon")], "t")
    with pytest.raises(ConfigError, match="'carol' has no account"):
        policy.check_owners([("carol", None)], "t")
    with pytest.raises(ConfigError, match="root or the server's own"):
        policy.check_owners([("alice", "root")], "t")
    # --allow-same-user-shells: an owner without an account uses the server's.
    AccountPolicy({}, required=False, server_uid=SERVER_UID).check_owners([("c", None)], "t")


def test_user_map_file(tmp_path: Path) -> None:
    path = tmp_path / "users.toml"
    path.write_text('alice = "daemon"\n"bob smith" = "bin"\n')
    assert load_user_map(path) == {"alice": "daemon", "bob smith": "bin"}
    for body in ("alice = 3\n", 'alice = ""\n', "[alice]\nx = 1\n", "alice = = 1"):
        path.write_text(body)
        with pytest.raises(ConfigError, match="user-map"):
            load_user_map(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_user_map(tmp_path / "absent.toml")


def _settings(tmp_path: Path, **raw: object):
    return build_settings({"projects": [f"web={tmp_path}"], "log_file": "-", **raw}, cwd=tmp_path)


def test_tokens_file_accounts_reach_the_identity(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(
        '[[tokens]]\nowner = "alice"\ntoken = "alice-token-0000000001"\naccount = "daemon"\n'
        '[[tokens]]\nowner = "bob"\ntoken = "bob-token-00000000000002"\n'
    )
    tokens.chmod(0o600)
    users = tmp_path / "users.toml"
    users.write_text('bob = "bin"\n')
    settings = _settings(tmp_path, auth="token", tokens_file=str(tokens), user_map=str(users))
    built = auth.from_settings(settings, {})
    alice = built.authenticate("alice-token-0000000001")
    bob = built.authenticate("bob-token-00000000000002")
    assert alice is not None and alice.account == "daemon"
    assert bob is not None and bob.account == "bin"
    tokens.write_text('[[tokens]]\nowner = "a"\ntoken = "a-token-0000000000001"\naccount = 3\n')
    with pytest.raises(ConfigError, match="account must be a user name"):
        auth.from_settings(_settings(tmp_path, auth="token", tokens_file=str(tokens)), {})


def test_jwt_account_claim(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text(SECRET + "\n")
    secret.chmod(0o600)
    raw = {"auth": "jwt", "jwt_secret_file": str(secret), "jwt_account_claim": "unix"}
    verifier = auth.from_settings(_settings(tmp_path, **raw), {})

    def token(**claims: object) -> str:
        body = {"sub": "alice", "projects": "*", "exp": int(time.time()) + 300, **claims}
        return jwt.encode(body, SECRET, algorithm="HS256")

    identity = verifier.authenticate(token(unix="daemon"))
    assert identity is not None and identity.account == "daemon"
    for bad in ({}, {"unix": "root"}, {"unix": 7}, {"unix": ""}, {"unix": "no-such-user-x"}):
        assert verifier.authenticate(token(**bad)) is None, bad


def test_jwt_secret_file_rules(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("short\n")
    secret.chmod(0o600)
    raw = {"auth": "jwt", "jwt_secret_file": str(secret), "allow_same_user_shells": True}
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        auth.from_settings(_settings(tmp_path, **raw), {})
    secret.write_text(SECRET)
    secret.chmod(0o644)
    with pytest.raises(ConfigError, match=f"chmod 600 {secret}"):
        auth.from_settings(_settings(tmp_path, **raw), {})
    both = {**raw, "jwt_secret_env": "X"}
    with pytest.raises(ConfigError, match="one of"):
        _settings(tmp_path, **both)
