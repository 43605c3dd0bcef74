"""Authentication: who presents a request, in one of four modes.

* ``local`` (the default) — one generated token, kept per port in a file only the server's
  account can read (:mod:`tether.server.localtoken`); who presents it is the ``anonymous``
  operator, as with ``none``;
* ``none`` — nobody is asked anything; everyone is the local ``anonymous`` owner, an operator
  (single-user mode, allowed only on a loopback bind unless explicitly overridden);
* ``token`` — static bearer tokens from a TOML file, each mapped to an owner, its projects and
  an operator flag and the owner's Unix account; the token itself may live in the file, in an
  environment variable named by the file, or only as its SHA-256;
* ``jwt`` — HS256 (secret from a file or an environment variable) or RS256 (PEM public key) with
  ``sub``, ``projects``, ``exp`` and an optional ``aud``, verified by PyJWT with a clock-skew
  leeway; a ``tether_operator: true`` claim grants the operator role.

The credential is the first of ``Authorization: Bearer …``, cookie ``tether_token``, query
parameter ``token`` that is present. An authenticator answers an :class:`Identity`, or None for a
missing or invalid credential (the caller answers 4001 / HTTP 401). It never says why a
credential failed and never keeps or logs one. Apart from loading its files and keys once at
start (``from_settings``), this module is pure: no sockets, no web framework, no clock of its own
(PyJWT reads the wall clock to check ``exp``).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import re
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from tether.errors import ConfigError
from tether.protocol.ids import is_valid_project_id
from tether.server import localtoken
from tether.server.accounts import AccountPolicy, policy_from_settings
from tether.server.files import check_private
from tether.server.identity import ANONYMOUS, Identity

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import rsa

    from tether.server.config import Settings

COOKIE_NAME = "tether_token"
QUERY_PARAMETER = "token"
OPERATOR_CLAIM = "tether_operator"
# A credential longer than this is refused unread: no work is spent on a hostile blob.
MAX_CREDENTIAL_LENGTH = 8192
MIN_TOKEN_LENGTH = 16
MIN_HMAC_SECRET_BYTES = 32  # RFC 7518 3.2: at least the size of the hash output
MIN_RSA_BITS = 2048
# Owners name people and services in logs and stats: printable, no control characters.
_OWNER_RE = re.compile(r"[^\x00-\x1f\x7f]{1,256}")
_RESERVED_OWNERS = frozenset({ANONYMOUS.owner})
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


class Authenticator(Protocol):
    """Maps a presented credential (or None) to an identity (or None: refused)."""

    @property
    def enabled(self) -> bool:
        """True when credentials are checked (limits per owner apply only then)."""
        ...

    def authenticate(self, credential: str | None) -> Identity | None: ...


def credential_from(
    headers: Mapping[str, str], cookies: Mapping[str, str], query: Mapping[str, str]
) -> str | None:
    """The credential a request presents: Bearer header, else cookie, else ``token`` parameter."""
    scheme, _, value = headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return cookies.get(COOKIE_NAME) or query.get(QUERY_PARAMETER) or None


def is_valid_owner(owner: str) -> bool:
    """Owners are 1-256 printable characters; ``anonymous`` is kept for auth ``none``."""
    return _OWNER_RE.fullmatch(owner) is not None and owner not in _RESERVED_OWNERS


# ----------------------------------------------------------------------------- none
class NoAuth:
    """Authentication off: everyone is the local anonymous operator."""

    enabled = False

    def authenticate(self, credential: str | None) -> Identity | None:
        return ANONYMOUS


# ----------------------------------------------------------------------------- local
class LocalAuth:
    """One generated token; who presents it is the local anonymous operator, as with ``none``."""

    enabled = False  # one owner: the limits per owner do not apply, as with none

    def __init__(self, token: str) -> None:
        self.token = token
        self._digest = _digest(token)

    def authenticate(self, credential: str | None) -> Identity | None:
        if not credential or len(credential) > MAX_CREDENTIAL_LENGTH:
            return None
        return ANONYMOUS if hmac.compare_digest(_digest(credential), self._digest) else None


# ----------------------------------------------------------------------------- token
def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", errors="surrogatepass")).digest()


@dataclass(frozen=True)
class TokenEntry:
    """One static token, kept only as its SHA-256, and who presenting it makes you."""

    digest: bytes
    identity: Identity


class TokenAuth:
    """Static bearer tokens, compared in constant time (against every entry, no early exit)."""

    enabled = True

    def __init__(self, entries: list[TokenEntry]) -> None:
        self._entries = tuple(entries)

    def authenticate(self, credential: str | None) -> Identity | None:
        if not credential or len(credential) > MAX_CREDENTIAL_LENGTH:
            return None
        presented = _digest(credential)
        found: Identity | None = None
        for entry in self._entries:
            if hmac.compare_digest(presented, entry.digest):
                found = entry.identity
        return found


def _project_set(value: Any, where: str, known: frozenset[str]) -> frozenset[str] | None:
    if value == "*":
        return None
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise ConfigError("tokens-file", f'{where}: projects must be a list of ids or "*"')
    unknown = sorted(p for p in value if p not in known)
    if unknown:
        raise ConfigError("tokens-file", f"{where}: unknown project {unknown[0][:64]!r}")
    return frozenset(value)


def _token_digest(item: Mapping[str, Any], where: str, environ: Mapping[str, str]) -> bytes:
    sources = [key for key in ("token", "token_env", "sha256") if key in item]
    if len(sources) != 1:
        raise ConfigError("tokens-file", f"{where}: give exactly one of token, token_env, sha256")
    if "sha256" in item:
        value = str(item["sha256"]).lower()
        if not _SHA256_RE.fullmatch(value):
            raise ConfigError("tokens-file", f"{where}: sha256 must be 64 hex digits")
        return bytes.fromhex(value)
    if "token_env" in item:
        name = str(item["token_env"])
        token = environ.get(name, "")
        if not token:
            raise ConfigError("tokens-file", f"{where}: environment variable {name} is not set")
    else:
        token = item["token"] if isinstance(item["token"], str) else ""
    if len(token) < MIN_TOKEN_LENGTH or token != token.strip():
        raise ConfigError(
            "tokens-file", f"{where}: tokens need {MIN_TOKEN_LENGTH}+ characters, no spaces"
        )
    return _digest(token)


def _token_entry(
    item: Any, index: int, known: frozenset[str], environ: Mapping[str, str]
) -> TokenEntry:
    where = f"tokens[{index}]"
    if not isinstance(item, dict):
        raise ConfigError("tokens-file", f"{where}: must be a table")
    extra = set(item) - {"token", "token_env", "sha256", "owner", "projects", "operator", "account"}
    if extra:
        raise ConfigError("tokens-file", f"{where}: unknown key {sorted(extra)[0]!r}")
    owner = item.get("owner")
    if not isinstance(owner, str) or not is_valid_owner(owner):
        raise ConfigError("tokens-file", f"{where}: owner must be a printable name")
    operator = item.get("operator", False)
    if not isinstance(operator, bool):
        raise ConfigError("tokens-file", f"{where}: operator must be true or false")
    projects = _project_set(item.get("projects", []), where, known)
    account = item.get("account")
    if account is not None and (not isinstance(account, str) or not account):
        raise ConfigError("tokens-file", f"{where}: account must be a user name")
    identity = Identity(owner=owner, projects=projects, operator=operator, account=account)
    return TokenEntry(_token_digest(item, where, environ), identity)


def load_tokens(
    path: Path, known_projects: frozenset[str], environ: Mapping[str, str]
) -> list[TokenEntry]:
    """Read a tokens file (``[[tokens]]`` tables); raises ConfigError naming the bad entry."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError("tokens-file", f"cannot read {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError):
        raise ConfigError("tokens-file", f"{path} is not valid TOML") from None
    items = data.get("tokens")
    if not isinstance(items, list) or not items:
        raise ConfigError("tokens-file", f"{path} has no [[tokens]] entries")
    entries = [_token_entry(item, i, known_projects, environ) for i, item in enumerate(items)]
    digests = [entry.digest for entry in entries]
    if len(set(digests)) != len(digests):
        raise ConfigError("tokens-file", "the same token is listed twice")
    return entries


