"""Calls, start to end: what ``call``, ``call-answer`` and ``call-cancel``
do, the ring timeout, and the user sockets of this process.

Every ending goes through :meth:`CallStore.finish`, so exactly one of the
competing endings (two devices answering, an answer and a cancel, an answer
and the timeout) wins, on whichever instance, and only the winner tells
anyone. The callee's devices hear through the callee's user channel (a
pub/sub topic every instance with a user socket of that user listens to);
the caller through its own user channel (a user socket) or its room (a room
socket, see :class:`CallerRoute`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from second_brain_database.auth.tickets import TicketStore, TicketUnavailable, TooManyTickets
from second_brain_database.auth.tokens import InvalidToken
from second_brain_database.config import Settings
from second_brain_database.webrtc import metrics
from second_brain_database.webrtc.actions import AnswerCall, CancelCall, StartCall
from second_brain_database.webrtc.broker.model import BrokerUnavailable, Envelope
from second_brain_database.webrtc.broker.pubsub import PubSub
from second_brain_database.webrtc.broker.redis_keys import UserKeys
from second_brain_database.webrtc.broker.room_store import RoomStore
from second_brain_database.webrtc.calls import frames
from second_brain_database.webrtc.calls.model import (
    RINGING,
    Call,
    CallerRoute,
    CallResult,
    TooManyCalls,
    Transition,
)
from second_brain_database.webrtc.calls.store import CallStore
from second_brain_database.webrtc.schemas import ErrorCode, ProtocolError

if TYPE_CHECKING:
    from second_brain_database.webrtc.calls.user_session import UserSession
    from second_brain_database.webrtc.connection import Connection

logger = logging.getLogger(__name__)

Reply = Callable[[str], None]
DUE_BATCH = 100


def new_call_id() -> str:
    return secrets.token_urlsafe(18)


def _error(code: ErrorCode, message: str, ref: str | None) -> str:
    metrics.ERRORS_SENT.labels(code=code.value).inc()
    return ProtocolError(code, message, ref).frame().decode()


def _unknown_call(ref: str | None) -> str:
    return _error(ErrorCode.UNKNOWN_CALL, "no such ringing call for this connection", ref)


class CallService:
    def __init__(
        self,
        store: CallStore,
        pubsub: PubSub,
        rooms: RoomStore,
        tickets: TicketStore,
        settings: Settings,
    ) -> None:
        self._store = store
        self._pubsub = pubsub
        self._rooms = rooms
        self._tickets = tickets
        self._ring_timeout = settings.call_ring_timeout
        self._max_ringing = settings.call_max_ringing
        self._device_ttl = settings.presence_ttl
        # User sockets of this process: user channel -> connection id -> connection.
        self._local: dict[str, dict[str, Connection[UserSession]]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        pubsub.set_topic_listener(self.deliver)

    def _count(self, transition: Transition) -> None:
        """Metrics of a transition (its webhook event the store has written)."""
        if transition.event.type == "call.ringing":
            metrics.CALLS_STARTED.inc()
            return
        metrics.CALLS_ENDED.labels(result=transition.event.data["result"]).inc()
        started_at = transition.call.deadline - self._ring_timeout
        metrics.CALL_RING_TIME.observe(max(0.0, time.time() - started_at))

    # --- lifecycle ------------------------------------------------------------

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._expire_forever(), name="sbd-call-expirer"),
            asyncio.create_task(self._refresh_devices_forever(), name="sbd-call-devices"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # --- user sockets of this process ----------------------------------------

    async def attach(self, connection: Connection[UserSession]) -> list[str]:
        """Ring ``connection`` from now on; the ``incoming-call`` frames of the
        calls ringing its user already, oldest first."""
        session = connection.session
        user_id = session.principal.user_id
        topic = UserKeys.of(user_id).channel
        await self._pubsub.subscribe_topic(topic)
        # Listed before the ringing calls are read: a call that starts
        # meanwhile is held for it (a duplicate is dropped at its start).
        self._local.setdefault(topic, {})[session.connection_id] = connection
        try:
            await self._store.add_device(user_id, session.connection_id, self._device_ttl)
            ringing = await self._store.ringing_to(user_id)
        except BrokerUnavailable:
            await self.detach(connection)
            raise
        return [call.incoming for call in sorted(ringing, key=lambda call: call.deadline)]

    async def detach(self, connection: Connection[UserSession]) -> None:
        session = connection.session
        user_id = session.principal.user_id
        topic = UserKeys.of(user_id).channel
        local = self._local.get(topic)
        if local is None or local.pop(session.connection_id, None) is None:
            return
        if not local:
            del self._local[topic]
        await self._pubsub.unsubscribe_topic(topic)
        with contextlib.suppress(BrokerUnavailable):
            await self._store.remove_device(user_id, session.connection_id)
            if session.called:  # a user socket never resumes: its end is for good
                await self.caller_gone(user_id, session.route)

    def connections(self) -> list[Connection[UserSession]]:
        return [c for local in self._local.values() for c in local.values()]

    def deliver(self, topic: str, envelope: Envelope) -> None:
        """The pub/sub topic listener: a frame for user sockets of this process."""
        local = self._local.get(topic)
        if not local:
            return
        if envelope.to:
            connection = local.get(envelope.to)
            if connection is not None:
                connection.enqueue(envelope.frame)
            return
        for connection_id, connection in local.items():
            if connection_id != envelope.exclude:
                connection.enqueue(envelope.frame)

    async def _refresh_devices_forever(self) -> None:
        interval = max(self._device_ttl / 3, 0.2)
        while True:
            await asyncio.sleep(interval)
            for connection in self.connections():
                session = connection.session
                try:
                    await self._store.add_device(
                        session.principal.user_id, session.connection_id, self._device_ttl
                    )
                except BrokerUnavailable as exc:
                    logger.warning("user socket refresh failed: %s", exc)
                    break

    # --- the frames ------------------------------------------------------------

    async def start_call(self, action: StartCall, reply: Reply) -> None:
        request, caller = action.request, action.caller
        call_id = new_call_id()
        call = Call(
            call_id=call_id,
            from_user=caller.user_id,
            to_user=request.to_user,
            room_id=request.room_id,
            route=action.route,
            deadline=time.time() + self._ring_timeout,
            incoming=frames.incoming_call(
                call_id, caller.user_id, request.room_id, caller.name, request.data
            ),
        )
        try:
            started = await self._store.start(call, self._max_ringing)
        except TooManyCalls:
            why = f"at most {self._max_ringing} calls may ring at once"
            reply(_error(ErrorCode.RATE_LIMITED, why, action.ref))
            return
        # The caller hears ``ringing`` before any answer can reach it.
        reply(frames.call_state(call_id, RINGING, ref=action.ref, devices=started.devices))
        await self._tell_callee(call, call.incoming)
        self._count(started)

    async def answer(self, action: AnswerCall, reply: Reply) -> None:
        call = await self._store.get(action.call_id)
        if call is None or call.state != RINGING or call.to_user != action.callee.user_id:
            reply(_unknown_call(action.ref))
            return
        ticket = None
        if action.accept:
            # Issued before the answer counts: a winner always has its ticket;
            # a loser's expires unused. Valid for the call's room whatever the
            # callee's own token lists.
            holder = dataclasses.replace(action.callee, rooms=(call.room_id,))
            try:
                ticket, _ = await self._tickets.issue(holder, call.room_id)
            except TicketUnavailable as exc:
                raise BrokerUnavailable("ticket store unavailable") from exc
            except TooManyTickets:
                reply(_error(ErrorCode.RATE_LIMITED, "too many tickets, retry", action.ref))
                return
            except InvalidToken as exc:
                reply(_error(ErrorCode.FORBIDDEN, exc.reason, action.ref))
                return
        result = CallResult.ACCEPTED if action.accept else CallResult.DECLINED
        transition = await self._store.finish(action.call_id, result, callee=action.callee.user_id)
        if transition is None:  # another device, the caller or the timeout came first
            reply(_unknown_call(action.ref))
            return
        ended = transition.call
        if ticket is not None:
            reply(frames.call_state(ended.call_id, result, room_id=ended.room_id, ticket=ticket))
        else:
            reply(frames.call_state(ended.call_id, result))  # declined, as its confirmation
        elsewhere = frames.call_state(ended.call_id, "answered-elsewhere")
        await self._tell_callee(ended, elsewhere, exclude=action.connection_id)
        await self._tell_caller(ended, frames.call_state(ended.call_id, result))
        self._count(transition)

    async def cancel(self, action: CancelCall, reply: Reply) -> None:
        transition = await self._store.finish(
            action.call_id, CallResult.CANCELLED, route=action.route
        )
        if transition is None:
            reply(_unknown_call(action.ref))
            return
        frame = frames.call_state(action.call_id, CallResult.CANCELLED)
        reply(frame)
        await self._tell_callee(transition.call, frame)
        self._count(transition)

    async def caller_gone(self, user_id: str, route: CallerRoute) -> None:
        """The connection at ``route`` ended for good: cancel its ringing calls."""
        for call in await self._store.ringing_from(user_id):
            if call.route != route:
                continue
            transition = await self._store.finish(call.call_id, CallResult.CANCELLED, route=route)
            if transition is not None:
                await self._tell_callee(call, frames.call_state(call.call_id, "cancelled"))
                self._count(transition)

    # --- the ring timeout, on every instance ----------------------------------

    async def _expire_forever(self) -> None:
        interval = min(0.25, self._ring_timeout / 4)
        while True:
            try:
                await self.expire_due()
            except BrokerUnavailable as exc:
                logger.warning("call expiry pass failed: %s", exc)
            await asyncio.sleep(interval)

    async def expire_due(self) -> None:
        """End every call past its deadline as ``missed``; of the instances
        that see it due at once, the one whose ``finish`` wins tells both sides."""
        for call_id in await self._store.due(time.time(), DUE_BATCH):
            transition = await self._store.finish(call_id, CallResult.MISSED)
            if transition is not None:
                frame = frames.call_state(call_id, "missed")
                await self._tell_callee(transition.call, frame)
                await self._tell_caller(transition.call, frame)
                self._count(transition)
            await self._store.drop_due(call_id)

    # --- delivery ---------------------------------------------------------------

    async def _tell_callee(self, call: Call, frame: str, exclude: str = "") -> None:
        await self._pubsub.publish_topic(
            UserKeys.of(call.to_user).channel, Envelope("", exclude, frame)
        )

    async def _tell_caller(self, call: Call, frame: str) -> None:
        route = call.route
        if route.connection_id:
            await self._pubsub.publish_topic(
                UserKeys.of(call.from_user).channel, Envelope(route.connection_id, "", frame)
            )
        else:
            # Into the peer's mailbox if it is away for a resume; nowhere if gone.
            await self._rooms.relay(route.room_id, Envelope(route.peer_id, "", frame))
