"""Lua scripts that keep each room operation atomic and one round trip.

Every key a script touches carries the room's hash tag, so the scripts run
unchanged on a Redis Cluster shard. ARGV[1] is always the publish command
(``PUBLISH``, or ``SPUBLISH`` for sharded Pub/Sub).

A peer's entry in ``owners`` is the id of the session serving it, or one of
two markers while it has no connection (see docs/reliability.md):

- ``~flushing``: its connection ended; the old session is still moving the
  frames it had not sent into the mailbox. Resuming waits for it.
- ``~away``: waiting to resume; messages to it are appended to its mailbox.

Room keys, in the order the scripts take them (``RoomKeys.state``)::

    KEYS[1] members  hash peer -> member JSON
    KEYS[2] owners   hash peer -> session id | ~flushing | ~away
    KEYS[3] media    hash peer -> last media-state JSON
    KEYS[4] resume   hash peer -> sha256 of its current resume secret
    KEYS[5] away     zset peer -> resume deadline (ms, Redis clock)
    KEYS[6] channel  the room's Pub/Sub channel
    KEYS[7] policy   hash owner -> host who restricted the room, locked -> 0|1
    KEYS[8] invited  set  user ids allowed in a restricted room
    KEYS[9] events   stream: the room's webhook outbox (``RoomKeys.changing``;
            only the scripts that admit or remove peers take it)

Those scripts take webhook events as ARGV quadruples (id, type, unix time,
body; an empty id when webhooks are off) and append the ones that apply to
the room's stream in the same step as the change, so no change is ever
without its event nor an event without its change (docs/webhooks.md).

A mailbox is the list ``<mailbox prefix><peer>`` in the same hash slot.
"""

from __future__ import annotations

# Shared helpers, prepended to the scripts that need them.
_LIB = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function mail(key, frame, ttl_ms, max_len)
  redis.call('RPUSH', key, frame)
  redis.call('LTRIM', key, -max_len, -1)
  redis.call('PEXPIRE', key, ttl_ms)
end
-- Append the webhook event at ARGV[i..i+3] to the room's outbox stream.
local function emit(i)
  if ARGV[i] ~= '' then
    redis.call('XADD', KEYS[9], '*', 'id', ARGV[i], 'type', ARGV[i + 1], 'at', ARGV[i + 2],
               'body', ARGV[i + 3])
  end
end
local function forget(peer, mailbox)
  redis.call('HDEL', KEYS[1], peer)
  redis.call('HDEL', KEYS[2], peer)
  redis.call('HDEL', KEYS[3], peer)
  redis.call('HDEL', KEYS[4], peer)
  redis.call('ZREM', KEYS[5], peer)
  redis.call('DEL', mailbox)
end
-- Publish a frame for the whole room but its sender: peers without a
-- connection get it in their mailbox instead, and are excluded from the live
-- delivery so that nobody receives it twice.
local function broadcast(publish, sender, frame, prefix, ttl_ms, max_len, stamp)
  local exclude = sender
  if redis.call('ZCARD', KEYS[5]) > 0 then
    for _, peer in ipairs(redis.call('ZRANGE', KEYS[5], 0, -1)) do
      if peer ~= sender then
        mail(prefix .. peer, frame, ttl_ms, max_len)
        exclude = exclude .. ',' .. peer
      end
    end
  end
  return redis.call(publish, KEYS[6], stamp .. '\\n\\n' .. exclude .. '\\n' .. frame)
end
"""

# ARGV: publish, peer, member_json, owner, capacity, resume_hash, envelope,
#       user id, privileged ('1': an admin, who passes locks and guest lists),
#       room.started event (10-13), participant.joined event (14-17)
# -> {-1} full, {-2} locked, {-3} not invited, or
#    {1, members (flat), media (flat)} from before the join
JOIN = (
    _LIB
    + """
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[5]) then return {-1} end
local host = redis.call('HGET', KEYS[7], 'owner')
if ARGV[9] ~= '1' and host ~= ARGV[8] then
  if redis.call('HGET', KEYS[7], 'locked') == '1' then return {-2} end
  if redis.call('EXISTS', KEYS[8]) == 1 and redis.call('SISMEMBER', KEYS[8], ARGV[8]) == 0 then
    return {-3}
  end
