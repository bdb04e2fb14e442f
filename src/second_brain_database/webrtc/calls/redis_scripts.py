"""Lua for the Redis call store. Each script touches one key (or the keys of
one user, under one hash tag), so each runs on one Cluster shard.

Keys (redis_keys.py):

- ``sbd:call:{<call_id>}``: the call, a hash (:meth:`Call.fields`); lives
  until ``ENDED_KEPT_MS`` after its deadline;
- ``sbd:user:{<digest>}:ringing`` / ``:outgoing``: the user's incoming /
  outgoing ringing calls, sorted sets scored by deadline (ms);
- ``sbd:user:{<digest>}:devices``: the user's live user sockets, scored by
  when they stop counting (ms), refreshed while they live;
- ``sbd:calls:due``: every ringing call, scored by deadline (ms).
"""

from __future__ import annotations

# The ringing -> result transition, the only one: KEYS[1] the call, KEYS[2]
# its webhook queue (a stream under the call's hash tag); ARGV[1] the result,
# ARGV[2] a field that must hold ARGV[3] ('' for none: a timeout), ARGV[4]
# how long the ended call is kept (ms), ARGV[5..8] the call.ended event (id,
# type, at, body; '' without webhooks). Returns the call as it was (a flat
# HGETALL list) to the one caller that ended it, else nil.
FINISH = """
if redis.call('HGET', KEYS[1], 'state') ~= 'ringing' then
  return false
end
if ARGV[2] ~= '' and redis.call('HGET', KEYS[1], ARGV[2]) ~= ARGV[3] then
  return false
end
local call = redis.call('HGETALL', KEYS[1])
redis.call('HSET', KEYS[1], 'state', ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[4]))
if ARGV[5] ~= '' then
  redis.call('XADD', KEYS[2], '*', 'id', ARGV[5], 'type', ARGV[6], 'at', ARGV[7], 'body', ARGV[8])
end
return call
"""

# Count a call against its caller's ringing calls: KEYS[1] the caller's
# outgoing set; ARGV[1] the most, ARGV[2] now (ms), ARGV[3] the call's
# deadline (ms), ARGV[4] its id. 0 when the caller has ARGV[1] ringing.
COUNT_OUTGOING = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
redis.call('PEXPIREAT', KEYS[1], ARGV[3])
return 1
"""
