"""Signaling sessions of this process: the driver of the sans-I/O core.

The manager owns this process's local connections, grouped by room, and runs
each one: join or resume through the room store, then every client frame through
the one decision function (``Session.receive``, webrtc/session.py) and its
actions. With the embedded store, relays and pings are handled in the
socket's read callback (``_on_arrival``: no action waits there); every other
frame, and every frame on Redis, in the session's reader task (``_read_forever``),
with the same function and the same checks.

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
import secrets
import time

from second_brain_database.auth.tokens import InvalidToken, Principal, TokenService
from second_brain_database.config import Settings
from second_brain_database.logging_setup import bind_session
from second_brain_database.webrtc import metrics, server_frames
from second_brain_database.webrtc.actions import (
    NEEDS_AWAIT,
    Action,
    BarrierPassed,
    Close,
    Kick,
    Publish,
    Send,
    SetMedia,
    VerifyRefresh,
)
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
from second_brain_database.webrtc.broker.room_store import RoomStore, SynchronousRoomStore
from second_brain_database.webrtc.connection import Connection
from second_brain_database.webrtc.schemas import CloseCode, ErrorCode, ProtocolError
from second_brain_database.webrtc.session import (
    HANDLED_ON_ARRIVAL,
    Session,
    SessionEnded,
    SessionState,
    error,
    read_frame,
    unknown_peer,
)
from second_brain_database.webrtc.transport import ClientGone, SignalingSocket

logger = logging.getLogger(__name__)

YIELD_EVERY = 16
# How long a resume waits for the previous session to hand the peer over
# before taking it regardless (that session's instance may have died).
HANDOVER_TIMEOUT_S = 3.0
BARRIER_TIMEOUT_S = 2.0
UNAVAILABLE = "not delivered: the signaling backend is unavailable, retry shortly"
INTERNAL = "the server could not process this message"
# Endings after which the peer is gone for good; any other ending is resumable.
FINAL_CLOSES = frozenset(
    {CloseCode.NORMAL, CloseCode.UNAUTHORIZED, CloseCode.RATE_LIMITED, CloseCode.IDLE}
)
# Close codes that count as themselves in metrics; a client's own code is "other".
_KNOWN_CLOSES = frozenset(int(code) for code in CloseCode) | {1005, 1006}


class ConnectionManager:
    def __init__(
        self, pubsub: PubSub, rooms: RoomStore, tokens: TokenService, settings: Settings
    ) -> None:
        self.pubsub = pubsub
        self.rooms = rooms
        self.tokens = tokens
        self.settings = settings
        self._local: dict[str, dict[str, Connection]] = {}
        # Relay latency is a cross-instance figure: in-process delivery (the
        # embedded store) would only add zeros, at a histogram lock a message.
        self._synchronous_store = rooms if isinstance(rooms, SynchronousRoomStore) else None
        self._measure_relay = self._synchronous_store is None
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
                    self._run_now(connection, connection.session.control(control))
            return
        for peer_id, connection in local.items():
            if not envelope.excludes(peer_id):
                connection.enqueue(frame)

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
            peer_id = secrets.token_urlsafe(12)
        member = Member(peer_id, principal.user_id, principal.name)
        bind_session(room_id, peer_id, principal.user_id)
        session = Session(room_id, member, principal, self.settings, time.monotonic())
        connection = Connection(socket, session)
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
            code = end.code if end.code in _KNOWN_CLOSES else "other"
            metrics.CONNECTIONS_CLOSED.labels(code=str(code)).inc()
            connection.finished.set()
            _log_end(connection)

    async def _serve(self, connection: Connection, old_secret: str | None) -> None:
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
            if self._synchronous_store is not None:
                connection.socket.handle_on_arrival(functools.partial(self._on_arrival, connection))
            await self._read_forever(connection)
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

    async def _depart(self, connection: Connection) -> None:
        """Leave for good, or hand the peer over for a resume."""
        session = connection.session
        end = session.finish(CloseCode.GOING_AWAY, "")
        await connection.stop_writing()
        try:
            if end.code in FINAL_CLOSES or self.rooms.resume_ttl <= 0:
                await self.rooms.leave(session.room_id, session.member, session.owner)
                return
            if not await self.rooms.away(session.room_id, session.member, session.owner):
                return  # another session serves the peer now
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(connection.barrier.wait(), BARRIER_TIMEOUT_S)
            await self.rooms.release(session.room_id, session.member, connection.unsent())
        except BrokerUnavailable as exc:
            metrics.BROKER_ERRORS.inc()
            logger.warning("could not hand over peer %s: %s", session.peer_id, exc)

    def _forget(self, connection: Connection) -> None:
        session = connection.session
        local = self._local.get(session.room_id)
        if local is not None and local.get(session.peer_id) is connection:
            del local[session.peer_id]
            if not local:
                del self._local[session.room_id]
        metrics.LOCAL_ROOMS.set(len(self._local))

    # --- client frames: one decision function, two ways to run its actions --

    async def _read_forever(self, connection: Connection) -> None:
        receive = connection.socket.receive
        session = connection.session
        max_bytes = self.settings.max_message_bytes
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
                await self._run(connection, session.receive(frame, time.monotonic()))
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

    def _on_arrival(self, connection: Connection, data: str | bytes) -> bool:
        """Handle a relayed message or a ping in the socket's read callback:
        with the embedded broker none of their actions waits, and the socket
        calls this only while the session's reader is idle, so nothing the
        reader holds is overtaken. Saves the reader task's wakeup per message.
        Anything else is left untouched for the reader (False), which reads
        it the same way."""
        session = connection.session
        if session.state is not SessionState.LIVE:
            return False
        frame = read_frame(data, self.settings.max_message_bytes)
        if not isinstance(frame, HANDLED_ON_ARRIVAL):
            return False
        try:
            self._run_now(connection, session.receive(frame, time.monotonic()))
        except Exception:
            logger.exception("failed to handle a %s message", frame.type.value)
            connection.enqueue(
                error(ProtocolError(ErrorCode.INVALID_MESSAGE, INTERNAL, frame.id)).frame
            )
        return True

    def _run_now(self, connection: Connection, actions: list[Action]) -> None:
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

    async def _run(self, connection: Connection, actions: list[Action]) -> None:
        """Run actions in order, awaiting those that wait; a Close ends the reader."""
        session = connection.session
        for action in actions:
            if isinstance(action, Publish):
                if not await self.rooms.relay(session.room_id, action.envelope):
                    connection.enqueue(unknown_peer(action.envelope.to, action.ref).frame)
            elif isinstance(action, Close):
                assert session.end is not None
                raise session.end
            elif isinstance(action, NEEDS_AWAIT):
                await self._run_waiting(connection, action)
            else:
                self._run_now(connection, [action])

    async def _run_waiting(self, connection: Connection, action: Action) -> None:
        session = connection.session
        if isinstance(action, SetMedia):
            await self.rooms.set_media(session.room_id, action.media, action.envelope)
        elif isinstance(action, Kick):
            if not await self.rooms.kick(session.room_id, action.peer_id):
                connection.enqueue(unknown_peer(action.peer_id, action.ref).frame)
        elif isinstance(action, VerifyRefresh):
            try:
                principal: Principal | None = await self.tokens.verify_async(action.token)
                why = ""
            except InvalidToken as exc:
                principal, why = None, exc.reason
            await self._run(connection, session.refreshed(principal, why, action.ref))
            connection.schedule_expiry()

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


def _log_end(connection: Connection) -> None:
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
