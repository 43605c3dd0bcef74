"""The operator API across a cluster (``docs/scaling.md``): any node lists, shows, kills and
clears every node's sessions.

Listing reads the registry (each claim with its node and the node's state) and the shared store
(the records the owners mirror). Showing and killing a key another node owns is one HTTP request
to that node, carrying the caller's credential and the cluster secret; a key whose node is lost
is taken over and released here, with the operator's tombstone. Clearing clears this node and
asks every other live node to clear its own.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from tether.errors import RegistryUnavailable
from tether.server.aiohttp_front.context import client_address, server_of
from tether.server.aiohttp_front.forward import SESSION_KEY
from tether.server.cluster.lease import NodeState
from tether.server.entries import iso as _iso
from tether.server.state import EndReason
from tether.server.store.record import SessionRecord, Tombstone

if TYPE_CHECKING:  # redis is imported only by a server that joins a cluster
    from tether.server.cluster.node import ClusterNode
    from tether.server.cluster.registry import Holder

_PASSED = ("Authorization", "Cookie", "Host")
PEER_TIMEOUT = 5.0


def _cluster(request: web.Request) -> ClusterNode:
    cluster = server_of(request).cluster
    assert cluster is not None
    return cluster


def is_peer_request(request: web.Request) -> bool:
    """A request another node made on an operator's behalf: answer for this node only."""
    return server_of(request).is_relay(request.headers, request.remote or "")


def unavailable() -> web.Response:
    body = {"error": {"code": "registry_unavailable", "message": "cluster registry unavailable"}}
    return web.json_response(body, status=503, headers={"Retry-After": "1"})


def record_entry(record: SessionRecord | None, holder: Holder) -> dict[str, Any]:
    """A session of another node as ``/api/sessions`` lists it."""
    entry: dict[str, Any] = {"key": holder.key}
    if record is not None:
        entry.update(
            session=record.session_id,
            project=record.project,
            state=record.state.value,
            pid=record.pid,
            cols=record.cols,
            rows=record.rows,
            input_bytes=sum(record.input_counts.values()),
            created_at=_iso(record.created_at),
            last_activity=_iso(record.last_activity),
            name=record.name,
        )
    entry.update(owner=holder.owner, node=holder.node, node_state=holder.state.value)
    return entry


async def remote_entries(
    request: web.Request, *, owner: str | None, project: str | None
) -> list[dict[str, Any]] | web.Response:
    """Every other node's sessions (this node's are listed from memory by the caller)."""
    cluster = _cluster(request)
    try:
        holders = await cluster.registry.list_sessions()
        entries = []
        for holder in holders:
            if holder.node == cluster.node_id and holder.state is NodeState.UP:
                continue
            if owner is not None and holder.owner != owner:
                continue
            if project is not None and not holder.key.endswith(f":{project}"):
                continue
            record = await cluster.store.get_record(holder.key)
            entries.append(record_entry(record, holder))
    except RegistryUnavailable:
        return unavailable()
    return entries


async def to_owner(
    request: web.Request,
    key: str,
    *,
    owner: str | None = None,
    path: str = "/api/sessions/",
    body: dict[str, Any] | None = None,
) -> web.Response | None:
    """Answer a ``{path}{key}`` request for a key another node owns (None: not held
    elsewhere, the caller answers as a single node would). ``owner``: the caller's own sessions
    only (``/api/me/sessions``): another owner's key is answered 404, as if it did not exist."""
    cluster = _cluster(request)
    if is_peer_request(request):
        return None
    try:
        holder = await cluster.registry.lookup(key)
    except RegistryUnavailable:
        return unavailable()
    if holder is None or holder.node == cluster.node_id:
        return None
    if owner is not None and holder.owner != owner:
        body_out = {"error": {"code": "not_found", "message": f"no session {key[:140]}"}}
        return web.json_response(body_out, status=404)
    if holder.state is NodeState.UP:
        return await _ask_node(request, holder.url, request.method, path + key, body)
    if request.method == "DELETE":
        reason = EndReason.KILLED if owner is None else EndReason.ENDED
        return await _end_lost(request, holder, reason)
    if request.method != "GET":  # a rename needs the live session
        body_out = {"error": {"code": "node_unreachable", "message": "owner node lost"}}
        return web.json_response(body_out, status=502)
    try:
        record = await cluster.store.get_record(key)
    except RegistryUnavailable:
        return unavailable()
    return web.json_response(record_entry(record, holder))


async def _end_lost(request: web.Request, holder: Holder, reason: EndReason) -> web.Response:
    """End a lost node's session: take its key, leave the tombstone, release it."""
    server, cluster = server_of(request), _cluster(request)
    lease = cluster.lease
    if lease is None:
        return unavailable()
    try:
        result = await cluster.registry.claim(holder.key, lease, owner=holder.owner, takeover=True)
        if result.claim is not None:
            now = server.clock.time()
            ttl = server.settings.tombstone_ttl
            await cluster.store.put_tombstone(
                Tombstone(holder.key, holder.owner, reason.code, reason.reason, now, now + ttl)
            )
            await cluster.store.remove_record(holder.key)
            await cluster.registry.release(result.claim)
    except RegistryUnavailable:
        return unavailable()
    said = "killed" if reason is EndReason.KILLED else "ended"
    return web.json_response({said: holder.key, "node": holder.node})


async def clear_others(request: web.Request, body: dict[str, Any]) -> list[str]:
    """Ask every other live node to clear its sessions; the keys they cleared."""
    if is_peer_request(request):
        return []
    cluster = _cluster(request)
    try:
        nodes = await cluster.registry.nodes()
    except RegistryUnavailable:
        return []
    asks = [
        _ask_node(request, info.url, "POST", "/api/sessions/clear", body)
        for info in nodes
        if info.node != cluster.node_id and info.state is NodeState.UP and info.url
    ]
    keys: list[str] = []
    for response in await asyncio.gather(*asks):
        if response.status == 200 and isinstance(response.body, bytes):
            keys.extend(json.loads(response.body).get("cleared", []))
    return keys


async def _ask_node(
    request: web.Request, url: str, method: str, path: str, body: dict[str, Any] | None = None
) -> web.Response:
    cluster = _cluster(request)
    headers = {name: request.headers[name] for name in _PASSED if name in request.headers}
    headers.update(cluster.relay_headers(client_address(request)))
    session = request.app[SESSION_KEY]
    try:
        async with session.request(
            method,
            url.rstrip("/") + path,
            headers=headers,
            json=body,
            params=dict(request.query),
            timeout=aiohttp.ClientTimeout(total=PEER_TIMEOUT),
        ) as answer:
            data = await answer.read()
            return web.Response(body=data, status=answer.status, content_type="application/json")
    except (aiohttp.ClientError, OSError, TimeoutError):
        body_out = {"error": {"code": "node_unreachable", "message": "owner node unreachable"}}
        return web.json_response(body_out, status=502)


async def stats_cluster(request: web.Request) -> web.Response:
    """The nodes, their liveness and session counts, as the registry sees them."""
    try:
        view = await _cluster(request).cluster_view()
    except RegistryUnavailable:
        return unavailable()
    return web.json_response({**view, "cluster": True})
