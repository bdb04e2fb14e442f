"""Sending webhook events: one task per claimed room, and in it one loop per
URL that sends that URL the room's events one at a time, each retried with
exponential backoff until acknowledged or given up on.

Nothing here runs on the relay path: the room stores only write events to
the outbox; this reads them in its own tasks, with its own HTTP client, at
most ``SBD_WEBHOOK_CONCURRENCY`` requests at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import httpx
from redis.exceptions import RedisError

from second_brain_database.config import Settings, webhook_key
from second_brain_database.webhooks import metrics, signing
from second_brain_database.webhooks.outbox import (
    Endpoint,
    FailedEvent,
    Failure,
    Outbox,
    Pending,
)
from second_brain_database.webrtc.broker.model import BrokerUnavailable

logger = logging.getLogger(__name__)

TIMEOUT_S = 10.0
"""An attempt not answered within this is failed (the contract's 10 s)."""
MAX_ANSWER_BYTES = 65_536
"""Of a receiver's answer, read at most this much (then the connection is dropped)."""
MAX_ROOMS = 1024
"""Rooms one instance delivers at once; more wait in the outbox."""
POLL_S = 0.25
"""How often the outbox is asked for rooms when nothing wakes the loop."""
_BACKEND_ERRORS = (BrokerUnavailable, RedisError, OSError)


class WebhookDelivery:
    def __init__(self, outbox: Outbox, settings: Settings, *, claim_ttl: float) -> None:
        assert settings.webhook_secret is not None  # the settings refuse URLs without one
        self.outbox = outbox
        self.endpoints = [Endpoint.of(url) for url in settings.webhook_urls]
        self._key = webhook_key(settings.webhook_secret)
        self._retry_initial = settings.webhook_retry_initial_s
        self._retry_max = settings.webhook_retry_max_s
        self._retry_for = settings.webhook_retry_for_s
        self._slots = asyncio.Semaphore(settings.webhook_concurrency)
        self._client = httpx.AsyncClient(
            timeout=TIMEOUT_S,
            limits=httpx.Limits(max_connections=settings.webhook_concurrency),
        )
        self._keep_every = claim_ttl / 3
        self._rooms: dict[str, asyncio.Task[None]] = {}
        self._heads: dict[tuple[str, str], float] = {}
        """(room, endpoint key) -> when the event being sent happened (metrics)."""
        self._loop: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._loop = asyncio.create_task(self._run(), name="sbd-webhooks")

    async def stop(self) -> None:
        """Stop sending. With Redis, the rooms this instance held become
        claimable at once (their unacknowledged entries stay pending, taken
        over by the next holder) instead of when the claims run out."""
        held = list(self._rooms)
        tasks = [*self._rooms.values(), *([self._loop] if self._loop else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for room_id in held:
            with contextlib.suppress(*_BACKEND_ERRORS):
                await self.outbox.release(room_id, self.endpoints)
        await self._client.aclose()

    async def _run(self) -> None:
        kept_at = time.monotonic()
        while True:
            try:
                free = MAX_ROOMS - len(self._rooms)
                if free > 0:
                    for room_id in await self.outbox.claim(free):
                        self._rooms[room_id] = asyncio.create_task(self._deliver_room(room_id))
                if self._rooms and time.monotonic() - kept_at >= self._keep_every:
                    kept_at = time.monotonic()
                    for room_id in await self.outbox.keep(list(self._rooms)):
                        lost = self._rooms.pop(room_id, None)
                        if lost is not None:
                            lost.cancel()
                self._report_ages()
            except _BACKEND_ERRORS as exc:
                logger.warning("webhook outbox unavailable: %s", exc)
            except Exception:  # the loop must outlive any one failure
                logger.exception("webhook outbox pass failed")
            if len(self._rooms) >= MAX_ROOMS:
                await asyncio.sleep(POLL_S)
            else:
                await self.outbox.wait_for_work(POLL_S)

    async def _deliver_room(self, room_id: str) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                for endpoint in self.endpoints:
                    group.create_task(self._deliver_to(room_id, endpoint))
            await self.outbox.release(room_id, self.endpoints)
        except* _BACKEND_ERRORS as errors:
            # The claim runs out and the room is claimed again, by this
            # instance or another; what was not acknowledged is sent again.
            logger.warning("webhook delivery of a room stopped: %s", errors.exceptions[0])
        except* Exception:
            logger.exception("webhook delivery of a room failed")
        finally:
            if self._rooms.get(room_id) is asyncio.current_task():
                del self._rooms[room_id]

    async def _deliver_to(self, room_id: str, endpoint: Endpoint) -> None:
        """The room's events to one URL, in order, the next only after the
        previous one was acknowledged (or given up on)."""
        while (pending := await self.outbox.next(room_id, endpoint)) is not None:
            if not pending.only or pending.only == endpoint.key:
                self._heads[(room_id, endpoint.key)] = pending.event.at
                try:
                    await self._send(room_id, endpoint, pending)
                finally:
                    del self._heads[(room_id, endpoint.key)]
            await self.outbox.ack(room_id, endpoint, pending)

    async def _send(self, room_id: str, endpoint: Endpoint, pending: Pending) -> None:
        event = pending.event
        first = time.monotonic()
        delay = self._retry_initial
        while True:
            error = await self._attempt(endpoint, pending)
            if error is None:
                metrics.DELIVERED.labels(endpoint.label).inc()
                return
            metrics.FAILED_ATTEMPTS.labels(endpoint.label).inc()
            failure = Failure(
                room_id=room_id,
                url=endpoint.label,
                event_id=event.id,
                type=event.type,
                error=error,
                at=time.time(),
            )
            with contextlib.suppress(*_BACKEND_ERRORS):
                await self.outbox.record_error(failure)
            if time.monotonic() + delay - first > self._retry_for:
                metrics.GIVEN_UP.labels(endpoint.label).inc()
                logger.warning(
                    "webhook %s to %s given up after %.0f s: %s",
                    event.id,
                    endpoint.label,
                    time.monotonic() - first,
                    error,
                )
                await self.outbox.record_failed(
                    FailedEvent(
                        **failure.model_dump(),
                        endpoint=endpoint.key,
                        event_at=event.at,
                        body=event.body.decode(),
                    )
                )
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._retry_max)

    async def _attempt(self, endpoint: Endpoint, pending: Pending) -> str | None:
        """One signed POST; None when acknowledged, else what went wrong.
        The whole exchange gets TIMEOUT_S (httpx's timeout is per phase, so a
        receiver trickling bytes could hold it longer), and at most
        MAX_ANSWER_BYTES of the answer are read: only its status matters."""
        event = pending.event
        async with self._slots:
            headers = signing.headers(self._key, event.id, int(time.time()), event.body)
            try:
                async with asyncio.timeout(TIMEOUT_S):
                    async with self._client.stream(
                        "POST", endpoint.url, content=event.body, headers=headers
                    ) as response:
                        status = response.status_code
                        read = 0
                        async for chunk in response.aiter_raw():
                            read += len(chunk)
                            if read > MAX_ANSWER_BYTES:
                                break
            except (TimeoutError, httpx.TimeoutException):
                return f"no answer within {TIMEOUT_S:.0f} s"
            except httpx.HTTPError as exc:
                return f"{type(exc).__name__}: {exc}"[:300]
        if 200 <= status < 300:
            return None
        return f"HTTP {status}"

    def _report_ages(self) -> None:
        now = time.time()
        for endpoint in self.endpoints:
            times = [at for (_, key), at in self._heads.items() if key == endpoint.key]
            metrics.OLDEST_PENDING.labels(endpoint.label).set(now - min(times) if times else 0)
