"""Credentials the authentication tests share: three token owners (alice on project web, bob on
web and api, ops the operator), a JWT secret, and the two projects they use."""

from __future__ import annotations

from pathlib import Path

ALICE = "alice-secret-token-0001"
BOB = "bob-secret-token-000002"
OPS = "ops-secret-token-000003"
TOKENS = f"""
[[tokens]]
owner = "alice"
token = "{ALICE}"
projects = ["web"]

[[tokens]]
owner = "bob"
token = "{BOB}"
projects = ["web", "api"]

[[tokens]]
owner = "ops"
token = "{OPS}"
projects = "*"
operator = true
"""
JWT_SECRET = "jwt-signing-secret-for-tests-0123456789"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def two_projects(root: Path) -> list[str]:
    """``--project`` values for projects web and api, in directories under ``root``."""
    for name in ("web", "api"):
        (root / name).mkdir(exist_ok=True)
    return [f"web={root / 'web'}", f"api={root / 'api'}"]
