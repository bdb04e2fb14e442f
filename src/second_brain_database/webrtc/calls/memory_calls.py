"""The embedded call store: one process, so a call's transition is a dict
update that no other coroutine can interleave with (no ``await`` inside)."""

from __future__ import annotations

import dataclasses
import time

from second_brain_database.webhooks.events import WebhookEvent
from second_brain_database.webhooks.memory_outbox import MemoryOutbox
from second_brain_database.webrtc.calls.model import (
    RINGING,
    Call,
    CallerRoute,
    CallResult,
    TooManyCalls,
)
from second_brain_database.webrtc.calls.store import CallStore

# An ended call is remembered this long, so that a late answer is still
# recognized (and refused) as a call that ended.
ENDED_KEPT_S = 60.0


class MemoryCallStore(CallStore):
    def __init__(self, outbox: MemoryOutbox | None = None) -> None:
        self._outbox = outbox
        self.webhooks = outbox is not None
        self._calls: dict[str, Call] = {}
        self._ringing_to: dict[str, set[str]] = {}
        self._ringing_from: dict[str, set[str]] = {}
        self._deadlines: dict[str, float] = {}
        self._devices: dict[str, set[str]] = {}

    async def _start(self, call: Call, max_ringing: int) -> None:
        self._forget_ended(time.time())
        outgoing = self._ringing_from.setdefault(call.from_user, set())
        if len(outgoing) >= max_ringing:
            raise TooManyCalls
        self._calls[call.call_id] = call
        outgoing.add(call.call_id)
        self._ringing_to.setdefault(call.to_user, set()).add(call.call_id)
        self._deadlines[call.call_id] = call.deadline

    async def get(self, call_id: str) -> Call | None:
        return self._calls.get(call_id)

    async def _finish(
        self,
        call_id: str,
        result: CallResult,
        *,
        callee: str | None,
        route: CallerRoute | None,
        event: WebhookEvent | None,
    ) -> Call | None:
        call = self._calls.get(call_id)
        if call is None or call.state != RINGING:
            return None
        if (callee is not None and call.to_user != callee) or (
            route is not None and call.route != route
        ):
            return None
        # Kept as ended until ENDED_KEPT_S past its deadline (see _forget_ended).
        self._calls[call_id] = dataclasses.replace(call, state=result.value)
        _discard(self._ringing_to, call.to_user, call_id)
        _discard(self._ringing_from, call.from_user, call_id)
        self._deadlines.pop(call_id, None)
        if event is not None and self._outbox is not None:
            self._outbox.add(call_id, [event])
        return call

    async def _write(self, call_id: str, event: WebhookEvent) -> None:
        if self._outbox is not None:
            self._outbox.add(call_id, [event])

    async def ringing_to(self, user_id: str) -> list[Call]:
        return [self._calls[c] for c in self._ringing_to.get(user_id, ())]

    async def ringing_from(self, user_id: str) -> list[Call]:
        return [self._calls[c] for c in self._ringing_from.get(user_id, ())]

    async def due(self, now: float, limit: int) -> list[str]:
        # A scan: one process rings few calls at once (SBD_CALL_MAX_RINGING per user).
        due = [call_id for call_id, deadline in self._deadlines.items() if deadline <= now]
        return due[:limit]

    async def drop_due(self, call_id: str) -> None:
        self._deadlines.pop(call_id, None)

    async def add_device(self, user_id: str, connection_id: str, ttl: float) -> None:
        self._devices.setdefault(user_id, set()).add(connection_id)

    async def remove_device(self, user_id: str, connection_id: str) -> None:
        _discard(self._devices, user_id, connection_id)

    async def devices(self, user_id: str) -> int:
        return len(self._devices.get(user_id, ()))

    def _forget_ended(self, now: float) -> None:
        """Drop calls that ended and whose deadline is long past."""
        if len(self._calls) < 1024:
            return
        self._calls = {
            call_id: call
            for call_id, call in self._calls.items()
            if call.state == RINGING or call.deadline + ENDED_KEPT_S > now
        }


def _discard(index: dict[str, set[str]], key: str, value: str) -> None:
    values = index.get(key)
    if values is not None:
        values.discard(value)
        if not values:
            del index[key]
