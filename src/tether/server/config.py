"""Server settings: defaults < TOML file (``--config``) < ``TETHER_*`` environment < flags.

Every setting is validated once, at start; an invalid one raises :class:`ConfigError` naming it,
which the CLI prints as one line before exiting with status 2.
"""

from __future__ import annotations

import os
import pwd
import re
import shlex
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tether.errors import ConfigError
from tether.protocol.ids import is_valid_project_id
from tether.server.fieldtable import check_fields, field_table, setting
from tether.server.hostcheck import (
    is_loopback_host,
    is_valid_host_pattern,
    is_valid_origin,
    parse_networks,
)
from tether.server.shellenv import run_as

ENV_PREFIX = "TETHER_"
MiB = 1024 * 1024
DEFAULT_LOG_FILE = "logs/terminal-websocket.log"
WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::", "[::]", "*"})


@dataclass(frozen=True, slots=True)
class Project:
    """A project id and the directory its shells start in (resolved once, at start)."""

    id: str
    directory: Path
    name: str | None = None


_LEVELS = ("debug", "info", "warning", "error")


def _log_level(value: str) -> str:
    if value.lower() not in _LEVELS:
        raise ValueError(f"must be one of {', '.join(_LEVELS)}")
    return value.lower()


def _stderr_level(value: str) -> str:
    if value.lower() not in (*_LEVELS, "off"):
        raise ValueError(f"must be one of {', '.join(_LEVELS)}, off")
    return value.lower()


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything ``tether serve`` can be told. Field names are the TOML keys and flag names.

    Constructing one coerces and checks every field (:data:`FIELDS`, tether.server.fieldtable):
    ConfigError names the first bad one. Immutable and hashable; ``dataclasses.replace`` checks
    again."""

    host: str = "127.0.0.1"
    port: int = setting(4001, ge=0, le=65535)
    projects: tuple[Project, ...] = ()
    shell: tuple[str, ...] = ()
    buffer_size: int = setting(MiB, ge=1024, le=1024 * MiB)
    idle_timeout: float = setting(1800.0, gt=0)
    kill_grace: float = setting(5.0, ge=0)
    storm_threshold: int = setting(10, ge=1)
    address_storm_threshold: int = setting(300, ge=1)
    storm_window: float = setting(10.0, gt=0)
    storm_exempt_loopback: bool = True
    trusted_proxies: tuple[str, ...] = ()
    heartbeat: float = setting(25.0, gt=0)
    max_message_size: int = setting(MiB, ge=1024)
    max_sessions: int | None = setting(None, ge=1)  # None: what the limits allow (capacity.py)
    tombstone_ttl: float = setting(300.0, ge=0)
    log_file: Path | None = Path(DEFAULT_LOG_FILE)
    log_level: str = setting("info", check=_log_level)
    # None: as log_level; "off": nothing on stderr
    log_stderr_level: str | None = setting(None, check=_stderr_level)
    log_max_bytes: int = setting(10 * MiB, ge=1024)
    log_backups: int = setting(5, ge=0)
    allowed_origins: tuple[str, ...] = ()
    drain_grace: float = setting(5.0, ge=0)
    # Surviving the server process (docs/operations.md): the command an upgrade in place runs
    # (default: our own command line), and a supervisor that keeps the shells through a crash.
    upgrade_command: str | None = None
    supervise: bool = True
    # Security (docs/security.md): who may connect, over what, and what they may reach.
    # local: a generated token kept per port in the user's runtime directory (docs/security.md)
    auth: Literal["local", "none", "token", "jwt"] = "local"
    insecure_no_auth: bool = False
    tokens_file: Path | None = None
    jwt_secret_env: str | None = None
    jwt_secret_file: Path | None = None
    jwt_public_key: Path | None = None
    jwt_audience: str | None = None
    jwt_leeway: float = setting(30.0, ge=0, le=3600)
    jwt_issuer: str | None = None  # when set, a token's iss must be it
    jwt_max_lifetime: float = setting(86400.0, gt=0)  # exp at most this far ahead
    jwt_deny_list: Path | None = None  # revoked jti values, one a line (reloaded on SIGHUP)
    max_login_failures: int = setting(10, ge=1)  # per address and minute, then 4129 / HTTP 429
    # Slowloris: request headers (a WebSocket's upgrade) within this; pending ones per address.
    handshake_timeout: float = setting(10.0, gt=0, le=3600)
    max_pending_per_address: int = setting(32, ge=1)
    max_sessions_per_owner: int = setting(50, ge=1)
    metrics_auth: bool = True
    healthz_auth: bool = False
    allowed_hosts: tuple[str, ...] = ()
    certfile: Path | None = None
    keyfile: Path | None = None
    shell_user: str | None = None
    # Owners' own accounts (docs/security.md): claim naming it, or an owner = account TOML file.
    jwt_account_claim: str | None = None
    user_map: Path | None = None
    allow_same_user_shells: bool = False
    # Cluster (docs/scaling.md): several nodes share one Redis; any node serves any session.
    redis_url: str | None = None
    node_id: str | None = None  # default: host name and port
    advertise_url: str | None = None  # how peers reach this node; default from host and port
    cluster_secret_env: str | None = None  # variable holding the node-to-node secret
    cluster_prefix: str = "tether:"
    cluster_lease: float = setting(5.0, gt=0, le=60)
    cluster_renew_every: float = setting(1.0, gt=0)
    cluster_timeout: float = setting(1.0, gt=0)
    cluster_record_interval: float = setting(5.0, gt=0)  # record mirror in cluster mode
    cluster_sweep_after: float = setting(60.0, gt=0)  # a lost node's sessions are kept that long
    # Session recording as asciicast v2 (docs/operations.md, "Recording sessions").
    record_dir: Path | None = None
    record_input: bool = False
    record_max_bytes: int = setting(64 * MiB, ge=4096)  # per file, then a numbered continuation
    record_queue_bytes: int = setting(8 * MiB, ge=1024)  # not yet written, then events dropped

    def __post_init__(self) -> None:
        check_fields(self, FIELDS)

    @property
    def project_ids(self) -> list[str]:
        return [project.id for project in self.projects]

    def project(self, project_id: str) -> Project | None:
        return next((p for p in self.projects if p.id == project_id), None)


FIELDS = field_table(Settings)
"""Every setting by name, with its default (the TOML keys; the flags and ``TETHER_*`` names
are derived from them)."""


def default_shell() -> tuple[str, ...]:
    """The user's login shell, falling back to ``bash``."""
    try:
        login = pwd.getpwuid(os.getuid()).pw_shell
    except KeyError:
        login = ""
    return (login,) if login and os.access(login, os.X_OK) else ("bash",)


