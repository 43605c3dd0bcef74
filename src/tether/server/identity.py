"""Who is connecting: the owner model of docs/protocol.md, section 1."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Identity:
    """An authenticated principal: its owner name, the projects it may use, operator or not."""

    owner: str
    projects: frozenset[str] | None = None  # None: every configured project
    operator: bool = False
    # The Unix account this owner's shells run as (docs/security.md, "Shells as their owners'
    # accounts"); None: the server's shell account (single-user modes, --allow-same-user-shells).
    account: str | None = None

    def may_use(self, project: str) -> bool:
        return self.projects is None or project in self.projects


# With authentication off, everyone is the local single user, who is also the operator.
ANONYMOUS = Identity(owner="anonymous", projects=None, operator=True)
