"""tether.server.auth: credentials, tokens, JWTs (HS256/RS256), the security settings rules."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tether.errors import ConfigError
from tether.server import auth
from tether.server.config import build_settings
from tether.server.identity import ANONYMOUS, Identity

SECRET = "s" * 40
ALICE = "alice-token-0123456789"
BOB = "bob-token-9876543210ab"


def _hs256(claims: dict[str, object], secret: str = SECRET, **headers: object) -> str:
    return jwt.encode(claims, secret, algorithm="HS256", headers=headers or None)


def _claims(**extra: object) -> dict[str, object]:
    return {"sub": "alice", "projects": ["web"], "exp": int(time.time()) + 300, **extra}


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


# ----------------------------------------------------------------------------- credentials
@pytest.mark.parametrize(
    ("headers", "cookies", "query", "expected"),
    [
        ({"Authorization": "Bearer abc"}, {}, {}, "abc"),
        ({"Authorization": "bearer   abc  "}, {}, {}, "abc"),
        ({"Authorization": "Basic abc"}, {"tether_token": "c"}, {}, "c"),
        ({"Authorization": "Bearer "}, {}, {"token": "q"}, "q"),
        ({}, {"tether_token": "c"}, {"token": "q"}, "c"),
        ({"Authorization": "Bearer h"}, {"tether_token": "c"}, {"token": "q"}, "h"),
        ({}, {}, {"token": ""}, None),
        ({}, {}, {}, None),
    ],
)
def test_credential_sources_in_order(headers, cookies, query, expected) -> None:
    assert auth.credential_from(headers, cookies, query) == expected


def test_no_auth_is_the_anonymous_operator() -> None:
    authenticator = auth.NoAuth()
    assert not authenticator.enabled
    assert authenticator.authenticate(None) is ANONYMOUS
    assert authenticator.authenticate("anything") is ANONYMOUS
    assert ANONYMOUS.operator and ANONYMOUS.may_use("any-project")


@pytest.mark.parametrize("owner", ["alice", "alice@example.com", "auth0|123", "Ünïcode name"])
def test_valid_owners(owner: str) -> None:
    assert auth.is_valid_owner(owner)


@pytest.mark.parametrize("owner", ["", "anonymous", "a\nb", "x" * 257, "tab\there", "\x7f"])
def test_invalid_owners(owner: str) -> None:
    assert not auth.is_valid_owner(owner)


# ----------------------------------------------------------------------------- tokens
def _tokens_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "tokens.toml"
    path.write_text(body, encoding="utf-8")
    return path


TOKENS = f"""
[[tokens]]
owner = "alice"
token = "{ALICE}"
projects = ["web"]

[[tokens]]
owner = "root-ops"
token_env = "OPS_TOKEN"
projects = "*"
operator = true