def parse_project(spec: str) -> tuple[str, str]:
    """Split an ``ID=DIR`` project flag."""
    project_id, sep, directory = spec.partition("=")
    if not sep or not directory:
        raise ConfigError("project", f"expected ID=DIR, got {spec!r}")
    return project_id, directory


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML config file; its keys use ``_`` or ``-`` like the flags."""
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError("config", f"cannot read {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config", f"{path} is not valid TOML: {exc}") from exc
    except UnicodeDecodeError:
        raise ConfigError("config", f"{path} is not UTF-8 text") from None
    return {key.replace("-", "_"): value for key, value in data.items()}


_LIST_SETTINGS = {"projects", "allowed_origins", "trusted_proxies", "allowed_hosts"}
_ENV_ALIASES = {
    "project": "projects",
    "allowed_origin": "allowed_origins",
    "trusted_proxy": "trusted_proxies",
    "allowed_host": "allowed_hosts",
}
_PATH_SETTINGS = (
    "tokens_file",
    "jwt_public_key",
    "jwt_secret_file",
    "user_map",
    "jwt_deny_list",
    "certfile",
    "keyfile",
    "record_dir",
)


def from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """Known ``TETHER_*`` variables as raw settings (lists are comma-separated)."""
    raw: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        key = name[len(ENV_PREFIX) :].lower()
        key = _ENV_ALIASES.get(key, key)
        if key not in FIELDS:
            continue  # other TETHER_* variables (secrets named by settings) are not settings
        raw[key] = [i for i in value.split(",") if i] if key in _LIST_SETTINGS else value
    return raw


def build_settings(*layers: Mapping[str, Any], cwd: Path | None = None) -> Settings:
    """Merge raw layers (later wins), normalise projects and shell, and validate."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update({k: v for k, v in layer.items() if v is not None})
    base = cwd or Path.cwd()
    merged["projects"] = _projects(merged.get("projects"), base)
    merged["shell"] = _shell(merged.get("shell"))
    if merged.get("shell_user") not in (None, ""):
        merged["shell"] = run_as(str(merged["shell_user"]), merged["shell"])
    if isinstance(merged.get("log_file"), str) and merged["log_file"].strip() in {"", "-"}:
        merged["log_file"] = None
    merged.setdefault("log_file", DEFAULT_LOG_FILE)
    for name in ("log_file", *_PATH_SETTINGS):
        if merged.get(name) not in (None, ""):
            merged[name] = _path(name, merged[name], base)
    settings = Settings(**{key: value for key, value in merged.items() if key in FIELDS})
    unknown = [key for key in merged if key not in FIELDS]
    if unknown:  # after the known ones' errors, as before
        raise _unknown_setting(unknown[0])
    return check_security(settings)


