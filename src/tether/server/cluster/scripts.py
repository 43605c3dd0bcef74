"""The registry's Lua scripts: each one atomic in Redis, O(1) (``SWEEP``: O(batch)).

``P`` below is the registry's prefix, passed in ``ARGV`` where a script builds a key name from
stored data (a claim's node or owner): fine on one Redis, not on a Redis Cluster. A Redis ``nil``
reads as ``false`` in Lua, so ``HGET`` of a missing key never equals a string argument.

Contracts (what :mod:`tether.server.cluster.registry` relies on):

``REGISTER``  KEYS node, nodes, epochs · ARGV node, url, lease_ms, since
    The node key exists: ``{0, its epoch, its PTTL}`` (a live node has this id; nothing written).
    Otherwise a new epoch from ``INCR epochs``, the node hash with ``PX lease_ms``, the id added
    to ``nodes``: ``{1, epoch, 0}``.
``SUCCEED``   KEYS node, nodes, epochs, fence · ARGV node, url, lease_ms, since, P, key, …
    A new process of a live node (restart survival: it adopted the sessions ``key, …``) takes
    the node id over at once: a new epoch and lease, whatever registration held the id, and each
    given key still claimed by this node id moves to the new epoch under a new token, in the
    same script, so that no other node ever reads those claims as lost. ``{epoch, {key, token,
    …}}`` (keys another node took, or nobody holds, are not in the list).
``RENEW``     KEYS node, nodes · ARGV epoch, lease_ms, node
    ``1`` and ``PEXPIRE`` (and the id in ``nodes`` again, should a sweep have forgotten it) when
    the node key holds this epoch; ``0`` when the key is gone (the lease
    expired: the node is lost); ``-1`` when it holds another epoch (registered again since).
``DEREGISTER`` KEYS node, nodes · ARGV epoch, node
    ``1`` (node key deleted, id removed from ``nodes``) if it holds this epoch, else ``0``.
``CLAIM``     KEYS claim, node, fence, node_claims, owner_claims · ARGV node, epoch, owner, key, P,
              takeover
    ``{'stale'}`` unless the node key holds ``epoch``. If the key is claimed by this node under
    this epoch: ``{'held', token}``. If it is claimed by another (or an older registration) and
    ``takeover`` is not ``'1'`` or that claim's node is up: ``{'taken', node, epoch, token, owner,
    'up'|'lost'}``. Otherwise (free, or a lost node's and ``takeover``): a new token from
    ``INCR fence``, the claim hash written and indexed, the lost holder's index entries removed:
    ``{'claimed', token, previous node or '', previous token or ''}``.
``RENEW_CLAIM`` KEYS claim, node, fence · ARGV node, epoch, token
    ``-1`` unless the node key holds ``epoch``; ``0`` unless the claim holds this node and this
    very token; otherwise the claim moves to ``epoch`` under a new token, which is returned.
``RELEASE``   KEYS claim, node_claims · ARGV token, key, P
    ``1`` (claim deleted, unindexed) if the claim holds this very token, else ``0``.
``WRITE``     KEYS claim · ARGV token, field, value, … → ``1`` (fields set) if the claim exists and
    its token is not higher than ``token``, else ``0``.
``LOOKUP``    KEYS claim · ARGV P → ``{}`` if unclaimed, else ``{'up'|'lost', node url or '',
    the claim hash as a flat list}``.
``SWEEP``     KEYS node · ARGV node, P, key, … → the keys (of those given) whose claims this node
    holds under an epoch that is not its current one (it was lost): deleted and unindexed.
``FORGET``    KEYS node, nodes, node_claims · ARGV node → ``1`` (the id removed from ``nodes``) if
    the node key is gone and it holds no claim, else ``0``.
"""

from __future__ import annotations

