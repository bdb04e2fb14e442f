"""Password guesses, rationed per client address and per username.

Token buckets of ``per_minute`` attempts (a burst of as many) per address
and per username. With Redis each bucket is one hash, ``sbd:login:{hash}``,
updated by one script on the Redis clock, so the limit holds across
instances: spreading guesses over instances behind a load balancer does not
multiply them. When Redis cannot be reached, the buckets of this process
ration the attempts instead. A throttled username delays its owner too; that
is the price of making online guessing slow (docs/security.md).
"""

from __future__ import annotations

import hashlib
import logging
import math

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import RedisError

from second_brain_database.limits.handshakes import client_key
from second_brain_database.limits.token_bucket import TokenBuckets

logger = logging.getLogger(__name__)

# KEYS[1] the bucket; ARGV: tokens per ms, burst, ms until a bucket is full again.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local burst = tonumber(ARGV[2])
local held = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')
local tokens = tonumber(held[1]) or burst
local stamp = tonumber(held[2]) or now
tokens = math.min(burst, tokens + math.max(now - stamp, 0) * tonumber(ARGV[1]))
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'stamp', now)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return allowed
"""


def username_key(username: str) -> str:
    """A fixed-size key for a username: never its text, whatever its length."""
    digest = hashlib.blake2b(username.casefold().encode(errors="replace"), digest_size=16)
    return f"user:{digest.hexdigest()}"


def bucket_key(key: str) -> str:
    # Hashed: usernames are whatever a client sends.
    return f"sbd:login:{{{hashlib.sha256(key.encode()).hexdigest()[:32]}}}"


class LoginThrottle:
    def __init__(self, per_minute: float, redis: Redis | RedisCluster | None = None) -> None:
        self._rate_per_ms = per_minute / 60_000
        self._burst = max(int(per_minute), 1)
        # A bucket left alone this long is full again: Redis may forget it.
        self._refill_ms = math.ceil(self._burst / self._rate_per_ms)
        self._local = TokenBuckets(per_minute / 60, self._burst)
        self._take_script = redis.register_script(_TAKE) if redis is not None else None

    async def allow(self, address: str | None, username: str) -> bool:
        # The address bucket first: a throttled address adds no username key.
        if not await self._take(f"addr:{client_key(address)}"):
            return False
        # The address paid for the attempt too, so neither bucket can be
        # drained through the other.
        return await self._take(username_key(username))

    async def _take(self, key: str) -> bool:
        if self._take_script is None:
            return self._local.allow(key)
        try:
            allowed = await self._take_script(
                keys=[bucket_key(key)], args=[self._rate_per_ms, self._burst, self._refill_ms]
            )
        except RedisError:
            logger.warning("login attempts rationed per instance: Redis unavailable")
            return self._local.allow(key)
        return bool(allowed)
