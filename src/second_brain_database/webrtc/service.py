"""The signaling service's runtime: settings, tokens, broker and sessions.

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

from second_brain_database.auth.throttle import LoginThrottle
from second_brain_database.auth.tokens import TokenService
from second_brain_database.auth.users import UserStore
from second_brain_database.config import Settings, get_settings
from second_brain_database.webrtc import metrics
from second_brain_database.webrtc.admission import Admission
from second_brain_database.webrtc.broker import Broker, create_broker
from second_brain_database.webrtc.connection_manager import ConnectionManager
from second_brain_database.webrtc.schemas import CloseCode

logger = logging.getLogger(__name__)


@dataclass
class SignalingService:
    settings: Settings
    tokens: TokenService
    users: UserStore
    broker: Broker
    manager: ConnectionManager
    admission: Admission
    login_throttle: LoginThrottle
    draining: bool = False
    _metrics_flusher: asyncio.Task[None] | None = None

    @classmethod
    def build(cls, settings: Settings) -> SignalingService:
        tokens = TokenService(settings)
        broker = create_broker(settings)
        return cls(
            settings=settings,
            tokens=tokens,
            users=UserStore(settings.database_path),
            broker=broker,
            manager=ConnectionManager(broker, tokens, settings),
            admission=Admission.build(settings),
            login_throttle=LoginThrottle(settings.login_attempts_per_minute),
        )

    async def start(self) -> None:
        await self.broker.connect()
        await self.tokens.start()
        await self.admission.start()
        self._metrics_flusher = asyncio.create_task(
            metrics.flush_periodically(), name="sbd-metrics-flush"
        )
        logger.info(
            "signaling service started (instance %s, broker %s)",
            self.settings.instance_id,
            type(self.broker).__name__,
        )

    async def stop(self) -> None:
        self.draining = True
        await self.manager.close_all(CloseCode.GOING_AWAY, "server shutting down")
        await self.broker.disconnect()
        await self.admission.aclose()
        await self.tokens.aclose()
        if self._metrics_flusher is not None:
            self._metrics_flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._metrics_flusher
        metrics.flush()


@asynccontextmanager
async def signaling_lifespan(app: FastAPI) -> AsyncIterator[None]:
    service = SignalingService.build(get_settings())
    app.state.signaling = service
    await service.start()
    try:
        yield
    finally:
        await service.stop()
