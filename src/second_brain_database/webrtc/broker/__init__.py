"""Brokers: where room state lives and how envelopes reach every instance.

The backend is chosen by URL, as in encode/broadcaster: no URL (or
``memory://``) gives the embedded :class:`MemoryBroker`; ``redis://`` or
``rediss://`` gives :class:`RedisBroker`.
"""

from __future__ import annotations

from second_brain_database.config import Settings
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


def create_broker(settings: Settings) -> Broker:
    url = settings.redis_url
    if url is None or url.startswith("memory://"):
        return MemoryBroker(resume_ttl=settings.resume_ttl)
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisBroker(
            url,
            instance_id=settings.instance_id,
            presence_ttl=settings.presence_ttl,
            resume_ttl=settings.resume_ttl,
        )
    raise ValueError(f"unsupported SBD_REDIS_URL scheme: {url.split(':', 1)[0]!r}")
