"""The shared store: :class:`RedisStore`, a :class:`~tether.server.store.base.SessionStore` over
one Redis (redis-py's asyncio client).

Every key starts with the store's prefix (``tether:`` by default), so that tether shares a
database safely: it never runs ``KEYS`` or ``FLUSHDB`` and touches no key outside its prefix.
With ``P`` the prefix and ``K`` a composite key:

============================  ===========================================  ======================
key                           value                                        lifetime
============================  ===========================================  ======================
``P record:K``                hash: ``record`` (JSON of ``to_dict()``),    until removed
                              ``owner``, ``project``
``P records``                 set of every K with a record                 while not empty
``P records:owner:O``         set of owner O's keys                        while not empty
``P records:project:J``       set of project J's keys                      while not empty
``P tombstone:K``             JSON of ``Tombstone.to_dict()``              its lifetime (``PX``)
``P tombstones``              sorted set: K scored by ``expires_at``       while not empty
============================  ===========================================  ======================

A record and its index entries change together (Lua scripts), so a listing (``SSCAN`` of an index
set, then the records in pipelined batches; never a scan of the keyspace) sees each record under
the sets it belongs to. Tombstones carry a Redis TTL of their lifetime (``expires_at -
ended_at``) counted from when they are written, so Redis forgets them by itself even if nobody
prunes; reads still compare ``expires_at`` with the caller's ``now``. :meth:`RedisStore.prune`
drops the tombstones expired at ``now`` (from the sorted set, ``O(log N + expired)``), so that a
tombstone is gone "whatever the time" once pruned, as with the memory store; it is cheap enough to
run once a minute, and the TTL bounds the memory if it never runs.

The scripts derive some key names from the prefix inside Lua: fine on one Redis (what tether
uses), not on a Redis Cluster. Connection failures and timeouts surface as
:class:`~tether.errors.RegistryUnavailable`, never as redis-py's exceptions.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tether.errors import RegistryUnavailable
from tether.server.store.record import SessionRecord, Tombstone

DEFAULT_PREFIX = "tether:"
Fence = tuple[str, int]  # a claim's Redis key and the token a fenced write must match
_BATCH = 500  # keys per pipelined read and per prune step

_PUT_RECORD = """
local old = redis.call('HMGET', KEYS[1], 'owner', 'project')
if old[1] and old[1] ~= ARGV[2] then
  redis.call('SREM', ARGV[5] .. 'records:owner:' .. old[1], ARGV[4])
end
if old[2] and old[2] ~= ARGV[3] then
  redis.call('SREM', ARGV[5] .. 'records:project:' .. old[2], ARGV[4])
end
redis.call('HSET', KEYS[1], 'record', ARGV[1], 'owner', ARGV[2], 'project', ARGV[3])
redis.call('SADD', KEYS[2], ARGV[4])
redis.call('SADD', KEYS[3], ARGV[4])
redis.call('SADD', KEYS[4], ARGV[4])
return 1
"""

_REMOVE_RECORD = """
local old = redis.call('HMGET', KEYS[1], 'owner', 'project')
if old[1] then redis.call('SREM', ARGV[2] .. 'records:owner:' .. old[1], ARGV[1]) end
if old[2] then redis.call('SREM', ARGV[2] .. 'records:project:' .. old[2], ARGV[1]) end
redis.call('SREM', KEYS[2], ARGV[1])
return redis.call('DEL', KEYS[1])
"""

# A fenced write (cluster mode): the script above runs only while the claim hash named by the
# last key still holds the token given as the last argument; else nothing is written (-1).
_FENCE = "if redis.call('HGET', KEYS[#KEYS], 'token') ~= ARGV[#ARGV] then return -1 end\n"

# Drops the tombstones whose expires_at <= ARGV[1] (at most ARGV[3] of them); returns
# {entries seen, tombstones deleted}. The sorted set's score is written with the tombstone in
# one transaction, so a newer tombstone of a key (a later score) is never dropped here.
_PRUNE = """
local keys = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
local deleted = 0
for _, key in ipairs(keys) do
  deleted = deleted + redis.call('DEL', ARGV[2] .. 'tombstone:' .. key)
  redis.call('ZREM', KEYS[1], key)
