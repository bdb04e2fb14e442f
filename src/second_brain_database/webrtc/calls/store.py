"""Where calls live, and the one transition that decides every race.

A call is ``ringing`` until exactly one of answer, decline, cancel or
timeout ends it: :meth:`CallStore.finish` moves it from ``ringing`` to its
result atomically (a ``dict`` update without an ``await`` in between in
process, one Lua script on the call's one key in Redis), so of two devices
answering in the same millisecond on two instances exactly one wins.
Besides the call itself, three indexes, each kept up by the store:

- the callee's ringing calls (a device that connects while rung picks them up);
- the caller's ringing calls (``SBD_CALL_MAX_RINGING``, and what to cancel
  when the calling connection ends for good);
- every ringing call by deadline, which every instance scans, so that a call
  times out even when the instance that started it died;

and each user's live user sockets (``devices`` in ``call-state``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from second_brain_database.webhooks.events import EventType, WebhookEvent, make_event
from second_brain_database.webrtc.calls.model import (
    RINGING,
    Call,
    CallerRoute,
    CallEvent,
    CallResult,
    Transition,
)


class CallStore(ABC):
    """Each transition comes back with the :class:`CallEvent` it reports
    (``call.ringing``, ``call.ended``); with webhooks on, the store writes it
    to the webhook outbox too, queued by the call's id (in order per call):
    ``call.ended`` in the same step as the ending, ``call.ringing`` before
    any device is rung."""

    webhooks = False

    async def start(self, call: Call, max_ringing: int) -> Transition:
        """Record a ringing call; :class:`TooManyCalls` when its caller already
        has ``max_ringing`` calls ringing."""
        await self._start(call, max_ringing)
        devices = await self.devices(call.to_user)
        event = CallEvent.ringing(call, devices)
        if self.webhooks:
            await self._write(call.call_id, webhook_event(event))
        return Transition(call, event, devices)

    async def finish(
        self,
        call_id: str,
        result: CallResult,
        *,
        callee: str | None = None,
        route: CallerRoute | None = None,
    ) -> Transition | None:
        """End the call with ``result`` if it still rings (and, where given,
        rings ``callee`` / was started from ``route``): the call as it was,
        to the one caller that ended it; None to everyone else."""
        ended = None
        if self.webhooks:
            # A call's fields never change while it rings: its event can be
            # made before the one step that decides whether it ends now.
            known = await self.get(call_id)
            if known is None or known.state != RINGING:
                return None
            ended = webhook_event(CallEvent.ended(known, result))
        call = await self._finish(call_id, result, callee=callee, route=route, event=ended)
        if call is None:
            return None
        if ended is not None:
            await self._announce(call_id)
        return Transition(call, CallEvent.ended(call, result))

    @abstractmethod
    async def _start(self, call: Call, max_ringing: int) -> None: ...

    @abstractmethod
    async def get(self, call_id: str) -> Call | None:
        """The call, ringing or recently ended; None when unknown."""

    @abstractmethod
    async def _finish(
        self,
        call_id: str,
        result: CallResult,
        *,
        callee: str | None,
        route: CallerRoute | None,
        event: WebhookEvent | None,
    ) -> Call | None:
        """The transition itself, atomic: see :meth:`finish`; writes ``event``
        to the call's webhook queue in the same step, if the call ends."""

    @abstractmethod
    async def _write(self, call_id: str, event: WebhookEvent) -> None:
        """Queue a webhook event of the call (called with webhooks on only)."""

    async def _announce(self, call_id: str) -> None:
        """Tell the deliverers that the call's queue has an event :meth:`_finish`
        wrote (the embedded outbox needs no telling)."""
        return None

    @abstractmethod
    async def ringing_to(self, user_id: str) -> list[Call]:
        """The calls ringing ``user_id`` now."""

    @abstractmethod
    async def ringing_from(self, user_id: str) -> list[Call]:
        """The calls ``user_id`` has ringing now."""

    @abstractmethod
    async def due(self, now: float, limit: int) -> list[str]:
        """Ids of calls whose deadline passed (ringing or not: finishing
        them as ``missed`` decides), at most ``limit``."""

    @abstractmethod
    async def drop_due(self, call_id: str) -> None:
        """Take a call off the deadline index."""

    @abstractmethod
    async def add_device(self, user_id: str, connection_id: str, ttl: float) -> None:
        """Count a user socket of ``user_id`` for ``ttl`` seconds (refreshed
        while it lives: the sockets of a dead instance stop counting)."""

    @abstractmethod
    async def remove_device(self, user_id: str, connection_id: str) -> None: ...

    @abstractmethod
    async def devices(self, user_id: str) -> int:
        """How many user sockets ``user_id`` has open, on every instance."""


def webhook_event(event: CallEvent) -> WebhookEvent:
    return make_event(EventType(event.type), event.data)
