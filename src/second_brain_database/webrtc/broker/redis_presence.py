"""Presence on Redis: what happens to peers nobody serves any more.

Two background tasks keep the instance honest:

- the heartbeat scores this instance in ``sbd:instances`` by the Redis
  clock and reaps the peers of instances silent for ``SBD_PRESENCE_TTL``
  (each instance lists the peers it serves in ``sbd:instance:{I}:peers``);
- the expirer announces ``user-left`` for peers whose resume window passed
  (``sbd:away``, scored by deadline).

Entries of those sets are JSON arrays (:func:`instance_entry`,
:func:`away_entry`): no separator a user id could contain.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

import orjson
from redis.exceptions import RedisError

from second_brain_database.redis_clients import RedisClients
from second_brain_database.webhooks.events import LeaveReason
from second_brain_database.webrtc.broker.model import BrokerUnavailable, Member
from second_brain_database.webrtc.broker.redis_keys import (
    AWAY_INDEX_KEY,
    INSTANCES_KEY,
    instance_peers_key,
    reap_claim_key,
)

if TYPE_CHECKING:
    from second_brain_database.webrtc.broker.redis_rooms import RedisRoomStore

logger = logging.getLogger(__name__)

_EXPIRY_INTERVAL_S = 0.25


def instance_entry(room_id: str, member: Member, owner: str) -> str:
    """An instance's record of one peer it serves."""
    return orjson.dumps([room_id, member.peer_id, member.user_id, owner]).decode()


def away_entry(room_id: str, member: Member) -> str:
    """A peer waiting to resume, in ``sbd:away``."""
    return orjson.dumps([room_id, member.peer_id, member.user_id]).decode()


def _fields(entry: bytes | str, count: int) -> list[str]:
    fields = orjson.loads(entry)
    if not (isinstance(fields, list) and len(fields) == count):
        raise ValueError(f"not a presence entry: {entry!r}")
    return [str(field) for field in fields]


class RedisPresence:
    def __init__(
        self, store: RedisRoomStore, redis: RedisClients, instance_id: str, presence_ttl: float
    ) -> None:
        self._store = store
        self._redis = redis.client
        self._instance_id = instance_id
        self._presence_ttl = presence_ttl
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._heartbeat_forever(), name="sbd-redis-heartbeat"),
            asyncio.create_task(self._expire_forever(), name="sbd-redis-expirer"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _heartbeat_forever(self) -> None:
        interval = max(self._presence_ttl / 3, 0.2)
        ttl_ms = int(self._presence_ttl * 1000)
        while True:
            try:
                dead = await self._store.run(
                    "HEARTBEAT", [INSTANCES_KEY], [self._instance_id, ttl_ms]
                )
                for instance in dead:
                    await self.reap(instance.decode() if isinstance(instance, bytes) else instance)
            except (RedisError, OSError, BrokerUnavailable) as exc:
                logger.warning("presence heartbeat failed: %s", exc)
            await asyncio.sleep(interval)

    async def reap(self, instance: str) -> None:
        """Remove the peers of a dead instance, announcing each as gone."""
        if instance == self._instance_id:
            return
        claim = reap_claim_key(instance)
        if not await self._redis.set(claim, self._instance_id, nx=True, ex=60):
            return
        entries = await self._redis.smembers(instance_peers_key(instance))
        for entry in entries:
            room_id, peer_id, user_id, owner = _fields(entry, 4)
            # The name is not needed to announce a departure.
            member = Member(peer_id, user_id, user_id)
            await self._store.leave_as(instance, room_id, member, owner, LeaveReason.REAPED)
        await self._redis.delete(instance_peers_key(instance))
        await self._redis.zrem(INSTANCES_KEY, instance)
        # The claim only keeps reapers from racing; should the instance come
        # back and die again, it must be reapable at once.
        await self._redis.delete(claim)
        logger.warning("reaped instance %s: %d peers", instance, len(entries))

    async def _expire_forever(self) -> None:
        interval = min(_EXPIRY_INTERVAL_S, max(self._store.resume_ttl / 4, 0.05))
        while True:
            try:
                await self.expire_due()
            except (RedisError, OSError, BrokerUnavailable) as exc:
                logger.warning("resume expiry pass failed: %s", exc)
            await asyncio.sleep(interval)

    async def expire_due(self) -> None:
        """Remove the peers whose resume window has passed."""
        for entry in await self._store.run("DUE_AWAY", [AWAY_INDEX_KEY], [100]):
            room_id, peer_id, user_id = _fields(entry, 3)
            await self._store.expire_away(room_id, peer_id, user_id)
            await self._store.run("DROP_DUE", [AWAY_INDEX_KEY], [entry])
