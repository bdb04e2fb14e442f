"""Lua scripts that keep each room operation atomic and one round trip.

Every key a script touches is named in KEYS and carries the room's hash tag,
so the scripts run unchanged on a Redis Cluster shard. ARGV[1] is always the
publish command (``PUBLISH``, or ``SPUBLISH`` for sharded Pub/Sub).
"""

from __future__ import annotations

# KEYS: members, owners, media, channel
# ARGV: publish, peer_id, member_json, instance_id, capacity, envelope
# -> false when full, else {members (flat), media (flat)} from before the join
JOIN = """
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[5]) then return false end
local members = redis.call('HGETALL', KEYS[1])
local media = redis.call('HGETALL', KEYS[3])
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[4])
redis.call(ARGV[1], KEYS[4], ARGV[6])
return {members, media}
"""

# KEYS: members, owners, media, channel
# ARGV: publish, peer_id, instance_id, envelope
# Removes the peer only while ``instance_id`` still owns it, so a late
# cleanup (or a reaper) never removes a peer that moved elsewhere.
LEAVE = """
if redis.call('HGET', KEYS[2], ARGV[2]) ~= ARGV[3] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[2])
redis.call('HDEL', KEYS[2], ARGV[2])
redis.call('HDEL', KEYS[3], ARGV[2])
redis.call(ARGV[1], KEYS[4], ARGV[4])
return 1
"""

# KEYS: members, channel
# ARGV: publish, to, envelope  -> -1 when ``to`` is not a member
RELAY_TO = """
if redis.call('HEXISTS', KEYS[1], ARGV[2]) == 0 then return -1 end
return redis.call(ARGV[1], KEYS[2], ARGV[3])
"""

# KEYS: members, media, channel
# ARGV: publish, peer_id, media_json, envelope
SET_MEDIA = """
if redis.call('HEXISTS', KEYS[1], ARGV[2]) == 1 then
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
end
return redis.call(ARGV[1], KEYS[3], ARGV[4])
"""

# KEYS: members, media  -> {members (flat), media (flat)}
PARTICIPANTS = """
return {redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2])}
"""

# KEYS: instances
# ARGV: instance_id, presence_ttl_ms
# Scores come from the Redis clock, so instance clocks may disagree.
# -> ids of instances whose last heartbeat is older than the TTL
HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
"""