end
local members = redis.call('HGETALL', KEYS[1])
local media = redis.call('HGETALL', KEYS[3])
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[4])
redis.call('HSET', KEYS[4], ARGV[2], ARGV[6])
redis.call(ARGV[1], KEYS[6], ARGV[7])
if #members == 0 then emit(10) end
emit(14)
return {1, members, media}
"""
)

# KEYS: policy, invited
# ARGV: user, privileged, locked ('0'|'1'), ttl_s, restrict ('0'|'1'), invited users...
# The first host to set a policy owns the room's policy; only that host or an
# admin may change it. -> {-1, owner} refused, or {1, owner}
SET_POLICY = """
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner and owner ~= ARGV[1] and ARGV[2] ~= '1' then return {-1, owner} end
owner = owner or ARGV[1]
redis.call('HSET', KEYS[1], 'owner', owner, 'locked', ARGV[3])
redis.call('DEL', KEYS[2])
if ARGV[5] == '1' then
  redis.call('SADD', KEYS[2], owner)
  for i = 6, #ARGV do redis.call('SADD', KEYS[2], ARGV[i]) end
  redis.call('EXPIRE', KEYS[2], tonumber(ARGV[4]))
end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
return {1, owner}
"""

# KEYS: policy, invited -> {owner or false, locked, invited users}
GET_POLICY = """
return {redis.call('HGET', KEYS[1], 'owner'), redis.call('HGET', KEYS[1], 'locked'),
        redis.call('SMEMBERS', KEYS[2])}
"""

# Re-add a live local peer after Redis lost it (restart, or reaped while the
# instance could not heartbeat). ARGV as JOIN, without capacity, and the
# events room.started (8-11) and participant.joined (12-15): a peer the
# receivers were told had left is back.
# -> 1 re-added and announced, 0 already there
REREGISTER = (
    _LIB
    + """
if redis.call('HEXISTS', KEYS[1], ARGV[2]) == 1 then return 0 end
local empty = redis.call('HLEN', KEYS[1]) == 0
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[4])
redis.call('HSET', KEYS[4], ARGV[2], ARGV[6])
redis.call(ARGV[1], KEYS[6], ARGV[7])
if empty then emit(8) end
emit(12)
return 1
"""
)

# ARGV: publish, peer, owner ('*' for any), user-left envelope, mailbox key,
#       participant.left event (6-9), room.finished event (10-13)
# Removes the peer only while ``owner`` still serves it, so a late cleanup or
# a reaper never removes a peer that moved to another session.
LEAVE = (
    _LIB
    + """
local owner = redis.call('HGET', KEYS[2], ARGV[2])
if not owner then return 0 end
if ARGV[3] ~= '*' and owner ~= ARGV[3] then return 0 end
forget(ARGV[2], ARGV[5])
redis.call(ARGV[1], KEYS[6], ARGV[4])
emit(6)
if redis.call('HLEN', KEYS[1]) == 0 then emit(10) end
return 1
"""
)

# The session ``owner`` lost its connection: keep the peer for resume.
# ARGV: publish, peer, owner, resume_ttl_ms, barrier envelope
# -> the resume deadline (ms), or 0 when ``owner`` no longer serves the peer.
# The barrier, published last, tells the old session when every frame
# published before this point has reached it.
AWAY = (
    _LIB
    + """
if redis.call('HGET', KEYS[2], ARGV[2]) ~= ARGV[3] then return 0 end
local deadline = now_ms() + tonumber(ARGV[4])
redis.call('HSET', KEYS[2], ARGV[2], '~flushing')
redis.call('ZADD', KEYS[5], deadline, ARGV[2])
redis.call(ARGV[1], KEYS[6], ARGV[5])
return deadline
"""
)

# The old session hands over the frames it never sent, ahead of what has
# reached the mailbox since, and the peer becomes resumable.
# KEYS: owners, mailbox; ARGV: peer, ttl_ms, max_len, frames...
RELEASE = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= '~flushing' then return 0 end
for i = #ARGV, 4, -1 do redis.call('LPUSH', KEYS[2], ARGV[i]) end
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[3]), -1)
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[2]))
redis.call('HSET', KEYS[1], ARGV[1], '~away')
return 1
"""

# A resume's credentials: the peer, its user, its current secret.
_CREDENTIALS = """
local member = redis.call('HGET', KEYS[1], ARGV[2])
if not member or redis.call('HGET', KEYS[4], ARGV[2]) ~= ARGV[4] then return {-1} end
if cjson.decode(member)['user_id'] ~= ARGV[3] then return {-2} end
"""

# ARGV: publish (unused), peer, user, secret digest -> {1} when RESUME would
# take these credentials, {-1} or {-2} as RESUME refuses them; reads only.
MAY_RESUME = _CREDENTIALS + "return {1}\n"

