"""The I/O side of one session: its socket, its timer, its reader task.

A :class:`Connection` carries out what the sans-I/O
:class:`~second_brain_database.webrtc.session.Session` decides that touches
the connection itself: frames to the client through the socket's bounded
queue (webrtc/transport.py; overflow closes with 1013 instead of slowing
anyone else), frames held while the session is not live (before its
welcome, after its end: for the mailbox), the expiry/idle timer, and
stopping the reader wherever it waits.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Generic, TypeVar

from second_brain_database.webrtc import metrics
from second_brain_database.webrtc.broker.control import is_control
from second_brain_database.webrtc.broker.model import MAILBOX_MAX_FRAMES
from second_brain_database.webrtc.schemas import CloseCode
from second_brain_database.webrtc.session import SessionCore, SessionState
from second_brain_database.webrtc.transport import CLOSE_TIMEOUT_S, SignalingSocket

JOIN_ECHO_TIMEOUT_S = 1.0
_LIVE = SessionState.LIVE  # a global, not an attribute lookup, per delivered frame


class Flag:
    """A one-shot ``asyncio.Event`` that allocates nothing until awaited (an
    Event's waiter deque is 760 bytes, twice per session)."""

    __slots__ = ("_set", "_waiter")

    def __init__(self) -> None:
        self._set = False
        self._waiter: asyncio.Future[None] | None = None

    def set(self) -> None:
        self._set = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait(self) -> None:
        if self._set:
            return
        if self._waiter is None:
            self._waiter = asyncio.get_running_loop().create_future()
        # Shielded: a waiter that times out must not cancel it for the others.
        await asyncio.shield(self._waiter)


S = TypeVar("S", bound=SessionCore)


class Connection(Generic[S]):
    """One accepted WebSocket serving one session: a room's
    (:class:`~second_brain_database.webrtc.session.Session`) or a user
    socket's (:class:`~second_brain_database.webrtc.calls.user_session.UserSession`)."""

    __slots__ = (
        "_deadline",
        "_held",
        "_reader",
        "barrier",
        "finished",
        "frames_out",
        "joining",
        "session",
        "socket",
    )

    def __init__(self, socket: SignalingSocket, session: S) -> None:
        self.socket = socket
        self.session = session
        self.barrier = Flag()
        self.finished = Flag()
        # Frames that arrive before the welcome went out, or after the end.
        self._held: list[str] = []
        self._reader: asyncio.Task[Any] | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self.frames_out = 0  # handed to the socket, the welcome included
        # A fresh join until its own user-joined comes back on the room's
        # channel: what the channel brings before that was published before
        # the join, which the welcome already reflects (a peer it lists must
        # not be announced again). ConnectionManager.deliver drops those.
        self.joining = False

    def enqueue(self, frame: str) -> None:
        if self.session.state is not _LIVE:
            # Not welcomed yet, or over: keep it for the welcome or the mailbox.
            if len(self._held) < MAILBOX_MAX_FRAMES:
                self._held.append(frame)
            return
        if not self.socket.send(frame):
            metrics.SLOW_CONSUMERS.inc()
            self.abort(CloseCode.TRY_AGAIN_LATER, "send queue overflow")
            self._held.append(frame)
            return
        self.frames_out += 1
        metrics.DELIVERED.inc()

    def start(self, welcome: str, mailbox: list[str], *, distinct: bool = False) -> None:
        """Send the welcome, the mailbox, what arrived meanwhile, then live
        frames. ``distinct``: what arrived meanwhile and is in the mailbox
        already is not sent twice (a user socket's ringing calls, read while
        they could also be published to it)."""
        session = self.session
        arrived, self._held = self._held, []
        if distinct:
            arrived = [frame for frame in arrived if frame not in mailbox]
        session.welcomed()
        self.socket.send(welcome)  # the queue is empty: it always fits
        self.frames_out += 1
        for frame in [*mailbox, *arrived]:
            if not is_control(frame):
                self.enqueue(frame)
        self._reader = asyncio.current_task()
        if self.joining:
            # Pub/Sub is at-most-once: should the echo of the join be lost,
            # the gate opens anyway.
            asyncio.get_running_loop().call_later(JOIN_ECHO_TIMEOUT_S, self.joined)
        self.schedule_expiry()
        if session.end is not None:
            raise session.end

    def joined(self) -> None:
        self.joining = False

    def schedule_expiry(self) -> None:
        """(Re-)arm the session's one timer (Session.next_check_in)."""
        if self._deadline is not None:
            self._deadline.cancel()
        delay = self.session.next_check_in(time.monotonic(), time.time())
        self._deadline = asyncio.get_running_loop().call_later(delay, self._timer_fired)

    def _timer_fired(self) -> None:
        self._deadline = None
        if self.session.timer_fired(time.monotonic(), time.time()):
            self.interrupt()  # the only action it returns is Close
        elif self.session.end is None:
            self.schedule_expiry()

    def abort(self, code: int, reason: str) -> None:
        """End the session from outside its reader (kick, shutdown, overflow)."""
        if self.session.end is not None:
            return
        self.session.finish(code, reason)
        self.interrupt()

    def interrupt(self) -> None:
        """Stop the reader wherever it waits; the session ends with its ``end``."""
        if self._reader is not None:
            self._reader.cancel()

    async def stop_writing(self) -> None:
        """Stop delivering; what is left is kept for :meth:`unsent`."""
        session = self.session
        session.finish(CloseCode.GOING_AWAY, "")
        self.socket.handle_on_arrival(None)
        if self._deadline is not None:
            self._deadline.cancel()
        if not session.stop():
            return
        if session.end is not None and session.end.code == CloseCode.NORMAL:
            # A normal close lets queued frames out first, briefly.
            await self.socket.flush(CLOSE_TIMEOUT_S)
        self._held[:0] = await self.socket.stop()

    def unsent(self) -> list[str]:
        """Frames never handed to the socket, in order (after stop_writing)."""
        frames_left, self._held = self._held, []
        return [frame for frame in frames_left if not is_control(frame)]