end
return {#keys, deleted}
"""

# Drops one key's tombstone if it is (still) expired at ARGV[1].
_DROP_IF_EXPIRED = """
local score = redis.call('ZSCORE', KEYS[2], ARGV[2])
if score and tonumber(score) <= tonumber(ARGV[1]) then
  redis.call('ZREM', KEYS[2], ARGV[2])
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def redis_client(url: str, *, timeout: float = 1.0, pool_size: int | None = None) -> Redis:
    """A client for :class:`RedisStore` and the cluster registry: strings in and out, every
    operation bounded by ``timeout`` seconds, no silent retries (the caller decides).

    ``pool_size``: at most that many connections, an operation waiting up to ``timeout`` for a
    free one (a cluster node: a fixed number of sockets however many clients connect at once).
    """
    options: dict[str, Any] = {
        "decode_responses": True,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
    }
    if pool_size is None:
        return Redis.from_url(url, **options)
    pool = BlockingConnectionPool.from_url(
        url, max_connections=pool_size, timeout=timeout, **options
    )
    return Redis(connection_pool=pool)


@contextlib.contextmanager
def translated_errors() -> Iterator[None]:
    """Turn redis-py's connection errors and timeouts into :class:`RegistryUnavailable`."""
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        raise RegistryUnavailable(f"redis: {exc}") from exc


def require_decoded(client: Redis) -> None:
    """Refuse a client that returns bytes (make it with :func:`redis_client`)."""
    if not client.connection_pool.connection_kwargs.get("decode_responses"):
        raise ValueError("the Redis client must be made with decode_responses=True")


def _dump(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"), allow_nan=False)


class RedisStore:
    """A :class:`~tether.server.store.base.SessionStore` in Redis; see the module docstring for
    the keys. ``client`` must decode responses (see :func:`redis_client`); closing it is the
    caller's business."""

    def __init__(self, client: Redis, prefix: str = DEFAULT_PREFIX) -> None:
        require_decoded(client)
        self.client = client
        self.prefix = prefix
        self._put_record = client.register_script(_PUT_RECORD)
        self._remove_record = client.register_script(_REMOVE_RECORD)
        self._put_record_fenced = client.register_script(_FENCE + _PUT_RECORD)
        self._remove_record_fenced = client.register_script(_FENCE + _REMOVE_RECORD)
        self._prune = client.register_script(_PRUNE)
        self._drop_if_expired = client.register_script(_DROP_IF_EXPIRED)

    # ------------------------------------------------------------------ records
    async def put_record(self, record: SessionRecord) -> None:
        await self.put_record_fenced(record, None)

    async def put_record_fenced(self, record: SessionRecord, fence: Fence | None) -> bool:
        """Write the record; with ``fence`` (a claim's hash and token), only while that claim
        holds that token (False: a newer owner holds the key, nothing was written)."""
        keys = [
            self._record_key(record.key),
            self._index(),
            self._index("owner", record.owner),
            self._index("project", record.project),
        ]
        args: list[Any] = [
            _dump(record.to_dict()),
            record.owner,
            record.project,
            record.key,
            self.prefix,
        ]
        with translated_errors():
            if fence is None:
                await self._put_record(keys=keys, args=args)
                return True
            done = await self._put_record_fenced(keys=[*keys, fence[0]], args=[*args, fence[1]])
        return int(done) != -1

    async def get_record(self, key: str) -> SessionRecord | None:
        with translated_errors():
            data = await self.client.hget(self._record_key(key), "record")
        return None if data is None else SessionRecord.from_dict(json.loads(data))

    async def remove_record(self, key: str) -> None:
        await self.remove_record_fenced(key, None)

    async def remove_record_fenced(self, key: str, fence: Fence | None) -> bool:
        """Forget the record; with ``fence``, only while that claim holds that token."""
        keys = [self._record_key(key), self._index()]
        with translated_errors():
            if fence is None:
                await self._remove_record(keys=keys, args=[key, self.prefix])
                return True
            done = await self._remove_record_fenced(
                keys=[*keys, fence[0]], args=[key, self.prefix, fence[1]]
            )
        return int(done) != -1

    async def list_records(
        self, *, owner: str | None = None, project: str | None = None
    ) -> list[SessionRecord]:
        keys = await self.list_keys(owner=owner, project=project)
        records: list[SessionRecord] = []
        for start in range(0, len(keys), _BATCH):
            async with self.client.pipeline(transaction=False) as pipe:
                for key in keys[start : start + _BATCH]:
                    pipe.hget(self._record_key(key), "record")
                with translated_errors():
                    found = await pipe.execute()
            # A key removed between the listing and the read is simply not listed.
            records.extend(SessionRecord.from_dict(json.loads(data)) for data in found if data)
        return records

    async def list_keys(self, *, owner: str | None = None, project: str | None = None) -> list[str]:
        with translated_errors():
            if owner is not None and project is not None:
                both = await self.client.sinter(
                    [self._index("owner", owner), self._index("project", project)]
                )
                return [str(key) for key in both]
            if owner is not None:
                index = self._index("owner", owner)
            elif project is not None:
                index = self._index("project", project)
            else:
                index = self._index()
            # SSCAN may return a member twice; a set removes the repeats.
            return list({str(key) async for key in self.client.sscan_iter(index, count=_BATCH)})

    # ------------------------------------------------------------------ tombstones
    async def put_tombstone(self, tombstone: Tombstone) -> None:
        lifetime_ms = max(1, math.ceil((tombstone.expires_at - tombstone.ended_at) * 1000))
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.set(self._tombstone_key(tombstone.key), _dump(tombstone.to_dict()), px=lifetime_ms)
            pipe.zadd(self._tombstones(), {tombstone.key: tombstone.expires_at})
            with translated_errors():
                await pipe.execute()

    async def get_tombstone(self, key: str, now: float) -> Tombstone | None:
        with translated_errors():
            data = await self.client.get(self._tombstone_key(key))
        if data is None:
            return None
        tombstone = Tombstone.from_dict(json.loads(data))
        if not tombstone.is_expired(now):
            return tombstone
        with translated_errors():
            await self._drop_if_expired(
                keys=[self._tombstone_key(key), self._tombstones()], args=[repr(now), key]
            )
        return None

    async def remove_tombstone(self, key: str) -> None:
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.delete(self._tombstone_key(key))
            pipe.zrem(self._tombstones(), key)
            with translated_errors():
                await pipe.execute()

    async def prune(self, now: float) -> int:
        """Drop the tombstones expired at ``now``; returns how many were still in Redis (those
        Redis already expired by their TTL are not counted)."""
        deleted = 0
        while True:
            with translated_errors():
                seen, dropped = await self._prune(
                    keys=[self._tombstones()], args=[repr(now), self.prefix, _BATCH]
                )
            deleted += int(dropped)
            if int(seen) < _BATCH:
                return deleted

    # ------------------------------------------------------------------ key names
    def _record_key(self, key: str) -> str:
        return f"{self.prefix}record:{key}"

    def _tombstone_key(self, key: str) -> str:
        return f"{self.prefix}tombstone:{key}"

    def _tombstones(self) -> str:
        return f"{self.prefix}tombstones"

    def _index(self, by: str | None = None, value: str = "") -> str:
        return f"{self.prefix}records" if by is None else f"{self.prefix}records:{by}:{value}"