def _unknown_setting(key: object) -> ConfigError:
    name = str(key)
    if re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
        return ConfigError(name.replace("_", "-"), "unknown setting")
    return ConfigError("config", f"unknown setting {name[:40]!r}")  # named by the user: quoted


def _path(name: str, value: Any, base: Path) -> Path:
    if not isinstance(value, str | Path) or "\0" in str(value):
        raise ConfigError(name.replace("_", "-"), "must be a file path")
    return _expand(name.replace("_", "-"), str(value), base)


def _expand(setting: str, path: str, base: Path) -> Path:
    try:
        return (base / Path(path).expanduser()).resolve()
    except (RuntimeError, ValueError, OSError):  # ~nosuchuser, NUL bytes, loops
        raise ConfigError(setting, f"unusable path {path[:64]!r}") from None


def check_security(settings: Settings) -> Settings:
    """The rules that tie security settings together (docs/security.md); ConfigError if broken."""
    exposed = not is_loopback_host(settings.host)
    # The local token (the default) is for this machine: a network bind needs a chosen mode.
    if settings.auth in ("none", "local") and exposed and not settings.insecure_no_auth:
        raise ConfigError(
            "auth",
            f"refusing to serve {settings.host} without authentication: "
            "use --auth token|jwt, or --insecure-no-auth",
        )
    # Without auth and without a Host check, a DNS-rebinding page would get a shell.
    if settings.auth == "none" and exposed and not settings.allowed_hosts:
        raise ConfigError(
            "allowed-host",
            f"--insecure-no-auth on {settings.host} needs --allowed-host (the names served)",
        )
    if settings.auth == "token" and settings.tokens_file is None:
        raise ConfigError("tokens-file", "required with --auth token")
    jwt_keys = (settings.jwt_secret_env, settings.jwt_secret_file, settings.jwt_public_key)
    if settings.auth == "jwt" and sum(key is not None for key in jwt_keys) != 1:
        raise ConfigError(
            "auth", "--auth jwt needs one of --jwt-secret-file, --jwt-secret-env, --jwt-public-key"
        )
    _check_shell_accounts(settings)
    # --auth local is a credential of one machine's account: a cluster needs a configured one.
    _check_cluster(settings)
    if settings.keyfile is not None and settings.certfile is None:
        raise ConfigError("keyfile", "needs --certfile")
    _check_lists(settings)
    return settings


