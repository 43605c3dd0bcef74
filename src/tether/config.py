"""Server settings: defaults < TOML file (``--config``) < ``TETHER_*`` environment < flags.

Every setting is validated once, at start; an invalid one raises :class:`ConfigError` naming it,
which the CLI prints as one line before exiting with status 2.
"""

from __future__ import annotations

import os
import pwd
import shlex
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tether.errors import ConfigError
from tether.ids import is_valid_project_id

ENV_PREFIX = "TETHER_"
MiB = 1024 * 1024
DEFAULT_LOG_FILE = "logs/terminal-websocket.log"


class Project(BaseModel):
    """A project id and the directory its shells start in (resolved once, at start)."""

    model_config = ConfigDict(frozen=True)
    id: str
    directory: Path
    name: str | None = None


class Settings(BaseModel):
    """Everything ``tether serve`` can be told. Field names are the TOML keys and flag names."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(4001, ge=0, le=65535)
    projects: tuple[Project, ...] = ()
    shell: tuple[str, ...] = ()
    buffer_size: int = Field(MiB, ge=1024, le=1024 * MiB)
    idle_timeout: float = Field(1800.0, gt=0)
    kill_grace: float = Field(5.0, ge=0)
    storm_threshold: int = Field(10, ge=1)
    address_storm_threshold: int = Field(300, ge=1)
    storm_window: float = Field(10.0, gt=0)
    storm_exempt_loopback: bool = True
    trusted_proxies: tuple[str, ...] = ()
    heartbeat: float = Field(25.0, gt=0)
    max_message_size: int = Field(MiB, ge=1024)
    max_sessions: int = Field(2000, ge=1)
    tombstone_ttl: float = Field(300.0, ge=0)
    log_file: Path | None = Path("logs/terminal-websocket.log")
    log_level: str = "info"
    log_max_bytes: int = Field(10 * MiB, ge=1024)
    log_backups: int = Field(5, ge=0)
    allowed_origins: tuple[str, ...] = ()
    drain_grace: float = Field(5.0, ge=0)

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        if value.lower() not in {"debug", "info", "warning", "error"}:
            raise ValueError("must be one of debug, info, warning, error")
        return value.lower()

    @property
    def project_ids(self) -> list[str]:
        return [project.id for project in self.projects]

    def project(self, project_id: str) -> Project | None:
        return next((p for p in self.projects if p.id == project_id), None)


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
    return {key.replace("-", "_"): value for key, value in data.items()}


_LIST_SETTINGS = {"projects", "allowed_origins", "trusted_proxies"}
_ENV_ALIASES = {
    "project": "projects",
    "allowed_origin": "allowed_origins",
    "trusted_proxy": "trusted_proxies",
}


def from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """Known ``TETHER_*`` variables as raw settings (lists are comma-separated)."""
    raw: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        key = name[len(ENV_PREFIX) :].lower()
        key = _ENV_ALIASES.get(key, key)
        if key not in Settings.model_fields:
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
    if isinstance(merged.get("log_file"), str) and merged["log_file"].strip() in {"", "-"}:
        merged["log_file"] = None
    merged.setdefault("log_file", DEFAULT_LOG_FILE)
    if merged.get("log_file") is not None:
        merged["log_file"] = (base / Path(merged["log_file"])).resolve()
    try:
        return Settings(**merged)
    except ValidationError as exc:
        error = exc.errors()[0]
        setting = str(error["loc"][0]).replace("_", "-") if error["loc"] else "config"
        raise ConfigError(setting, error["msg"]) from None
    except TypeError as exc:
        raise ConfigError("config", str(exc)) from None


def _projects(value: Any, base: Path) -> tuple[Project, ...]:
    if not value:
        return (Project(id="default", directory=base.resolve()),)
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
    path = (base / Path(directory).expanduser()).resolve()
    if not path.is_dir():
        raise ConfigError("project", f"{project_id}: directory {path} does not exist")
    return Project(id=project_id, directory=path, name=str(name) if name else None)


def _shell(value: Any) -> tuple[str, ...]:
    if value is None or value == "" or value == []:
        return default_shell()
    try:
        argv = tuple(shlex.split(value)) if isinstance(value, str) else tuple(map(str, value))
    except ValueError as exc:
        raise ConfigError("shell", str(exc)) from None
    if not argv:
        raise ConfigError("shell", "empty command")
    return argv
