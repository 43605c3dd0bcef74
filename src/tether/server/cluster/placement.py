"""Where a ``/ws/terminal`` attempt is served in a cluster: the answer's types, and what a
query asks for (pure: no Redis, no clock). :class:`~tether.server.cluster.node.ClusterNode`
decides; the front carries the decision out (serve here, relay, or close with a code).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from tether.errors import Refusal
from tether.protocol.ids import composite_key, new_session_id, resolve_session_id
from tether.protocol.messages import parse_connect_params
from tether.server.config import Settings
from tether.server.identity import Identity

RELAY_HEADER = "X-Tether-Relay"  # the cluster secret, from a forwarding node
CLIENT_HEADER = "X-Tether-Client"  # the client's address as the forwarding node saw it


class Route(enum.Enum):
    LOCAL = "local"  # admit here (the key is this node's, or newly claimed by it)
    FORWARD = "forward"  # relay to the owner node at ``url``
    REFUSE = "refuse"  # close with ``refusal``


@dataclass(frozen=True)
class Placement:
    route: Route
    url: str = ""
    refusal: Refusal | None = None
    query: Mapping[str, str] | None = None  # a rewritten query (a generated session id)
    claimed: str | None = None  # the key claimed for this attempt: settle it after the admit


LOCAL = Placement(Route.LOCAL)


@dataclass(frozen=True)
class Wanted:
    """What a connection asks for, as placement needs it."""

    key: str
    owner: str
    create: bool
    relayed: bool = False  # it came from another node: never forward it again
    owner_limit: int | None = None


def wanted_from(
    query: Mapping[str, str], identity: Identity | None, settings: Settings, now_ms: int
) -> tuple[Wanted, Mapping[str, str] | None] | None:
    """What a ``/ws/terminal`` query asks for, and the query to admit it with (a generated
    session id for a new session, so that it can be claimed first); None for an attempt the
    manager refuses anyway (bad parameters, no credential, a project it may not use)."""
    try:
        params = parse_connect_params(query)
        if identity is None or settings.project(params.project) is None:
            return None
        ref = resolve_session_id(params.session, owner=identity.owner, project=params.project)
    except Refusal:
        return None
    if not identity.may_use(params.project):
        return None
    session_id, rewritten = ref.session_id, None
    if session_id is None:
        if not params.create:
            return None
        session_id = new_session_id(now_ms)
        rewritten = {**query, "session": session_id}
    key = composite_key(session_id, params.project)
    return Wanted(key, identity.owner, params.create), rewritten


def refuse(code: int, reason: str) -> Placement:
    return Placement(Route.REFUSE, refusal=Refusal(code, reason))
