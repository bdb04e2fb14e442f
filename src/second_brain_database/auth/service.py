"""Who may connect: access tokens, stored logins, WebSocket tickets and the
login throttle, built once per process.

The signaling service (``webrtc/``) builds it and puts it in
``app.state.auth``, where the login route finds it; nothing here knows about
signaling.
"""

from __future__ import annotations

from dataclasses import dataclass

from second_brain_database.auth.tickets import MemoryTicketStore, RedisTicketStore, TicketStore
from second_brain_database.auth.tokens import TokenService
from second_brain_database.auth.users import UserStore
from second_brain_database.config import Settings
from second_brain_database.limits.login import LoginThrottle
from second_brain_database.redis_clients import RedisClients


@dataclass
class AuthService:
    tokens: TokenService
    users: UserStore
    tickets: TicketStore
    login_throttle: LoginThrottle

    @classmethod
    def build(cls, settings: Settings, redis: RedisClients | None) -> AuthService:
        """With Redis, tickets and the login throttle hold across instances."""
        client = redis.client if redis is not None else None
        return cls(
            tokens=TokenService(settings),
            users=UserStore(settings.database_path),
            tickets=RedisTicketStore(client) if client is not None else MemoryTicketStore(),
            login_throttle=LoginThrottle(settings.login_attempts_per_minute, client),
        )

    async def start(self) -> None:
        await self.tokens.start()

    async def aclose(self) -> None:
        await self.tokens.aclose()