REGISTER = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if epoch then return {0, epoch, redis.call('PTTL', KEYS[1])} end
epoch = redis.call('INCR', KEYS[3])
redis.call('HSET', KEYS[1], 'epoch', epoch, 'url', ARGV[2], 'since', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('SADD', KEYS[2], ARGV[1])
return {1, epoch, 0}
"""

SUCCEED = """
local old = redis.call('HGET', KEYS[1], 'epoch')
local epoch = redis.call('INCR', KEYS[3])
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'epoch', epoch, 'url', ARGV[2], 'since', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('SADD', KEYS[2], ARGV[1])
local kept = {}
for i = 6, #ARGV do
  local claim = ARGV[5] .. 'claim:' .. ARGV[i]
  if redis.call('HGET', claim, 'node') == ARGV[1] then
    local token = redis.call('INCR', KEYS[4])
    redis.call('HSET', claim, 'epoch', epoch, 'token', token)
    kept[#kept + 1] = ARGV[i]
    kept[#kept + 1] = token
  end
end
return {epoch, kept}
"""

RENEW = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then return 0 end
if epoch ~= ARGV[1] then return -1 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
return 1
"""

DEREGISTER = """
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[2])
return 1
"""

CLAIM = """
if redis.call('HGET', KEYS[2], 'epoch') ~= ARGV[2] then return {'stale'} end
local held = redis.call('HMGET', KEYS[1], 'node', 'epoch', 'token', 'owner')
if held[1] then
  if held[1] == ARGV[1] and held[2] == ARGV[2] then return {'held', held[3]} end
  local up = redis.call('HGET', ARGV[5] .. 'node:' .. held[1], 'epoch') == held[2]
  if up or ARGV[6] ~= '1' then
    return {'taken', held[1], held[2], held[3], held[4], up and 'up' or 'lost'}
  end
  redis.call('SREM', ARGV[5] .. 'node-claims:' .. held[1], ARGV[4])
  redis.call('SREM', ARGV[5] .. 'owner-claims:' .. held[4], ARGV[4])
end
local token = redis.call('INCR', KEYS[3])
redis.call('HSET', KEYS[1], 'node', ARGV[1], 'epoch', ARGV[2], 'token', token, 'owner', ARGV[3])
redis.call('SADD', KEYS[4], ARGV[4])
redis.call('SADD', KEYS[5], ARGV[4])
return {'claimed', token, held[1] or '', held[3] or ''}
"""

RENEW_CLAIM = """
if redis.call('HGET', KEYS[2], 'epoch') ~= ARGV[2] then return -1 end
local held = redis.call('HMGET', KEYS[1], 'node', 'token')
if held[1] ~= ARGV[1] or held[2] ~= ARGV[3] then return 0 end
local token = redis.call('INCR', KEYS[3])
redis.call('HSET', KEYS[1], 'epoch', ARGV[2], 'token', token)
return token
"""

RELEASE = """
local held = redis.call('HMGET', KEYS[1], 'token', 'owner')
if held[1] ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[2])
redis.call('SREM', ARGV[3] .. 'owner-claims:' .. held[2], ARGV[2])
return 1
"""

WRITE = """
local token = redis.call('HGET', KEYS[1], 'token')
if not token or tonumber(ARGV[1]) < tonumber(token) then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
return 1
"""

LOOKUP = """
local held = redis.call('HGETALL', KEYS[1])
if #held == 0 then return {} end
local claim = {}
for i = 1, #held, 2 do claim[held[i]] = held[i + 1] end
local node = redis.call('HMGET', ARGV[1] .. 'node:' .. claim['node'], 'epoch', 'url')
return {node[1] == claim['epoch'] and 'up' or 'lost', node[2] or '', held}
"""

SWEEP = """
local current = redis.call('HGET', KEYS[1], 'epoch')
local swept = {}
for i = 3, #ARGV do
  local claim = ARGV[2] .. 'claim:' .. ARGV[i]
  local held = redis.call('HMGET', claim, 'node', 'epoch', 'owner')
  if held[1] == ARGV[1] and held[2] ~= current then
    redis.call('DEL', claim)
    redis.call('SREM', ARGV[2] .. 'owner-claims:' .. held[3], ARGV[i])
    swept[#swept + 1] = ARGV[i]
  end
  if held[1] ~= ARGV[1] or held[2] ~= current then
    redis.call('SREM', ARGV[2] .. 'node-claims:' .. ARGV[1], ARGV[i])
  end
end
return swept
"""

FORGET = """
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('SCARD', KEYS[3]) > 0 then return 0 end
return redis.call('SREM', KEYS[2], ARGV[1])
"""