def _check_cluster(settings: Settings) -> None:
    if settings.redis_url is None:
        return
    if not settings.redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError("redis-url", "expected redis://HOST:PORT/DB")
    if settings.auth == "local":
        raise ConfigError(
            "auth", "--redis-url needs a configured credential: --auth token|jwt (or none)"
        )
    if settings.auth != "none" and not settings.cluster_secret_env:
        raise ConfigError("cluster-secret-env", "required with --redis-url when auth is on")
    if settings.advertise_url is None and settings.host in WILDCARD_HOSTS:
        raise ConfigError("advertise-url", f"required with --redis-url on {settings.host or '*'}")
    if settings.advertise_url is not None and not is_valid_origin(settings.advertise_url):
        raise ConfigError("advertise-url", "expected http(s)://HOST:PORT")
    if not 0 < settings.cluster_renew_every <= settings.cluster_lease / 2:
        raise ConfigError("cluster-renew-every", "must be at most half the lease")
    if not settings.cluster_timeout < settings.cluster_lease:
        raise ConfigError("cluster-timeout", "must be shorter than the lease")


def _check_shell_accounts(settings: Settings) -> None:
    # Where several owners log in, shells sharing one account could read the server's files and
    # write into each other's terminals: each owner needs an account of their own. Whether every
    # token names one is known when the tokens file is read (tether.server.auth).
    if settings.auth not in ("token", "jwt") or settings.allow_same_user_shells:
        return
    if settings.auth == "jwt" and not (settings.jwt_account_claim or settings.user_map):
        raise ConfigError(
            "auth",
            "--auth jwt runs each owner's shells as their own account: give "
            "--jwt-account-claim or --user-map (or --allow-same-user-shells, insecure)",
        )


def _check_lists(settings: Settings) -> None:
    for host in settings.allowed_hosts:
        if not is_valid_host_pattern(host):
            raise ConfigError("allowed-host", f"not a host name: {host[:64]!r}")
    for origin in settings.allowed_origins:
        if not is_valid_origin(origin):
            raise ConfigError("allowed-origin", f"expected scheme://host[:port]: {origin[:64]!r}")
    try:
        parse_networks(settings.trusted_proxies)
    except ValueError as exc:
        raise ConfigError("trusted-proxy", str(exc)[:120]) from None


def _projects(value: Any, base: Path) -> tuple[Project, ...]:
    if not value:
        return (Project(id="default", directory=base.resolve()),)
    if not isinstance(value, list | tuple | dict):
        raise ConfigError("project", "expected a list of ID=DIR")
    projects: list[Project] = []
    items = value.items() if isinstance(value, dict) else value
    project_id: Any
    directory: Any
    name: Any
    for item in items:
        if isinstance(item, tuple):
            project_id, directory, name = item[0], str(item[1]), None
        elif isinstance(item, dict):
            project_id, directory, name = item.get("id"), item.get("directory"), item.get("name")
        else:
            project_id, directory = parse_project(str(item))
            name = None
        projects.append(_project(str(project_id), str(directory), name, base))
    ids = [p.id for p in projects]
    if len(set(ids)) != len(ids):
        raise ConfigError("project", "duplicate project id")
    return tuple(projects)


def _project(project_id: str, directory: str, name: Any, base: Path) -> Project:
    if not is_valid_project_id(project_id):
        raise ConfigError("project", f"invalid project id {project_id[:64]!r}")
    path = _expand("project", directory, base)
    if not path.is_dir():
        raise ConfigError("project", f"{project_id}: directory {path} does not exist")
    return Project(id=project_id, directory=path, name=str(name) if name else None)


def _shell(value: Any) -> tuple[str, ...]:
    if value is None or value == "" or value == []:
        return default_shell()
    if not isinstance(value, str | list | tuple):
        raise ConfigError("shell", "expected a command line or a list of arguments")
    try:
        argv = tuple(shlex.split(value)) if isinstance(value, str) else tuple(map(str, value))
    except ValueError as exc:
        raise ConfigError("shell", str(exc)) from None
    if not argv:
        raise ConfigError("shell", "empty command")
    return argv
