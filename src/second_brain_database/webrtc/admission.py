"""What admission needs besides tokens: tickets and the abuse limits.

Built once per process next to the broker; with ``SBD_REDIS_URL`` the ticket
store and the per-user connection cap share one Redis client of their own
(the broker's connections stay the broker's), so both hold across instances.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from second_brain_database.auth.tickets import MemoryTicketStore, RedisTicketStore, TicketStore
from second_brain_database.config import Settings
from second_brain_database.webrtc.limits import (
    ConnectionCap,
    HandshakeLimiter,
    MemoryConnectionCap,
    RedisConnectionCap,
)


@dataclass
class Admission:
    tickets: TicketStore
    handshakes: HandshakeLimiter
    connections: ConnectionCap
    redis: Redis | None = None

    @classmethod
    def build(cls, settings: Settings) -> Admission:
        handshakes = HandshakeLimiter(settings.handshake_rate_per_s, settings.handshake_burst)
        url = settings.redis_url
        if url is None or url.startswith("memory://"):
            return cls(
                MemoryTicketStore(),
                handshakes,
                MemoryConnectionCap(settings.max_connections_per_user),
            )
        redis = Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
        cap = RedisConnectionCap(
            redis,
            settings.max_connections_per_user,
            instance_id=settings.instance_id,
            ttl_s=settings.presence_ttl,
        )
        return cls(RedisTicketStore(redis), handshakes, cap, redis)

    async def start(self) -> None:
        await self.connections.start()

    async def aclose(self) -> None:
        await self.connections.aclose()
        if self.redis is not None:
            await self.redis.aclose()
