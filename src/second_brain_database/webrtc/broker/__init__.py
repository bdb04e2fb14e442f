"""Brokers: how envelopes reach every instance (:class:`PubSub`) and where
room state lives (:class:`RoomStore`).

Without Redis, the embedded :class:`MemoryPubSub` and :class:`MemoryRoomStore`;
with Redis (a URL or Sentinels, see :mod:`second_brain_database.redis_clients`),
:class:`RedisPubSub` and :class:`RedisRoomStore`.
"""

from __future__ import annotations

from second_brain_database.config import Settings
from second_brain_database.redis_clients import RedisClients
from second_brain_database.webhooks.memory_outbox import MemoryOutbox
from second_brain_database.webrtc.broker.memory_pubsub import MemoryPubSub
from second_brain_database.webrtc.broker.memory_rooms import MemoryRoomStore
from second_brain_database.webrtc.broker.model import (
    BrokerUnavailable,
    Envelope,
    JoinRefused,
    Member,
    PolicyForbidden,
    ResumeBusy,
    Resumed,
    ResumeRefused,
    RoomFull,
    RoomPolicy,
)
from second_brain_database.webrtc.broker.pubsub import PubSub
from second_brain_database.webrtc.broker.redis_pubsub import RedisPubSub
from second_brain_database.webrtc.broker.redis_rooms import RedisRoomStore
from second_brain_database.webrtc.broker.room_store import RoomStore

__all__ = [
    "BrokerUnavailable",
    "Envelope",
    "JoinRefused",
    "Member",
    "MemoryPubSub",
    "MemoryRoomStore",
    "PolicyForbidden",
    "PubSub",
    "RedisPubSub",
    "RedisRoomStore",
    "ResumeBusy",
    "ResumeRefused",
    "Resumed",
    "RoomFull",
    "RoomPolicy",
    "RoomStore",
    "create_backends",
]


def create_backends(settings: Settings, redis: RedisClients | None) -> tuple[PubSub, RoomStore]:
    """The pub/sub and room store; the store writes webhook events (to its
    ``outbox``) when ``SBD_WEBHOOK_URLS`` is set."""
    webhooks = bool(settings.webhook_urls)
    if redis is None:
        pubsub = MemoryPubSub()
        outbox = MemoryOutbox() if webhooks else None
        return pubsub, MemoryRoomStore(pubsub, resume_ttl=settings.resume_ttl, outbox=outbox)
    store = RedisRoomStore(
        redis,
        instance_id=settings.instance_id,
        presence_ttl=settings.presence_ttl,
        resume_ttl=settings.resume_ttl,
        webhooks=webhooks,
    )
    return RedisPubSub(redis), store
