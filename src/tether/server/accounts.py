"""Owners' own Unix accounts: where several owners log in (``--auth token`` or ``jwt``), each
owner's shells run as an account of their own, so that no shell can read the server's files or
memory, or write into another owner's terminal (docs/security.md).

The account comes from the owner's token entry (``account = "alice"``), from a JWT claim
(``--jwt-account-claim``), else from the user map (``--user-map``, a TOML table of
``owner = "account"``). It must exist, and be neither root nor the server's own account. Unless
``--allow-same-user-shells`` is given, an owner without such an account cannot log in (a tokens
file or user map naming none, or one two owners share, is refused at start).
"""

from __future__ import annotations

import os
import pwd
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from tether.errors import ConfigError
from tether.server.identity import Identity
from tether.server.shellenv import may_switch_user

if TYPE_CHECKING:
    from tether.server.config import Settings


class AccountPolicy:
    """Gives identities their account; refuses (None) those that need one and have none."""

    def __init__(
        self, user_map: Mapping[str, str], *, required: bool, server_uid: int | None = None
    ) -> None:
        self._map = dict(user_map)
        self.required = required
        self._server_uid = os.geteuid() if server_uid is None else server_uid

    def assign(self, identity: Identity, named: str | None = None) -> Identity | None:
        """``identity`` with its account: ``named`` (token entry, claim), else the map's."""
        account = named if named is not None else self._map.get(identity.owner)
        if account is None:
            return None if self.required else identity
        return replace(identity, account=account) if self.is_usable(account) else None

    def is_usable(self, account: str) -> bool:
        """An existing account, neither root nor the one the server runs as."""
        try:
            uid = pwd.getpwnam(account).pw_uid
        except (KeyError, ValueError):
            return False
        return uid not in (0, self._server_uid)

    def check_owners(self, owners: Iterable[tuple[str, str | None]], setting: str) -> None:
        """At start: every (owner, named account) gets a usable account of their own."""
        holders: dict[str, str] = {}
        for owner, named in owners:
            account = named if named is not None else self._map.get(owner)
            if account is None:
                if self.required:
                    raise ConfigError(setting, f"owner {owner[:64]!r} has no account: {_HOW}")
                continue
            if not self.is_usable(account):
                raise ConfigError(
                    setting, f"account {account[:64]!r} of owner {owner[:64]!r} {_UNUSABLE}"
                )
            other = holders.setdefault(account, owner)
            if other != owner:
                raise ConfigError(
                    setting, f"owners {other[:64]!r} and {owner[:64]!r} share account {account!r}"
                )
        if holders and not may_switch_user(self._server_uid):
            raise ConfigError(setting, "owners' accounts need root, or CAP_SETUID and CAP_SETGID")


_HOW = 'give it one (account = "…" in the tokens file, or --user-map), or --allow-same-user-shells'
_UNUSABLE = "does not exist, or is root or the server's own account"


def load_user_map(path: Path) -> dict[str, str]:
    """Read a user map: a TOML table of ``owner = "account"``; ConfigError naming what is wrong."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError("user-map", f"cannot read {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError):
        raise ConfigError("user-map", f"{path} is not valid TOML") from None
    for owner, account in data.items():
        if not isinstance(account, str) or not account:
            raise ConfigError("user-map", f"{owner[:64]!r}: the account must be a user name")
    return dict(data)


def policy_from_settings(settings: Settings) -> AccountPolicy:
    """The account policy ``settings`` ask for, with the user map read (ConfigError)."""
    user_map = load_user_map(settings.user_map) if settings.user_map is not None else {}
    required = settings.auth in ("token", "jwt") and not settings.allow_same_user_shells
    policy = AccountPolicy(user_map, required=required)
    policy.check_owners(((owner, None) for owner in user_map), "user-map")
    return policy
