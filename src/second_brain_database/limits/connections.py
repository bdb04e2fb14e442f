"""Concurrent connections per user, counted across instances.

With Redis each connection holds a lease, a member of the sorted set
``sbd:conns:{hash(user)}`` scored by its expiry on the Redis clock; each
instance renews its own leases every ``ttl / 3`` seconds, so the leases of an
instance that dies without releasing them lapse within ``ttl``
(``SBD_PRESENCE_TTL``) and stop counting. Acquiring prunes lapsed leases and
counts the rest in one script on that one key, so two instances cannot both
take the last slot, on a Cluster too.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
from abc import ABC, abstractmethod
from dataclasses import dataclass

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import NoScriptError, RedisError

logger = logging.getLogger(__name__)


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
    def __init__(
        self, redis: Redis | RedisCluster, limit: int, *, instance_id: str, ttl_s: float
    ) -> None:
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
        try:
            await self._renew_all()
        except NoScriptError:
            # A Cluster pipeline does not load scripts, and a Redis that
            # restarted or failed over has none: load it, then once again.
            await self._redis.script_load(_RENEW)
            await self._renew_all()

    async def _renew_all(self) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            for lease in list(self._local):
                await self._renew(
                    keys=[lease_key(lease.user_id)],
                    args=[self._member(lease), self._ttl_ms],
                    # redis-py queues on a ClusterPipeline too; its hint omits that.
                    client=pipe,  # type: ignore[arg-type]
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
