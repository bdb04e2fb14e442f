"""The abuse limits a WebSocket meets before it is accepted.

Built once per process; with Redis the per-user connection cap uses the
shared client of :mod:`second_brain_database.redis_clients`, so it holds
across instances. (Tickets, the other thing checked at admission, are
credentials: :mod:`second_brain_database.auth.tickets`.)
"""

from __future__ import annotations

from dataclasses import dataclass

from second_brain_database.config import Settings
from second_brain_database.limits.connections import (
    ConnectionCap,
    MemoryConnectionCap,
    RedisConnectionCap,
)
from second_brain_database.limits.handshakes import HandshakeLimiter
from second_brain_database.redis_clients import RedisClients


@dataclass
class Admission:
    handshakes: HandshakeLimiter
    connections: ConnectionCap

    @classmethod
    def build(cls, settings: Settings, redis: RedisClients | None) -> Admission:
        handshakes = HandshakeLimiter(settings.handshake_rate_per_s, settings.handshake_burst)
        if redis is None:
            return cls(handshakes, MemoryConnectionCap(settings.max_connections_per_user))
        cap = RedisConnectionCap(
            redis.client,
            settings.max_connections_per_user,
            instance_id=settings.instance_id,
            ttl_s=settings.presence_ttl,
        )
        return cls(handshakes, cap)

    async def start(self) -> None:
        await self.connections.start()

    async def aclose(self) -> None:
        await self.connections.aclose()