[[tokens]]
owner = "carol"
sha256 = "{hashlib.sha256(b"carol-token-0123456789").hexdigest()}"
"""


def test_token_file_maps_tokens_to_identities(tmp_path: Path) -> None:
    path = _tokens_file(tmp_path, TOKENS)
    entries = auth.load_tokens(path, frozenset({"web", "api"}), {"OPS_TOKEN": "ops-" + "x" * 20})
    tokens = auth.TokenAuth(entries)
    assert tokens.enabled
    assert tokens.authenticate(ALICE) == Identity("alice", frozenset({"web"}), False)
    assert tokens.authenticate("ops-" + "x" * 20) == Identity("root-ops", None, True)
    assert tokens.authenticate("carol-token-0123456789") == Identity("carol", frozenset(), False)
    for wrong in (None, "", ALICE[:-1], ALICE + "x", ALICE.upper(), "x" * 10_000):
        assert tokens.authenticate(wrong) is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("", "no [[tokens]]"),
        ("tokens = 3", "no [[tokens]]"),
        ("[[tokens]\n", "not valid TOML"),
        ('[[tokens]]\nowner = "a"\n', "exactly one of"),
        (f'[[tokens]]\nowner = "a"\ntoken = "{ALICE}"\nsha256 = "00"\n', "exactly one of"),
        ('[[tokens]]\nowner = "a"\ntoken = "short"\n', "16+"),
        ('[[tokens]]\nowner = "a"\ntoken = " padded-token-0123456 "\n', "no spaces"),
        ('[[tokens]]\nowner = "a"\nsha256 = "zz"\n', "64 hex"),
        ('[[tokens]]\nowner = "a"\ntoken_env = "UNSET_VARIABLE_X"\n', "not set"),
        (f'[[tokens]]\nowner = "anonymous"\ntoken = "{ALICE}"\n', "owner"),
        (f'[[tokens]]\ntoken = "{ALICE}"\n', "owner"),
        (f'[[tokens]]\nowner = "a"\ntoken = "{ALICE}"\noperator = "yes"\n', "operator"),
        (f'[[tokens]]\nowner = "a"\ntoken = "{ALICE}"\nprojects = "web"\n', "projects"),
        (f'[[tokens]]\nowner = "a"\ntoken = "{ALICE}"\nprojects = ["nope"]\n', "unknown project"),
        (f'[[tokens]]\nowner = "a"\ntoken = "{ALICE}"\nrole = "x"\n', "unknown key"),
        (
            f'[[tokens]]\nowner = "a"\ntoken = "{ALICE}"\n'
            f'[[tokens]]\nowner = "b"\ntoken = "{ALICE}"',
            "twice",
        ),
    ],
)
def test_bad_token_files_name_the_problem(tmp_path: Path, body: str, message: str) -> None:
    path = _tokens_file(tmp_path, body)
    with pytest.raises(ConfigError) as caught:
        auth.load_tokens(path, frozenset({"web"}), {})
    assert caught.value.setting == "tokens-file" and message in str(caught.value)
    assert ALICE not in str(caught.value), "a token is never echoed"


def test_missing_tokens_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        auth.load_tokens(tmp_path / "absent.toml", frozenset(), {})


# ----------------------------------------------------------------------------- jwt
def test_hs256_valid_token() -> None:
    verifier = auth.JwtAuth(SECRET.encode(), "HS256")
    assert verifier.authenticate(_hs256(_claims())) == Identity("alice", frozenset({"web"}), False)
    operator = verifier.authenticate(_hs256(_claims(projects="*", tether_operator=True)))
    assert operator == Identity("alice", None, True)


@pytest.mark.parametrize(
    "claims",
    [
        _claims(exp=int(time.time()) - 120),  # expired beyond the leeway
        {"sub": "alice", "projects": ["web"]},  # no exp
        {"projects": ["web"], "exp": int(time.time()) + 60},  # no sub
        _claims(sub=""),
        _claims(sub="anonymous"),
        _claims(sub=42),
        _claims(projects="web"),
        _claims(projects=["bad/id"]),
        _claims(projects=[1]),
        _claims(nbf=int(time.time()) + 600),  # not yet valid
        _claims(aud="someone-else"),  # an audience when none is expected
    ],
)
def test_hs256_invalid_claims_are_refused(claims: dict[str, object]) -> None:
    assert auth.JwtAuth(SECRET.encode(), "HS256").authenticate(_hs256(claims)) is None


def test_operator_claim_must_be_true_itself() -> None:
    verifier = auth.JwtAuth(SECRET.encode(), "HS256")
    for value in ("true", 1, "yes", [True]):
        identity = verifier.authenticate(_hs256(_claims(tether_operator=value)))
        assert identity is not None and not identity.operator


def test_missing_projects_claim_grants_no_project() -> None:
    claims = _claims()
    del claims["projects"]
    identity = auth.JwtAuth(SECRET.encode(), "HS256").authenticate(_hs256(claims))
    assert identity is not None and identity.projects == frozenset()


def test_leeway_tolerates_clock_skew() -> None:
    token = _hs256(_claims(exp=int(time.time()) - 10))
    assert auth.JwtAuth(SECRET.encode(), "HS256", leeway=30).authenticate(token) is not None
    assert auth.JwtAuth(SECRET.encode(), "HS256", leeway=0).authenticate(token) is None


def test_audience() -> None:
    verifier = auth.JwtAuth(SECRET.encode(), "HS256", audience="tether")
    assert verifier.authenticate(_hs256(_claims(aud="tether"))) is not None
    assert verifier.authenticate(_hs256(_claims(aud=["other", "tether"]))) is not None
    assert verifier.authenticate(_hs256(_claims(aud="other"))) is None
    assert verifier.authenticate(_hs256(_claims())) is None


def test_wrong_secret_alg_none_and_garbage_are_refused() -> None:
    verifier = auth.JwtAuth(SECRET.encode(), "HS256")
    assert verifier.authenticate(_hs256(_claims(), secret="t" * 40)) is None
    unsigned = jwt.encode(_claims(), None, algorithm="none")
    assert verifier.authenticate(unsigned) is None
    for garbage in ("", "a.b.c", "not a token", "x" * 9000, "\x00\udcff"):
        assert verifier.authenticate(garbage) is None


def test_rs256(rsa_key: rsa.RSAPrivateKey) -> None:
    public = serialization.load_pem_public_key(_public_pem(rsa_key))
    verifier = auth.JwtAuth(public, "RS256")
    token = jwt.encode(_claims(), rsa_key, algorithm="RS256")
    assert verifier.authenticate(token) == Identity("alice", frozenset({"web"}), False)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert verifier.authenticate(jwt.encode(_claims(), other, algorithm="RS256")) is None
    # Algorithm confusion: an HS256 token "signed" with the public key bytes must not pass.
    assert verifier.authenticate(_hmac_signed(_claims(), _public_pem(rsa_key))) is None


def _hmac_signed(claims: dict[str, object], key: bytes) -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    signature = hmac.new(key, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{b64(signature)}"


# ----------------------------------------------------------------------------- settings
def _settings(tmp_path: Path, **raw: object):
    (tmp_path / "web").mkdir(exist_ok=True)
    # Owners here share the test's account (tests/integration/test_accounts.py maps them).
    layer = {
        "projects": [f"web={tmp_path / 'web'}"],
        "log_file": "-",
        "allow_same_user_shells": True,
        **raw,
    }
    return build_settings(layer, cwd=tmp_path)


def test_from_settings_builds_each_mode(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    assert isinstance(auth.from_settings(_settings(tmp_path, auth="none")), auth.NoAuth)
    tokens = _tokens_file(tmp_path, f'[[tokens]]\nowner = "a"\ntoken = "{ALICE}"\n')
    built = auth.from_settings(_settings(tmp_path, auth="token", tokens_file=str(tokens)), {})
    assert isinstance(built, auth.TokenAuth) and built.authenticate(ALICE) is not None
    hs = _settings(tmp_path, auth="jwt", jwt_secret_env="MY_SECRET", jwt_audience="t")
    verifier = auth.from_settings(hs, {"MY_SECRET": SECRET})
    assert verifier.authenticate(_hs256(_claims(aud="t"))) is not None
    pem = tmp_path / "key.pem"
    pem.write_bytes(_public_pem(rsa_key))
    rs = auth.from_settings(_settings(tmp_path, auth="jwt", jwt_public_key="key.pem"), {})
    assert rs.authenticate(jwt.encode(_claims(), rsa_key, algorithm="RS256")) is not None
    assert rs.authenticate(_hs256(_claims())) is None


def test_from_settings_refuses_weak_or_missing_keys(tmp_path: Path) -> None:
    hs = _settings(tmp_path, auth="jwt", jwt_secret_env="MY_SECRET")
    with pytest.raises(ConfigError, match="not set"):
        auth.from_settings(hs, {})
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        auth.from_settings(hs, {"MY_SECRET": "short"})
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    ecdsa = ec.generate_private_key(ec.SECP256R1())
    for name, content, message in (
        ("small.pem", _public_pem(small), "2048"),
        ("ec.pem", _public_pem(ecdsa), "not an RSA"),
        ("junk.pem", b"junk", "not a PEM"),
    ):
        (tmp_path / name).write_bytes(content)
        settings = _settings(tmp_path, auth="jwt", jwt_public_key=name)
        with pytest.raises(ConfigError, match=message):
            auth.from_settings(settings, {})
    with pytest.raises(ConfigError, match="cannot read"):
        auth.from_settings(_settings(tmp_path, auth="jwt", jwt_public_key="absent.pem"), {})


@pytest.mark.parametrize(
    ("raw", "setting", "message"),
    [
        ({"host": "0.0.0.0"}, "auth", "without authentication"),
        ({"host": "::"}, "auth", "without authentication"),
        ({"host": "192.0.2.1"}, "auth", "without authentication"),
        ({"host": "example.com"}, "auth", "without authentication"),
        ({"host": "0.0.0.0", "auth": "none", "insecure_no_auth": True}, "allowed-host", "needs"),
        ({"auth": "token"}, "tokens-file", "required"),
        ({"auth": "jwt"}, "auth", "one of"),
        ({"auth": "jwt", "jwt_secret_env": "A", "jwt_public_key": "k.pem"}, "auth", "one of"),
        ({"auth": "basic"}, "auth", ""),
        ({"keyfile": "k.pem"}, "keyfile", "certfile"),
        ({"allowed_hosts": ["bad host"]}, "allowed-host", "not a host"),
        ({"allowed_origins": ["example.com"]}, "allowed-origin", "scheme://"),
        ({"allowed_origins": ["http://a.example/path"]}, "allowed-origin", "scheme://"),
        ({"trusted_proxies": ["not-an-ip"]}, "trusted-proxy", ""),
        ({"max_sessions_per_owner": 0}, "max-sessions-per-owner", ""),
        ({"jwt_leeway": -1}, "jwt-leeway", ""),
        ({"shell_user": "no-such-user-here"}, "shell-user", "no such user"),
    ],
)
def test_security_settings_rules(tmp_path: Path, raw: dict, setting: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _settings(tmp_path, **raw)
    assert caught.value.setting == setting and message in caught.value.message


@pytest.mark.parametrize(
    "raw",
    [
        {"host": "127.0.0.1"},
        {"host": "127.1.2.3"},
        {"host": "::1"},
        {"host": "localhost"},
        {"host": "0.0.0.0", "insecure_no_auth": True},
        {"host": "0.0.0.0", "auth": "none", "insecure_no_auth": True, "allowed_hosts": ["t.test"]},
        {"host": "0.0.0.0", "auth": "jwt", "jwt_secret_env": "X"},
        {"allowed_hosts": ["tether.example.com", ".example.org", "10.0.0.5"]},
        {"allowed_origins": ["https://tether.example.com", "http://localhost:3000"]},
        {"trusted_proxies": ["10.0.0.0/8", "::1", "127.0.0.1"]},
    ],
)
def test_security_settings_accepted(tmp_path: Path, raw: dict) -> None:
    _settings(tmp_path, **raw)


def test_security_settings_from_environment(tmp_path: Path) -> None:
    from tether.server.config import from_environment

    env = {
        "TETHER_AUTH": "jwt",
        "TETHER_JWT_SECRET_ENV": "SIGNING_KEY",
        "TETHER_JWT_AUDIENCE": "tether",
        "TETHER_MAX_SESSIONS_PER_OWNER": "7",
        "TETHER_ALLOWED_HOST": "a.example,b.example",
        "TETHER_METRICS_AUTH": "false",
        "TETHER_JWT_SECRET": "not-a-setting: secrets named by settings are skipped",
    }
    settings = _settings(tmp_path, **from_environment(env))
    assert settings.auth == "jwt" and settings.jwt_secret_env == "SIGNING_KEY"
    assert settings.max_sessions_per_owner == 7 and not settings.metrics_auth
    assert settings.allowed_hosts == ("a.example", "b.example")


# ----------------------------------------------------------------------------- jwt (issue 12)
def test_jwt_issuer_is_checked_when_configured() -> None:
    verifier = auth.JwtAuth(SECRET.encode(), "HS256", issuer="https://idp.example")
    assert verifier.authenticate(_hs256(_claims(iss="https://idp.example"))) is not None
    for claims in (_claims(iss="https://evil.example"), _claims()):
        assert verifier.authenticate(_hs256(claims)) is None


@pytest.mark.parametrize(
    "exp",
    [
        int(time.time()) + 10 * 365 * 86400,  # ten years: a token that never expires
        int(time.time()) + 86400 + 600,  # just past the lifetime cap (and the leeway)
        str(int(time.time()) + 60),  # not a number
        True,
        float("nan"),
    ],
)
def test_jwt_lifetime_is_capped_and_exp_must_be_a_number(exp: object) -> None:
    verifier = auth.JwtAuth(SECRET.encode(), "HS256", max_lifetime=86400)
    claims = _claims()
    claims["exp"] = exp
    token = jwt.encode(claims, SECRET, algorithm="HS256") if exp == exp else _raw_nan_exp()
    assert verifier.authenticate(token) is None
    assert verifier.authenticate(_hs256(_claims(exp=int(time.time()) + 3600))) is not None


def _raw_nan_exp() -> str:
    header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")
    body = base64.urlsafe_b64encode(b'{"sub":"alice","projects":["web"],"exp":NaN}').rstrip(b"=")
    signing = header + b"." + body
    signature = base64.urlsafe_b64encode(
        hmac.new(SECRET.encode(), signing, hashlib.sha256).digest()
    ).rstrip(b"=")
    return (signing + b"." + signature).decode()


def test_jwt_deny_list_refuses_listed_token_ids(tmp_path: Path) -> None:
    deny = tmp_path / "denied.txt"
    deny.write_text("# revoked\nleaked-1\n\n  leaked-2  \n", encoding="utf-8")
    verifier = auth.JwtAuth(SECRET.encode(), "HS256", denied_ids=auth.load_deny_list(deny))
    for jti in ("leaked-1", "leaked-2"):
        assert verifier.authenticate(_hs256(_claims(jti=jti))) is None
    assert verifier.authenticate(_hs256(_claims(jti="fine"))) is not None
    assert verifier.authenticate(_hs256(_claims())) is not None
    with pytest.raises(ConfigError, match="cannot read"):
        auth.load_deny_list(tmp_path / "absent.txt")


def test_jwt_settings_reach_the_verifier(tmp_path: Path) -> None:
    deny = tmp_path / "denied.txt"
    deny.write_text("leaked-1\n", encoding="utf-8")
    settings = _settings(
        tmp_path,
        auth="jwt",
        jwt_secret_env="S",
        jwt_issuer="idp",
        jwt_max_lifetime=600,
        jwt_deny_list=str(deny),
    )
    verifier = auth.from_settings(settings, {"S": SECRET})
    soon = int(time.time()) + 300
    assert verifier.authenticate(_hs256(_claims(iss="idp", exp=soon))) is not None
    assert verifier.authenticate(_hs256(_claims(iss="idp", exp=soon + 3600))) is None
    assert verifier.authenticate(_hs256(_claims(iss="idp", exp=soon, jti="leaked-1"))) is None
    assert verifier.authenticate(_hs256(_claims(exp=soon))) is None