# ----------------------------------------------------------------------------- jwt
class JwtAuth:
    """Signed tokens: one pinned algorithm (never the one a token's header asks for); ``iss``
    checked when an issuer is configured; ``exp`` a number at most ``max_lifetime`` ahead (a
    leaked token must not work for years); a ``jti`` on the deny list refused."""

    enabled = True

    @property
    def _required(self) -> list[str]:
        return ["exp", "sub", "iss"] if self._issuer is not None else ["exp", "sub"]

    def _acceptable(self, claims: Mapping[str, Any]) -> bool:
        """The checks PyJWT does not make: ``exp`` a real number (PyJWT takes ``"123"``) not
        too far ahead, and ``jti`` not revoked."""
        exp = claims.get("exp")
        if isinstance(exp, bool) or not isinstance(exp, int | float) or not math.isfinite(exp):
            return False
        horizon = self._wall_clock() + self._leeway
        if self._max_lifetime is not None and exp > horizon + self._max_lifetime:
            return False
        jti = claims.get("jti")
        return not (isinstance(jti, str) and jti in self._denied_ids)

    def __init__(
        self,
        key: Any,
        algorithm: str,
        audience: str | None = None,
        leeway: float = 30.0,
        *,
        accounts: AccountPolicy | None = None,
        account_claim: str | None = None,
        issuer: str | None = None,
        max_lifetime: float | None = None,
        denied_ids: frozenset[str] = frozenset(),
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        # Imported here and where tokens are decoded, not at the top: only --auth jwt pays for
        # PyJWT and cryptography; here, so that a missing PyJWT fails the start (and an
        # upgrade's check), not the first login.
        import jwt  # noqa: F401

        self._key = key
        self._algorithm = algorithm
        self._audience = audience
        self._leeway = leeway
        self._issuer = issuer
        self._max_lifetime = max_lifetime
        self._denied_ids = denied_ids
        self._wall_clock = wall_clock
        self._accounts = accounts
        self._account_claim = account_claim

    def authenticate(self, credential: str | None) -> Identity | None:
        if not credential or len(credential) > MAX_CREDENTIAL_LENGTH:
            return None
        import jwt

        try:
            claims = jwt.decode(
                credential,
                self._key,
                algorithms=[self._algorithm],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": self._required, "enforce_minimum_key_length": True},
            )
        except (jwt.PyJWTError, ValueError, TypeError):
            return None
        if not self._acceptable(claims):
            return None
        identity = identity_from_claims(claims)
        if identity is None or self._accounts is None:
            return identity
        named = claims.get(self._account_claim) if self._account_claim else None
        if named is not None and (not isinstance(named, str) or not named):
            return None
        return self._accounts.assign(identity, named)


def identity_from_claims(claims: Mapping[str, Any]) -> Identity | None:
    """The identity verified claims name; None when ``sub`` or ``projects`` is malformed.

    ``projects`` is a list of project ids or ``"*"`` (every project); absent, no project.
    """
    owner = claims.get("sub")
    if not isinstance(owner, str) or not is_valid_owner(owner):
        return None
    raw = claims.get("projects", [])
    projects: frozenset[str] | None
    if raw == "*":
        projects = None
    elif isinstance(raw, list) and all(isinstance(p, str) and is_valid_project_id(p) for p in raw):
        projects = frozenset(raw)
    else:
        return None
    return Identity(owner=owner, projects=projects, operator=claims.get(OPERATOR_CLAIM) is True)


def _hmac_secret(name: str, environ: Mapping[str, str]) -> bytes:
    secret = environ.get(name, "").encode("utf-8")
    if not secret:
        raise ConfigError("jwt-secret-env", f"environment variable {name} is not set")
    if len(secret) < MIN_HMAC_SECRET_BYTES:
        raise ConfigError(
            "jwt-secret-env", f"{name} must hold at least {MIN_HMAC_SECRET_BYTES} bytes"
        )
    return secret


def _hmac_secret_file(path: Path) -> bytes:
    check_private(path, "jwt-secret-file")
    try:
        secret = path.read_bytes().rstrip(b"\r\n")
    except OSError as exc:
        raise ConfigError("jwt-secret-file", f"cannot read {path}: {exc.strerror}") from None
    if len(secret) < MIN_HMAC_SECRET_BYTES:
        raise ConfigError(
            "jwt-secret-file", f"{path} must hold at least {MIN_HMAC_SECRET_BYTES} bytes"
        )
    return secret


def _rsa_public_key(path: Path) -> rsa.RSAPublicKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except OSError as exc:
        raise ConfigError("jwt-public-key", f"cannot read {path}: {exc.strerror}") from None
    except ValueError:
        raise ConfigError("jwt-public-key", f"{path} is not a PEM public key") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise ConfigError("jwt-public-key", f"{path} is not an RSA public key (RS256)")
    if key.key_size < MIN_RSA_BITS:
        raise ConfigError("jwt-public-key", f"RSA keys need {MIN_RSA_BITS}+ bits")
    return key


# ----------------------------------------------------------------------------- settings
def from_settings(settings: Settings, environ: Mapping[str, str] | None = None) -> Authenticator:
    """The authenticator ``settings`` ask for, with its files and keys loaded (ConfigError)."""
    source = os.environ if environ is None else environ
    if settings.auth == "local":
        return LocalAuth(localtoken.obtain(settings.port, source))
    if settings.auth == "none":
        return NoAuth()
    accounts = policy_from_settings(settings)
    if settings.auth == "token":
        assert settings.tokens_file is not None  # checked by build_settings
        check_private(settings.tokens_file, "tokens-file")
        known = frozenset(settings.project_ids)
        entries = load_tokens(settings.tokens_file, known, source)
        owners = ((e.identity.owner, e.identity.account) for e in entries)
        accounts.check_owners(owners, "tokens-file")
        return TokenAuth([_with_account(entry, accounts) for entry in entries])
    return JwtAuth(
        _jwt_key(settings, source),
        "RS256" if settings.jwt_public_key is not None else "HS256",
        settings.jwt_audience,
        settings.jwt_leeway,
        accounts=accounts,
        account_claim=settings.jwt_account_claim,
        issuer=settings.jwt_issuer,
        max_lifetime=settings.jwt_max_lifetime,
        denied_ids=_deny_list(settings),
    )


def _deny_list(settings: Settings) -> frozenset[str]:
    if settings.jwt_deny_list is None:
        return frozenset()
    return load_deny_list(settings.jwt_deny_list)


def load_deny_list(path: Path) -> frozenset[str]:
    """Revoked token ids (``jti``), one a line; blank lines and ``#`` comments are skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("jwt-deny-list", f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError("jwt-deny-list", f"{path} is not UTF-8 text") from None
    lines = (line.strip() for line in text.splitlines())
    return frozenset(line for line in lines if line and not line.startswith("#"))


def _with_account(entry: TokenEntry, accounts: AccountPolicy) -> TokenEntry:
    identity = accounts.assign(entry.identity, entry.identity.account)
    assert identity is not None  # check_owners refused the entries without one
    return TokenEntry(entry.digest, identity)


def _jwt_key(settings: Settings, environ: Mapping[str, str]) -> Any:
    if settings.jwt_public_key is not None:
        return _rsa_public_key(settings.jwt_public_key)
    if settings.jwt_secret_file is not None:
        return _hmac_secret_file(settings.jwt_secret_file)
    assert settings.jwt_secret_env is not None  # checked by build_settings
    return _hmac_secret(settings.jwt_secret_env, environ)
