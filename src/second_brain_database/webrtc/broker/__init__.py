"""Brokers: where room state lives and how envelopes reach every instance.

Without Redis, the embedded :class:`MemoryBroker`; with Redis (a URL or
Sentinels, see :mod:`second_brain_database.redis_clients`), :class:`RedisBroker`.
"""

from __future__ import annotations

from second_brain_database.config import Settings
from second_brain_database.redis_clients import RedisClients
from second_brain_database.webrtc.broker.base import (
    Broker,
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
from second_brain_database.webrtc.broker.memory import MemoryBroker
from second_brain_database.webrtc.broker.redis import RedisBroker

__all__ = [
    "Broker",
    "BrokerUnavailable",
    "Envelope",
    "JoinRefused",
    "Member",
    "MemoryBroker",
    "PolicyForbidden",
    "RedisBroker",
    "ResumeBusy",
    "ResumeRefused",
    "Resumed",
    "RoomFull",
    "RoomPolicy",
    "create_broker",
]


def create_broker(settings: Settings, redis: RedisClients | None) -> Broker:
    if redis is None:
        return MemoryBroker(resume_ttl=settings.resume_ttl)
    return RedisBroker(
        redis,
        instance_id=settings.instance_id,
        presence_ttl=settings.presence_ttl,
        resume_ttl=settings.resume_ttl,
    )
