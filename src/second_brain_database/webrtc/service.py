"""The signaling service's runtime: settings, tokens, pub/sub, room store and sessions.

``signaling_lifespan`` starts and stops it; a host application that mounts
the webrtc router into its own FastAPI app uses it as (or inside) its own
lifespan, see docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI

from second_brain_database.auth.service import AuthService
from second_brain_database.config import Settings, get_settings
from second_brain_database.limits.admission import Admission
from second_brain_database.redis_clients import RedisClients, connect_redis
from second_brain_database.webhooks.delivery import WebhookDelivery
from second_brain_database.webhooks.memory_outbox import MemoryOutbox
from second_brain_database.webhooks.redis_outbox import RedisOutbox
from second_brain_database.webrtc import metrics
from second_brain_database.webrtc.broker import PubSub, RoomStore, create_backends
from second_brain_database.webrtc.calls.memory_calls import MemoryCallStore
from second_brain_database.webrtc.calls.redis_calls import RedisCallStore
from second_brain_database.webrtc.calls.service import CallService
from second_brain_database.webrtc.calls.store import CallStore
from second_brain_database.webrtc.calls.user_sockets import UserSockets
from second_brain_database.webrtc.connection_manager import ConnectionManager
from second_brain_database.webrtc.schemas import CloseCode

logger = logging.getLogger(__name__)


@dataclass
class SignalingService:
    settings: Settings
    auth: AuthService
    redis: RedisClients | None
    pubsub: PubSub
    rooms: RoomStore
    manager: ConnectionManager
    calls: CallService
    user_sockets: UserSockets
    admission: Admission
    webhooks: WebhookDelivery | None
    draining: bool = False
    _metrics_flusher: asyncio.Task[None] | None = None

    @classmethod
    def build(cls, settings: Settings, redis: RedisClients | None) -> SignalingService:
        """Everything runs on ``redis`` (from :func:`connect_redis`) where there is one."""
        auth = AuthService.build(settings, redis)
        pubsub, rooms = create_backends(settings, redis)
        # Calls queue their webhook events in the rooms' outbox, by call id.
        outbox = rooms.outbox
        store: CallStore
        if redis is not None:
            store = RedisCallStore(
                redis.client, outbox if isinstance(outbox, RedisOutbox) else None
            )
        else:
            store = MemoryCallStore(outbox if isinstance(outbox, MemoryOutbox) else None)
        calls = CallService(store, pubsub, rooms, auth.tickets, settings)
        manager = ConnectionManager(pubsub, rooms, calls, auth.tokens, settings)
        return cls(
            settings=settings,
            auth=auth,
            redis=redis,
            pubsub=pubsub,
            rooms=rooms,
            manager=manager,
            calls=calls,
            user_sockets=UserSockets(calls, manager.runner, settings),
            admission=Admission.build(settings, redis),
            webhooks=(
                WebhookDelivery(rooms.outbox, settings, claim_ttl=settings.presence_ttl)
                if rooms.outbox is not None
                else None
            ),
        )

    async def start(self) -> None:
        await self.rooms.connect()
        await self.pubsub.connect()
        await self.auth.start()
        await self.admission.start()
        if self.webhooks is not None:
            self.webhooks.start()
        self.calls.start()
        self._metrics_flusher = asyncio.create_task(
            metrics.flush_periodically(), name="sbd-metrics-flush"
        )
        logger.info(
            "signaling service started (instance %s, %s, %s)",
            self.settings.instance_id,
            type(self.pubsub).__name__,
            type(self.rooms).__name__,
        )

    async def ready(self) -> bool:
        """Whether this instance can serve: not draining, backends reachable."""
        if self.draining:
            return False
        return await self.pubsub.ready() and await self.rooms.ready()

    async def stop(self) -> None:
        self.draining = True
        await self.manager.close_all(CloseCode.GOING_AWAY, "server shutting down")
        await self.user_sockets.close_all(CloseCode.GOING_AWAY, "server shutting down")
        await self.calls.stop()
        if self.webhooks is not None:
            # Events not yet sent stay in Redis for another instance (or
            # are lost with the embedded broker, as the contract says).
            await self.webhooks.stop()
        await self.pubsub.disconnect()
        await self.rooms.disconnect()
        await self.admission.aclose()
        await self.auth.aclose()
        if self.redis is not None:
            await self.redis.aclose()
        if self._metrics_flusher is not None:
            self._metrics_flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._metrics_flusher
        metrics.flush()


@asynccontextmanager
async def signaling_lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    service = SignalingService.build(settings, await connect_redis(settings))
    app.state.signaling = service
    app.state.auth = service.auth
    await service.start()
    try:
        yield
    finally:
        await service.stop()
