"""Abuse limits checked when a WebSocket is admitted (docs/security.md).

- :class:`HandshakeLimiter`: a token bucket per client address, per instance,
  consulted before anything costly (token signatures, room state). It keys
  on the address uvicorn reports, which behind a proxy is the client only if
  ``--forwarded-allow-ips`` trusts that proxy; IPv6 clients are keyed by
  their /64, the smallest block a single host is routinely given.
- :class:`ConnectionCap`: concurrent connections per user, counted across
  instances. With Redis each connection holds a lease, a member of the
  sorted set ``sbd:conns:{hash(user)}`` scored by its expiry on the Redis
  clock; each instance renews its own leases every ``ttl / 3`` seconds, so
  the leases of an instance that dies without releasing them lapse within
  ``ttl`` (``SBD_PRESENCE_TTL``) and stop counting. Acquiring prunes lapsed
  leases and counts the rest in one script, so two instances cannot both
  take the last slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import logging
import secrets
from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from second_brain_database.webrtc.ratelimit import TokenBucket

logger = logging.getLogger(__name__)

# Addresses tracked at once; the least recently seen is forgotten first (it
# then starts again with a full bucket, which is the lenient direction).
MAX_TRACKED_CLIENTS = 10_000


def client_key(host: str | None) -> str:
    """The rate-limit key of a client address: IPv4 as is, IPv6 by /64."""
    if not host:
        return "?"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class HandshakeLimiter:
    def __init__(self, rate_per_s: float, burst: int) -> None:
        self._rate = rate_per_s
        self._burst = burst
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self._rate > 0

    def allow(self, host: str | None) -> bool:
        if not self.enabled:
            return True
        key = client_key(host)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self._rate, self._burst)
            if len(self._buckets) > MAX_TRACKED_CLIENTS:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket.allow()


@dataclass(frozen=True, slots=True)
class Lease:
    """One admitted connection's slot in its user's count."""

    user_id: str
    lease_id: str


class ConnectionCap(ABC):
    """``acquire`` on join (None: the user is at the cap), ``release`` on leave."""

    def __init__(self, limit: int) -> None:
        self.limit = limit

    async def acquire(self, user_id: str) -> Lease | None:
        lease = Lease(user_id, secrets.token_hex(8))
        if self.limit <= 0:
            return lease
        return lease if await self._take(lease) else None

    async def release(self, lease: Lease) -> None:
        if self.limit > 0:
            await self._give_back(lease)

    async def start(self) -> None:
        """Begin background work (lease renewal)."""
        return None

    async def aclose(self) -> None:
        """Stop background work."""
        return None

    @abstractmethod
    async def _take(self, lease: Lease) -> bool: ...

    @abstractmethod
    async def _give_back(self, lease: Lease) -> None: ...


class MemoryConnectionCap(ConnectionCap):
    """One instance: a count per user."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self._counts: dict[str, int] = {}

    async def _take(self, lease: Lease) -> bool:
        held = self._counts.get(lease.user_id, 0)
        if held >= self.limit:
            return False
        self._counts[lease.user_id] = held + 1
        return True

    async def _give_back(self, lease: Lease) -> None:
        left = self._counts.get(lease.user_id, 0) - 1
        if left > 0:
            self._counts[lease.user_id] = left
        else:
            self._counts.pop(lease.user_id, None)


_NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""
# KEYS[1] the user's lease set; ARGV: member, limit, ttl ms.
_ACQUIRE = (
    _NOW_MS
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""
)
# Pushes a live lease's expiry forward; a lease already pruned stays gone.
_RENEW = (
    _NOW_MS
    + """
if redis.call('ZADD', KEYS[1], 'XX', 'CH', now + tonumber(ARGV[2]), ARGV[1]) == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 1
"""
)


def lease_key(user_id: str) -> str:
    # Hashed: a user id is whatever the token's ``sub`` says.
    return f"sbd:conns:{{{hashlib.sha256(user_id.encode()).hexdigest()[:32]}}}"


class RedisConnectionCap(ConnectionCap):
    def __init__(self, redis: Redis, limit: int, *, instance_id: str, ttl_s: float) -> None:
        super().__init__(limit)
        self._redis = redis
        self._instance_id = instance_id
        self._ttl_ms = max(int(ttl_s * 1000), 1000)
        self._acquire = redis.register_script(_ACQUIRE)
        self._renew = redis.register_script(_RENEW)
        self._local: set[Lease] = set()
        self._renewer: asyncio.Task[None] | None = None

    def _member(self, lease: Lease) -> str:
        return f"{self._instance_id}:{lease.lease_id}"

    async def _take(self, lease: Lease) -> bool:
        try:
            taken = await self._acquire(
                keys=[lease_key(lease.user_id)],
                args=[self._member(lease), self.limit, self._ttl_ms],
            )
        except RedisError:
            # Fail open: the cap is an abuse limit, and the broker decides
            # on its own whether a session can run without Redis.
            logger.warning("connection cap not enforced: Redis unavailable")
            taken = 1
        if taken:
            self._local.add(lease)
        return bool(taken)

    async def _give_back(self, lease: Lease) -> None:
        self._local.discard(lease)
        with contextlib.suppress(RedisError):
            await self._redis.zrem(lease_key(lease.user_id), self._member(lease))

    async def renew(self) -> None:
        """Extend every local lease once (the renewer's tick)."""
        if not self._local:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for lease in list(self._local):
                await self._renew(
                    keys=[lease_key(lease.user_id)],
                    args=[self._member(lease), self._ttl_ms],
                    client=pipe,
                )
            await pipe.execute()

    async def start(self) -> None:
        if self.limit > 0 and self._renewer is None:
            self._renewer = asyncio.create_task(self._renew_forever(), name="sbd-lease-renewer")

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self._ttl_ms / 3000)
            try:
                await self.renew()
            except RedisError:
                logger.warning("could not renew connection leases: Redis unavailable")

    async def aclose(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
            self._renewer = None
