"""Signaling sessions of this process: the driver of the sans-I/O core.

The manager owns this process's local connections, grouped by room, and runs
each one: join or resume through the room store, then every client frame
through the one decision function (``Session.receive``, webrtc/session.py),
whose actions webrtc/action_runner.py runs: in the socket's read callback
where none waits (relays and pings with the embedded store), else in the
session's reader task, with the same function and the same checks.

A session that ends without ``leave`` hands its peer over for resume: it
marks the peer away, waits for the barrier (every frame published
before it has arrived here), and moves the frames it never sent to the head
of the peer's mailbox. docs/reliability.md describes the guarantees.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from typing import Any

from second_brain_database.auth.tokens import Principal, TokenService
from second_brain_database.config import Settings
from second_brain_database.logging_setup import bind_session
from second_brain_database.webrtc import metrics, server_frames
from second_brain_database.webrtc.action_runner import ActionRunner
from second_brain_database.webrtc.broker import (
    BrokerUnavailable,
    Envelope,
    JoinRefused,
    Member,
    ResumeBusy,
    Resumed,
    ResumeRefused,
    RoomFull,
)
from second_brain_database.webrtc.broker.control import CONTROL_PREFIX, Control, ControlKind
from second_brain_database.webrtc.broker.pubsub import PubSub
from second_brain_database.webrtc.broker.room_store import RoomStore
from second_brain_database.webrtc.calls.service import CallService
from second_brain_database.webrtc.connection import Connection
from second_brain_database.webrtc.ids import new_peer_id
from second_brain_database.webrtc.schemas import CloseCode
from second_brain_database.webrtc.session import (
    Session,
    SessionEnded,
    SessionState,
)
from second_brain_database.webrtc.transport import SignalingSocket

logger = logging.getLogger(__name__)

# How long a resume waits for the previous session to hand the peer over
# before taking it regardless (that session's instance may have died).
HANDOVER_TIMEOUT_S = 3.0
BARRIER_TIMEOUT_S = 2.0
# Endings after which the peer is gone for good; any other ending is resumable.
FINAL_CLOSES = frozenset(
    {CloseCode.NORMAL, CloseCode.UNAUTHORIZED, CloseCode.RATE_LIMITED, CloseCode.IDLE}
)
# Close codes that count as themselves in metrics; a client's own code is "other".
_KNOWN_CLOSES = frozenset(int(code) for code in CloseCode) | {1005, 1006}


class ConnectionManager:
    def __init__(
        self,
        pubsub: PubSub,
        rooms: RoomStore,
        calls: CallService,
        tokens: TokenService,
        settings: Settings,
    ) -> None:
        self.pubsub = pubsub
        self.rooms = rooms
        self.calls = calls
        self.tokens = tokens
        self.settings = settings
        self._local: dict[str, dict[str, Connection[Session]]] = {}
        # Relay latency is a cross-instance figure: in-process delivery (the
        # embedded store) would only add zeros, at a histogram lock a message.
        self.runner = ActionRunner(rooms, calls, tokens, settings.max_message_bytes)
        self._measure_relay = not self.runner.handles_on_arrival
        pubsub.set_listener(self.deliver, self.resync)

    @property
    def session_count(self) -> int:
        return sum(len(peers) for peers in self._local.values())

    # --- fan-out (the pub/sub listener: called for every envelope of a local room) --

    def deliver(self, room_id: str, envelope: Envelope) -> None:
        local = self._local.get(room_id)
        if not local:
            return
        if envelope.sent_at and self._measure_relay:
            metrics.observe_relay(envelope.sent_at)
        frame = envelope.frame
        if envelope.to:
            connection = local.get(envelope.to)
            if connection is None:
                return
            if not frame.startswith(CONTROL_PREFIX):
                connection.enqueue(frame)
            else:
                control = Control.decode(frame)
                if control is not None:
                    self.runner.run_now(connection, connection.session.control(control))
            return
        for peer_id, connection in local.items():
            if not envelope.excludes(peer_id):
                if not connection.joining:
                    connection.enqueue(frame)
            elif connection.joining:
                # Excluded before its join, a peer can only be the sender of
                # this envelope (away peers have joined): its own user-joined.
                connection.joined()

    # --- one WebSocket session ------------------------------------------

    async def run(
        self,
        socket: SignalingSocket,
        room_id: str,
        principal: Principal,
        resume_token: str | None = None,
    ) -> None:
        """Join (or resume in) ``room_id`` as ``principal`` until the session ends.

        The WebSocket is already accepted and authenticated."""
        old_secret = None
        if resume_token is not None:
            peer_id, _, old_secret = resume_token.partition(".")
        else:
            peer_id = new_peer_id()
        member = Member(peer_id, principal.user_id, principal.name)
        bind_session(room_id, peer_id, principal.user_id)
        session = Session(room_id, member, principal, self.settings, time.monotonic())
        connection: Connection[Session] = Connection(socket, session)
        connection.joining = resume_token is None
        try:
            if old_secret is not None:
                # Verified before anything touches the session serving the
                # peer: a bad resume token must not knock anyone out.
                if not await self.rooms.may_resume(room_id, peer_id, member.user_id, old_secret):
                    raise ResumeRefused(peer_id)
                await self._hand_over_local(room_id, peer_id)
            self._local.setdefault(room_id, {})[peer_id] = connection
            metrics.LOCAL_ROOMS.set(len(self._local))
            await self._serve(connection, old_secret)
        except RoomFull:
            session.finish(CloseCode.ROOM_FULL, "room is full")
        except JoinRefused as refused:
            metrics.AUTH_FAILURES.labels(reason=refused.reason).inc()
            session.finish(CloseCode.UNAUTHORIZED, refused.reason)
        except ResumeRefused:
            metrics.AUTH_FAILURES.labels(reason="bad resume token").inc()
            session.finish(CloseCode.UNAUTHORIZED, "invalid resume token")
        except BrokerUnavailable:
            metrics.BROKER_ERRORS.inc()
            session.finish(CloseCode.TRY_AGAIN_LATER, "signaling backend unavailable, retry")
        except SessionEnded as ended:
            session.finish(ended.code, ended.reason)
        except asyncio.CancelledError:
            if session.end is None:
                raise
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
        finally:
            end = session.finish(CloseCode.GOING_AWAY, "")
            await connection.stop_writing()
            await socket.close(end.code, end.reason)
            metrics.CONNECTIONS_CLOSED.labels(code=close_label(end.code)).inc()
            connection.finished.set()
            log_end(connection)

    async def _serve(self, connection: Connection[Session], old_secret: str | None) -> None:
        session = connection.session
        room_id = session.room_id
        try:
            await self.pubsub.subscribe(room_id)
        except BrokerUnavailable:
            self._forget(connection)
            raise
        joined = False
        try:
            if old_secret is None:
                participants = await self.rooms.join(
                    room_id,
                    session.member,
                    session.owner,
                    self.settings.max_peers_per_room,
                    session.resume_secret,
                    privileged=session.principal.role == "admin",
                )
                mailbox: list[str] = []
            else:
                resumed = await self._resume(session, old_secret)
                participants = [p for p in resumed.participants if p.peer_id != session.peer_id]
                mailbox = resumed.mailbox
            joined = True
            metrics.ROOM_SIZE.observe(len(participants) + 1)
            connection.start(
                server_frames.welcome(session.member, room_id, session.resume_token, participants),
                mailbox,
            )
            del participants, mailbox  # held by this frame for the whole session otherwise
            if self.runner.handles_on_arrival:
                on_arrival = functools.partial(self.runner.on_arrival, connection)
                connection.socket.handle_on_arrival(on_arrival)
            await self.runner.read_forever(connection)
        finally:
            if joined:
                await self._depart(connection)
            self._forget(connection)
            await self.pubsub.unsubscribe(room_id)

    async def _hand_over_local(self, room_id: str, peer_id: str) -> None:
        """A resume of a peer this process still serves: end that session first."""
        previous = self._local.get(room_id, {}).get(peer_id)
        if previous is None:
            return
        previous.abort(CloseCode.SESSION_REPLACED, "session resumed on another connection")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(previous.finished.wait(), HANDOVER_TIMEOUT_S)

    async def _resume(self, session: Session, old_secret: str) -> Resumed:
        """Take the peer over; a session elsewhere still serving it is asked to
        let go, and after HANDOVER_TIMEOUT_S it is taken regardless."""
        deadline = time.monotonic() + HANDOVER_TIMEOUT_S
        asked = False
        for _ in range(1000):
            try:
                return await self.rooms.resume(
                    session.room_id,
                    session.peer_id,
                    session.member.user_id,
                    old_secret,
                    session.owner,
                    session.resume_secret,
                    force=time.monotonic() > deadline,
                )
            except ResumeBusy as busy:
                if not asked and not busy.handing_over:
                    replaced = Control(ControlKind.REPLACED, session.owner).encode()
                    await self.rooms.relay(session.room_id, Envelope(session.peer_id, "", replaced))
                    asked = True
            await asyncio.sleep(0.02)
        raise BrokerUnavailable("resume handover did not converge")

    async def _depart(self, connection: Connection[Session]) -> None:
        """Leave for good, or hand the peer over for a resume."""
        session = connection.session
        end = session.finish(CloseCode.GOING_AWAY, "")
        await connection.stop_writing()
        try:
            if end.code in FINAL_CLOSES or self.rooms.resume_ttl <= 0:
                await self.rooms.leave(
                    session.room_id, session.member, session.owner, end.departure
                )
                if session.called:
                    # Gone for good: its ringing calls stop. (A peer away for
                    # a resume keeps them: its resumed session hears them.)
                    await self.calls.caller_gone(session.principal.user_id, session.route)
                return
            if not await self.rooms.away(session.room_id, session.member, session.owner):
                return  # another session serves the peer now
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(connection.barrier.wait(), BARRIER_TIMEOUT_S)
            await self.rooms.release(session.room_id, session.member, connection.unsent())
        except BrokerUnavailable as exc:
            metrics.BROKER_ERRORS.inc()
            logger.warning("could not hand over peer %s: %s", session.peer_id, exc)

    def _forget(self, connection: Connection[Session]) -> None:
        session = connection.session
        local = self._local.get(session.room_id)
        if local is not None and local.get(session.peer_id) is connection:
            del local[session.peer_id]
            if not local:
                del self._local[session.room_id]
        metrics.LOCAL_ROOMS.set(len(self._local))

    async def resync(self) -> None:
        """Re-register every live local peer (Redis may have lost them)."""
        restored = 0
        for local in list(self._local.values()):
            for connection in list(local.values()):
                session = connection.session
                if session.state is SessionState.LIVE:
                    restored += await self.rooms.reregister(
                        session.room_id, session.member, session.owner, session.resume_secret
                    )
        if restored:
            logger.warning("re-registered %d local peers missing from Redis", restored)

    async def close_all(self, code: int, reason: str) -> None:
        """Close every local session (shutdown)."""
        connections = [c for local in self._local.values() for c in local.values()]
        for connection in connections:
            connection.abort(code, reason)
        for connection in connections:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(connection.finished.wait(), HANDOVER_TIMEOUT_S)


def close_label(code: int) -> str:
    """A close code as a metrics label: a client's own code is "other"."""
    return str(code) if code in _KNOWN_CLOSES else "other"


def log_end(connection: Connection[Any]) -> None:
    """One structured line per session (room, peer and user ids come from
    the log context, logging_setup.bind_session; never a token)."""
    session = connection.session
    end = session.end
    logger.info(
        "signaling session ended",
        extra={
            "close_code": end.code if end is not None else None,
            "reason": end.reason if end is not None else "",
            "duration_s": round(time.monotonic() - session.opened_at, 3),
            "frames_in": session.frames_in,
            "frames_out": connection.frames_out,
        },
    )
