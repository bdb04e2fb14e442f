"""Runs what the session core decides, for every client frame.

One decision function (``Session.receive``, webrtc/session.py), two ways to
run its actions: :meth:`ActionRunner.on_arrival` in the socket's read
callback, where none of them waits (relays and pings with the embedded
store: ``run_now``), and :meth:`ActionRunner.read_forever` in the session's
reader task for everything else, awaiting what waits (``run``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from second_brain_database.auth.tokens import InvalidToken, Principal, TokenService
from second_brain_database.webrtc import metrics
from second_brain_database.webrtc.actions import (
    NEEDS_AWAIT,
    Action,
    AnswerCall,
    BarrierPassed,
    CancelCall,
    Close,
    Kick,
    Publish,
    Send,
    SetMedia,
    StartCall,
    VerifyRefresh,
)
from second_brain_database.webrtc.broker import BrokerUnavailable
from second_brain_database.webrtc.broker.room_store import RoomStore, SynchronousRoomStore
from second_brain_database.webrtc.calls.service import CallService
from second_brain_database.webrtc.connection import Connection
from second_brain_database.webrtc.schemas import ErrorCode, ProtocolError
from second_brain_database.webrtc.session import (
    HANDLED_ON_ARRIVAL,
    SessionEnded,
    SessionState,
    error,
    read_frame,
    unknown_peer,
)
from second_brain_database.webrtc.transport import ClientGone

logger = logging.getLogger(__name__)

YIELD_EVERY = 16
UNAVAILABLE = "not delivered: the signaling backend is unavailable, retry shortly"
INTERNAL = "the server could not process this message"
_LIVE = SessionState.LIVE


# Room sessions and user sockets alike (their sessions share SessionCore).
AnyConnection = Connection[Any]


class ActionRunner:
    def __init__(
        self, rooms: RoomStore, calls: CallService, tokens: TokenService, max_message_bytes: int
    ) -> None:
        self._rooms = rooms
        self._calls = calls
        self._tokens = tokens
        self._max_bytes = max_message_bytes
        self._synchronous_store = rooms if isinstance(rooms, SynchronousRoomStore) else None

    @property
    def handles_on_arrival(self) -> bool:
        """Whether relays can run in the read callback (the store never waits)."""
        return self._synchronous_store is not None

    async def read_forever(self, connection: AnyConnection) -> None:
        receive = connection.socket.receive
        session = connection.session
        max_bytes = self._max_bytes
        handled = 0
        while True:
            handled += 1
            if not handled % YIELD_EVERY:
                # receive() does not yield while frames are buffered: give the
                # receivers' writers a turn before their queues fill up.
                await asyncio.sleep(0)
            try:
                data = await receive()
            except ClientGone as gone:
                raise session.finish(gone.code, "") from None
            frame = read_frame(data, max_bytes)
            ref = getattr(frame, "id", None)
            try:
                await self.run(connection, session.receive(frame, time.monotonic()))
            except BrokerUnavailable:
                # Redis is away: say so and keep the connection; the broker
                # reconnects on its own and the client may retry.
                metrics.BROKER_ERRORS.inc()
                connection.enqueue(
                    error(ProtocolError(ErrorCode.UNAVAILABLE, UNAVAILABLE, ref)).frame
                )
            except (SessionEnded, asyncio.CancelledError):
                raise
            except Exception:
                # A bug must cost one message, not the session: log it,
                # answer without the trace, carry on.
                logger.exception("failed to handle a client frame")
                connection.enqueue(
                    error(ProtocolError(ErrorCode.INVALID_MESSAGE, INTERNAL, ref)).frame
                )

    def on_arrival(self, connection: AnyConnection, data: str | bytes) -> bool:
        """Handle a relayed message or a ping in the socket's read callback:
        with the embedded broker none of their actions waits, and the socket
        calls this only while the session's reader is idle, so nothing the
        reader holds is overtaken. Saves the reader task's wakeup per message.
        Anything else is left untouched for the reader (False), which reads
        it the same way."""
        session = connection.session
        if session.state is not _LIVE:
            return False
        frame = read_frame(data, self._max_bytes)
        if not isinstance(frame, HANDLED_ON_ARRIVAL):
            return False
        try:
            self.run_now(connection, session.receive(frame, time.monotonic()))
        except Exception:
            logger.exception("failed to handle a %s message", frame.type.value)
            connection.enqueue(
                error(ProtocolError(ErrorCode.INVALID_MESSAGE, INTERNAL, frame.id)).frame
            )
        return True

    def run_now(self, connection: AnyConnection, actions: list[Action]) -> None:
        """Run actions that never wait (Send, Close, BarrierPassed, and Publish
        with a synchronous broker)."""
        for action in actions:
            if type(action) is Publish:
                store = self._synchronous_store
                assert store is not None
                if not store.relay_now(connection.session.room_id, action.envelope):
                    connection.enqueue(unknown_peer(action.envelope.to, action.ref).frame)
            elif type(action) is Send:
                connection.enqueue(action.frame)
            elif type(action) is Close:
                connection.interrupt()
            elif type(action) is BarrierPassed:
                connection.barrier.set()

    async def run(self, connection: AnyConnection, actions: list[Action]) -> None:
        """Run actions in order, awaiting those that wait; a Close ends the reader."""
        session = connection.session
        for action in actions:
            if isinstance(action, Publish):
                if not await self._rooms.relay(session.room_id, action.envelope):
                    connection.enqueue(unknown_peer(action.envelope.to, action.ref).frame)
            elif isinstance(action, Close):
                assert session.end is not None
                raise session.end
            elif isinstance(action, NEEDS_AWAIT):
                await self._run_waiting(connection, action)
            else:
                self.run_now(connection, [action])

    async def _run_waiting(self, connection: AnyConnection, action: Action) -> None:
        session = connection.session
        if isinstance(action, StartCall):
            await self._calls.start_call(action, connection.enqueue)
        elif isinstance(action, AnswerCall):
            await self._calls.answer(action, connection.enqueue)
        elif isinstance(action, CancelCall):
            await self._calls.cancel(action, connection.enqueue)
        elif isinstance(action, SetMedia):
            await self._rooms.set_media(session.room_id, action.media, action.envelope)
        elif isinstance(action, Kick):
            if not await self._rooms.kick(session.room_id, action.peer_id):
                connection.enqueue(unknown_peer(action.peer_id, action.ref).frame)
        elif isinstance(action, VerifyRefresh):
            try:
                principal: Principal | None = await self._tokens.verify_async(action.token)
                why = ""
            except InvalidToken as exc:
                principal, why = None, exc.reason
            await self.run(connection, session.refreshed(principal, why, action.ref))
            connection.schedule_expiry()