# ARGV: publish, peer, user, resume_hash, new_owner, new_resume_hash, force, mailbox key
# -> {-1} unknown peer or wrong secret, {-2} another user's, {-3, owner} busy
#    (still served or flushing; retry, or force), or
#    {1, members (flat), media (flat), mailbox frames, previous owner}
RESUME = (
    _CREDENTIALS
    + """
local owner = redis.call('HGET', KEYS[2], ARGV[2])
if owner ~= '~away' and ARGV[7] ~= '1' then return {-3, owner} end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[5])
redis.call('HSET', KEYS[4], ARGV[2], ARGV[6])
redis.call('ZREM', KEYS[5], ARGV[2])
local mailbox = redis.call('LRANGE', ARGV[8], 0, -1)
redis.call('DEL', ARGV[8])
return {1, redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[3]), mailbox, owner}
"""
)

# ARGV: publish, to, sender, frame, mailbox prefix, ttl_ms, max_len, ingress stamp
# -> -1 when ``to`` is not in the room, 0 when mailed, else PUBLISH's count
RELAY_TO = (
    _LIB
    + """
local owner = redis.call('HGET', KEYS[2], ARGV[2])
if not owner then return -1 end
if string.sub(owner, 1, 1) == '~' then
  mail(ARGV[5] .. ARGV[2], ARGV[4], tonumber(ARGV[6]), tonumber(ARGV[7]))
  return 0
end
local nl = '\\n'
return redis.call(ARGV[1], KEYS[6], ARGV[8] .. nl .. ARGV[2] .. nl .. ARGV[3] .. nl .. ARGV[4])
"""
)

# ARGV: publish, sender, frame, mailbox prefix, ttl_ms, max_len, ingress stamp
BROADCAST = (
    _LIB
    + """
return broadcast(ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6]),
                 ARGV[7])
"""
)

# ARGV: publish, sender, frame, mailbox prefix, ttl_ms, max_len, ingress stamp, media_json
SET_MEDIA = (
    _LIB
    + """
if redis.call('HEXISTS', KEYS[1], ARGV[2]) == 1 then
  redis.call('HSET', KEYS[3], ARGV[2], ARGV[8])
end
return broadcast(ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6]),
                 ARGV[7])
"""
)

# ARGV: publish, peer, user-left envelope, kick envelope, mailbox key,
#       participant.left event (6-9), room.finished event (10-13)
# A connected peer is told to close (its session then leaves): 1; a peer
# waiting to resume is removed at once: 2; 0 not a member.
KICK = (
    _LIB
    + """
local owner = redis.call('HGET', KEYS[2], ARGV[2])
if not owner then return 0 end
if string.sub(owner, 1, 1) == '~' then
  forget(ARGV[2], ARGV[5])
  redis.call(ARGV[1], KEYS[6], ARGV[3])
  emit(6)
  if redis.call('HLEN', KEYS[1]) == 0 then emit(10) end
  return 2
end
redis.call(ARGV[1], KEYS[6], ARGV[4])
return 1
"""
)

# ARGV: publish, peer, user-left envelope, mailbox key,
#       participant.left event (5-8), room.finished event (9-12)
# -> 1 when the peer's resume deadline had passed and it was removed
EXPIRE_AWAY = (
    _LIB
    + """
local deadline = redis.call('ZSCORE', KEYS[5], ARGV[2])
if not deadline or tonumber(deadline) > now_ms() then return 0 end
forget(ARGV[2], ARGV[4])
redis.call(ARGV[1], KEYS[6], ARGV[3])
emit(5)
if redis.call('HLEN', KEYS[1]) == 0 then emit(9) end
return 1
"""
)

# KEYS: members, media  -> {members (flat), media (flat)}
PARTICIPANTS = """
return {redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2])}
"""

# KEYS: instances; ARGV: instance id, presence_ttl_ms
# Each instance scores itself with the moment it counts as dead (its own TTL
# from now, by the Redis clock), so instances with different TTLs or clocks
# never misjudge each other. -> ids of instances past that moment
HEARTBEAT = (
    _LIB
    + """
local now = now_ms()
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
"""
)

# KEYS: the away index; ARGV: limit -> entries whose resume deadline passed
DUE_AWAY = (
    _LIB
    + """
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms(), 'LIMIT', 0, tonumber(ARGV[1]))
"""
)

# KEYS: the away index; ARGV: entry -> removes it only if it is still due
# (a peer that went away again since has a later deadline and stays).
DROP_DUE = (
    _LIB
    + """
local deadline = redis.call('ZSCORE', KEYS[1], ARGV[1])
if deadline and tonumber(deadline) <= now_ms() then redis.call('ZREM', KEYS[1], ARGV[1]) end
return 1
"""
)
