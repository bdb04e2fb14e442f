"""A Pub/Sub connection to one Redis node, kept alive whatever happens to it.

The listener reconnects with backoff and resubscribes every channel it
carries; a watchdog pings it and replaces it when it stops answering, so an
instance never stays silently deaf (``CLIENT KILL TYPE pubsub``, an
output-buffer disconnect, a half-open TCP connection). With sharded Pub/Sub
(Redis Cluster) there is one listener per shard, speaking SSUBSCRIBE.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from redis.asyncio.cluster import ClusterNode
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import RedisError

from second_brain_database.redis_clients import RedisClients
from second_brain_database.webrtc import metrics
from second_brain_database.webrtc.broker.model import BrokerUnavailable

logger = logging.getLogger(__name__)

RECONNECT_MAX_DELAY_S = 2.0
WATCHDOG_INTERVAL_S = 1.0
WATCHDOG_SILENCE_S = 3.0
SUBSCRIBE_TIMEOUT_S = 5.0

OnMessage = Callable[[bytes, bytes], None]
OnConnected = Callable[[], None]


class PubSubListener:
    def __init__(
        self,
        name: str,
        redis: RedisClients,
        node: ClusterNode | None,
        *,
        sharded: bool,
        on_message: OnMessage,
        on_connected: OnConnected,
    ) -> None:
        self.name = name
        self._redis = redis
        self._node = node  # the shard this listener subscribes on, on a Cluster
        self._subscribe = "SSUBSCRIBE" if sharded else "SUBSCRIBE"
        self._unsubscribe = "SUNSUBSCRIBE" if sharded else "UNSUBSCRIBE"
        self._confirmation = b"ssubscribe" if sharded else b"subscribe"
        self._on_message = on_message
        self._on_connected = on_connected
        self.channels: set[bytes] = set()
        self._pending: dict[bytes, deque[asyncio.Future[None]]] = {}
        self._connection: AbstractConnection | None = None
        self.listening = asyncio.Event()
        self._last_heard = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        self.reconnects = 0

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._listen_forever(), name=f"sbd-pubsub-{self.name}"),
            asyncio.create_task(self._watchdog_forever(), name=f"sbd-watchdog-{self.name}"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._connection is not None:
            await self._connection.disconnect()

    async def subscribe(self, channel: bytes) -> None:
        """Returns once messages published to ``channel`` reach this listener."""
        self.channels.add(channel)
        confirmed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(channel, deque()).append(confirmed)
        try:
            async with asyncio.timeout(SUBSCRIBE_TIMEOUT_S):
                await self.listening.wait()  # a new shard's listener may still connect
                await self._send(self._subscribe, channel)
                await confirmed
        except (RedisError, OSError, TimeoutError, BrokerUnavailable) as exc:
            self.channels.discard(channel)
            raise BrokerUnavailable(f"subscribe failed: {exc}") from exc

    async def unsubscribe(self, channel: bytes) -> None:
        self.channels.discard(channel)
        with contextlib.suppress(RedisError, OSError, BrokerUnavailable):
            await self._send(self._unsubscribe, channel)

    async def _send(self, *args: Any) -> None:
        connection = self._connection
        if connection is None or not self.listening.is_set():
            raise BrokerUnavailable(f"Redis Pub/Sub ({self.name}) is not connected")
        await connection.send_command(*args, check_health=False)

    async def _listen_forever(self) -> None:
        delay = 0.05
        while True:
            try:
                await self._listen_once()
            except (RedisError, OSError) as exc:
                metrics.REDIS_RECONNECTS.inc()
                logger.warning("Redis Pub/Sub (%s) lost: %s; reconnecting", self.name, exc)
            except Exception:
                # A bug must not leave the instance deaf: log it and reconnect.
                logger.exception("Redis Pub/Sub (%s) listener failed; reconnecting", self.name)
            was_listening = self.listening.is_set()
            self.listening.clear()
            self.reconnects += 1
            for waiters in self._pending.values():
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_exception(BrokerUnavailable("Redis Pub/Sub reconnecting"))
            self._pending.clear()
            delay = 0.05 if was_listening else min(delay * 2, RECONNECT_MAX_DELAY_S)
            await asyncio.sleep(delay)

    async def _listen_once(self) -> None:
        # RESP2: Pub/Sub replies arrive as plain arrays from read_response(),
        # where RESP3 would route them to push handlers.
        connection = self._redis.connection(self._node, protocol=2)
        self._connection = connection
        try:
            await connection.connect()  # type: ignore[no-untyped-call]
            if self.channels:
                await connection.send_command(self._subscribe, *self.channels, check_health=False)
            self._last_heard = time.monotonic()
            self.listening.set()
            logger.info("Redis Pub/Sub (%s) listening on %d rooms", self.name, len(self.channels))
            self._on_connected()
            while True:
                response = await connection.read_response(timeout=math.inf)
                self._last_heard = time.monotonic()
                self._on_response(response)
        finally:
            self._connection = None
            await connection.disconnect()

    def _on_response(self, response: list[Any]) -> None:
        kind = response[0]
        if kind in (b"message", b"smessage"):
            self._on_message(response[1], response[2])
        elif kind == self._confirmation:
            waiters = self._pending.get(response[1])
            if waiters:
                waiter = waiters.popleft()
                if not waiter.done():
                    waiter.set_result(None)
                if not waiters:
                    del self._pending[response[1]]

    async def _watchdog_forever(self) -> None:
        """Ping the connection; one that stops answering is replaced."""
        while True:
            await asyncio.sleep(WATCHDOG_INTERVAL_S)
            connection = self._connection
            if connection is None or not self.listening.is_set():
                continue
            if time.monotonic() - self._last_heard > WATCHDOG_SILENCE_S:
                logger.warning("Redis Pub/Sub (%s) went silent; reconnecting", self.name)
                await connection.disconnect()
                continue
            with contextlib.suppress(RedisError, OSError):
                await connection.send_command("PING", check_health=False)
