"""The embedded outbox: each room's events in a list in this process, with
how far each URL has acknowledged them. Lost when the process ends (as the
contract says of the embedded broker)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from second_brain_database.webhooks.events import WebhookEvent
from second_brain_database.webhooks.outbox import (
    MAX_ERRORS_KEPT,
    MAX_FAILED_KEPT,
    Endpoint,
    EndpointStatus,
    FailedEvent,
    Failure,
    Outbox,
    Pending,
    WebhookStatus,
)


class _RoomQueue:
    __slots__ = ("acked", "base", "entries")

    def __init__(self) -> None:
        self.entries: deque[Pending] = deque()
        self.base = 0
        """The sequence number of ``entries[0]``."""
        self.acked: dict[str, int] = {}
        """Endpoint key -> sequence number of its next event."""

    def head(self, endpoint: Endpoint) -> Pending | None:
        seq = max(self.acked.get(endpoint.key, 0), self.base)
        while seq - self.base < len(self.entries):
            pending = self.entries[seq - self.base]
            if not pending.only or pending.only == endpoint.key:
                self.acked[endpoint.key] = seq
                return pending
            seq += 1
        self.acked[endpoint.key] = seq
        return None

    def trim(self, endpoints: list[Endpoint]) -> None:
        done = min(self.acked.get(e.key, 0) for e in endpoints)
        while self.entries and self.base < done:
            self.entries.popleft()
            self.base += 1


class MemoryOutbox(Outbox):
    def __init__(self) -> None:
        self._rooms: dict[str, _RoomQueue] = {}
        self._ready: dict[str, None] = {}  # rooms with events and no deliverer, in order
        self._held: set[str] = set()
        self._work = asyncio.Event()
        self._failed: deque[FailedEvent] = deque(maxlen=MAX_FAILED_KEPT)
        self._errors: deque[Failure] = deque(maxlen=MAX_ERRORS_KEPT)

    def add(self, room_id: str, events: list[WebhookEvent], *, only: str = "") -> None:
        """Called by the embedded room store in the same step as the change."""
        queue = self._rooms.setdefault(room_id, _RoomQueue())
        for event in events:
            seq = queue.base + len(queue.entries)
            queue.entries.append(Pending(str(seq), event, only))
        if room_id not in self._held:
            self._ready[room_id] = None
            self._work.set()

    async def claim(self, limit: int) -> list[str]:
        rooms = list(self._ready)[:limit]
        for room_id in rooms:
            del self._ready[room_id]
            self._held.add(room_id)
        if not self._ready:
            self._work.clear()
        return rooms

    async def keep(self, rooms: list[str]) -> list[str]:
        return []  # nobody else delivers

    async def next(self, room_id: str, endpoint: Endpoint) -> Pending | None:
        queue = self._rooms.get(room_id)
        return queue.head(endpoint) if queue is not None else None

    async def ack(self, room_id: str, endpoint: Endpoint, pending: Pending) -> None:
        queue = self._rooms.get(room_id)
        if queue is not None:
            queue.acked[endpoint.key] = int(pending.ref) + 1

    async def release(self, room_id: str, endpoints: list[Endpoint]) -> None:
        self._held.discard(room_id)
        queue = self._rooms.get(room_id)
        if queue is None:
            return
        queue.trim(endpoints)
        if queue.entries:
            self._ready[room_id] = None
            self._work.set()
        else:
            del self._rooms[room_id]

    async def record_error(self, error: Failure) -> None:
        self._errors.appendleft(error)

    async def record_failed(self, failed: FailedEvent) -> None:
        self._failed.appendleft(failed)

    async def status(self, endpoints: list[Endpoint]) -> WebhookStatus:
        rows = []
        for endpoint in endpoints:
            pending = 0
            for queue in self._rooms.values():
                start = max(queue.acked.get(endpoint.key, 0), queue.base) - queue.base
                pending += sum(
                    1 for p in list(queue.entries)[start:] if not p.only or p.only == endpoint.key
                )
            failed = sum(1 for f in self._failed if f.endpoint == endpoint.key)
            rows.append(EndpointStatus(url=endpoint.label, pending=pending, failed=failed))
        return WebhookStatus(endpoints=rows, last_errors=list(self._errors))

    async def redeliver(self, event_id: str | None) -> int:
        chosen = [f for f in self._failed if event_id is None or f.event_id == event_id]
        for failed in reversed(chosen):  # oldest first
            self._failed.remove(failed)
            body = failed.body.encode()
            event = WebhookEvent(failed.event_id, failed.type, failed.event_at, body)
            self.add(failed.room_id, [event], only=failed.endpoint)
        return len(chosen)

    async def wait_for_work(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._work.wait(), timeout)
