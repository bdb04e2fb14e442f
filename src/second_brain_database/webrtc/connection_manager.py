"""Signaling sessions: one per accepted WebSocket, fanned out by the broker.

The manager owns this process's local connections, grouped by room. Each
session reads client frames in its own task (with the embedded broker,
relays and pings are handled as they arrive instead: ``_handle_now``) and
sends through its socket's bounded queue (webrtc/transport.py), so a client
that cannot keep up is closed instead of slowing delivery to anyone else.

A session that ends without ``leave`` hands its peer over for resume: it
marks the peer away, waits for the broker's barrier (every frame published
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
from typing import Any

import orjson

from second_brain_database.auth.tokens import InvalidToken, Principal, TokenService
from second_brain_database.config import Settings
from second_brain_database.limits.token_bucket import TokenBucket
from second_brain_database.logging_setup import bind_session
from second_brain_database.webrtc import frames, metrics
from second_brain_database.webrtc.broker import (
    Broker,
    BrokerUnavailable,
    Envelope,
    JoinRefused,
    Member,
    ResumeBusy,
    Resumed,
    ResumeRefused,
    RoomFull,
)
from second_brain_database.webrtc.broker.base import (
    BARRIER,
    KICK,
    MAILBOX_MAX_FRAMES,
    REPLACED,
    SynchronousBroker,
)
from second_brain_database.webrtc.schemas import (
    PONG_FRAME,
    AnswerMessage,
    AppMessage,
    ClientMessage,
    CloseCode,
    ErrorCode,
    IceCandidateMessage,
    KickMessage,
    LeaveMessage,
    MediaStateMessage,
    OfferMessage,
    PingMessage,
    ProtocolError,
    RefreshMessage,
    parse_client_frame,
    relay_payload,
)
from second_brain_database.webrtc.transport import (
    CLOSE_TIMEOUT_S,
    ClientGone,
    SignalingSocket,
)

logger = logging.getLogger(__name__)

YIELD_EVERY = 16
# How long a resume waits for the previous session to hand the peer over
# before taking it regardless (that session's instance may have died).
HANDOVER_TIMEOUT_S = 3.0
BARRIER_TIMEOUT_S = 2.0
# Consecutive frames refused by the rate limit before the connection is closed.
RATE_LIMIT_STRIKES = 20
UNAVAILABLE = "not delivered: the signaling backend is unavailable, retry shortly"
INTERNAL = "the server could not process this message"
TOO_DEEP = "payload is nested too deeply"
BINARY_REFUSED = "binary frames are not accepted; send JSON in text frames"
TARGETABLE = (OfferMessage, AnswerMessage, IceCandidateMessage, AppMessage)
TargetableMessage = OfferMessage | AnswerMessage | IceCandidateMessage | AppMessage
HANDLED_ON_ARRIVAL = (*TARGETABLE, PingMessage)
# Endings after which the peer is gone for good; any other ending is resumable.
FINAL_CLOSES = frozenset(
    {CloseCode.NORMAL, CloseCode.UNAUTHORIZED, CloseCode.RATE_LIMITED, CloseCode.IDLE}
)
# Close codes that count as themselves in metrics; a client's own code is "other".
_KNOWN_CLOSES = frozenset(int(code) for code in CloseCode) | {1005, 1006}

_PONG = PONG_FRAME.decode()


def _unknown_peer(message: TargetableMessage) -> ProtocolError:
    return ProtocolError(ErrorCode.UNKNOWN_PEER, f"no peer {message.to} in the room", message.id)


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


class SessionEnded(Exception):
    """Why a session ended: the close code and reason it is closed with."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class Session:
    """One peer on one WebSocket."""

    def __init__(
        self,
        socket: SignalingSocket,
        room_id: str,
        member: Member,
        principal: Principal,
        resume_secret: str,
        settings: Settings,
    ) -> None:
        self.socket = socket
        self.room_id = room_id
        self.member = member
        self.principal = principal
        self.owner = secrets.token_hex(8)
        self.resume_secret = resume_secret
        self.bucket = TokenBucket(settings.rate_limit_per_s, settings.rate_limit_burst)
        self.end: SessionEnded | None = None
        self.barrier = Flag()
        self.finished = Flag()
        # Frames that arrive before the welcome went out, or after the end.
        self._held: list[str] = []
        self._live = False
        self.started = False
        self._stopped = False
        self._reader: asyncio.Task[Any] | None = None
        self._idle_timeout = settings.idle_timeout
        self._deadline: asyncio.TimerHandle | None = None
        self.last_message = time.monotonic()

    @property
    def peer_id(self) -> str:
        return self.member.peer_id

    @property
    def resume_token(self) -> str:
        return f"{self.peer_id}.{self.resume_secret}"

    def finish(self, code: int, reason: str) -> SessionEnded:
        """Record why the session ends (the first reason wins) and return it."""
        if self.end is None:
            self.end = SessionEnded(code, reason)
        return self.end

    def enqueue(self, frame: str) -> None:
        if not self._live:
            # Not welcomed yet, or over: keep it for the welcome or the mailbox.
            if len(self._held) < MAILBOX_MAX_FRAMES:
                self._held.append(frame)
            return
        if not self.socket.send(frame):
            metrics.SLOW_CONSUMERS.inc()
            self.abort(CloseCode.TRY_AGAIN_LATER, "send queue overflow")
            self._held.append(frame)
            return
        metrics.DELIVERED.inc()

    def start(self, welcome: str, mailbox: list[str]) -> None:
        """Send the welcome, the mailbox, what arrived meanwhile, then live frames."""
        arrived, self._held = self._held, []
        self._live = self.started = True
        self.socket.send(welcome)  # the queue is empty: it always fits
        for frame in [*mailbox, *arrived]:
            if not frame.startswith("!"):
                self.enqueue(frame)
        self._reader = asyncio.current_task()
        self.schedule_expiry()
        if self.end is not None:
            raise self.end

    def schedule_expiry(self) -> None:
        """(Re-)arm the session's one timer, for the earlier of its deadlines:
        the token's expiry, and the idle timeout counted from the last valid
        message (re-armed when it fires, not reset on every frame)."""
        if self._deadline is not None:
            self._deadline.cancel()
        idle_in = self.last_message + self._idle_timeout - time.monotonic()
        expires_in = self.principal.expires_at - time.time()
        self._deadline = asyncio.get_running_loop().call_later(
            max(min(idle_in, expires_in), 0.0), self._deadline_reached
        )

    def _deadline_reached(self) -> None:
        self._deadline = None
        if self.principal.expires_at <= time.time():
            self.abort(CloseCode.UNAUTHORIZED, "token expired")
        elif time.monotonic() - self.last_message >= self._idle_timeout:
            self.abort(CloseCode.IDLE, "no message received for too long")
        else:
            self.schedule_expiry()

    def abort(self, code: int, reason: str) -> None:
        """End the session from outside its reader (kick, expiry, overflow)."""
        if self.end is not None:
            return
        self.finish(code, reason)
        self.interrupt()

    def interrupt(self) -> None:
        """Stop the reader wherever it waits; the session ends with :attr:`end`."""
        self._live = False
        if self._reader is not None:
            self._reader.cancel()

    async def stop_writing(self) -> None:
        """Stop delivering; what is left is kept for :meth:`unsent`."""
        self._live = False
        self.socket.handle_on_arrival(None)
        if self._deadline is not None:
            self._deadline.cancel()
        if self._stopped:
            return
        self._stopped = True
        if self.end is not None and self.end.code == CloseCode.NORMAL:
            # A normal close lets queued frames out first, briefly.
            await self.socket.flush(CLOSE_TIMEOUT_S)
        self._held[:0] = await self.socket.stop()

    def unsent(self) -> list[str]:
        """Frames never handed to the socket, in order (after stop_writing)."""
        frames_left, self._held = self._held, []
        return [frame for frame in frames_left if not frame.startswith("!")]


class ConnectionManager:
    def __init__(self, broker: Broker, tokens: TokenService, settings: Settings) -> None:
        self.broker = broker
        self.tokens = tokens
        self.settings = settings
        self._rooms: dict[str, dict[str, Session]] = {}
        # Relay latency is a cross-instance figure: in-process delivery (the
        # embedded broker) would only add zeros, at a histogram lock a message.
        self._synchronous_broker = broker if isinstance(broker, SynchronousBroker) else None
        self._measure_relay = self._synchronous_broker is None
        broker.set_delivery(self.deliver)
        broker.set_resync(self.resync)

    @property
    def session_count(self) -> int:
        return sum(len(peers) for peers in self._rooms.values())

    # --- fan-out (called by the broker for every envelope of a local room) --

    def deliver(self, room_id: str, envelope: Envelope) -> None:
        local = self._rooms.get(room_id)
        if not local:
            return
        if envelope.sent_at and self._measure_relay:
            metrics.observe_relay(envelope.sent_at)
        if envelope.to:
            session = local.get(envelope.to)
            if session is None:
                return
            frame = envelope.frame
            if frame.startswith("!"):
                self._control(session, frame)
            else:
                session.enqueue(frame)
            return
        frame = envelope.frame
        for peer_id, session in local.items():
            if not envelope.excludes(peer_id):
                session.enqueue(frame)

    @staticmethod
    def _control(session: Session, frame: str) -> None:
        if frame == KICK:
            session.abort(CloseCode.UNAUTHORIZED, "removed from the room by a host")
        elif frame.startswith(BARRIER):
            if frame.removeprefix(BARRIER) == session.owner:
                session.barrier.set()
        elif frame.startswith(REPLACED) and frame.removeprefix(REPLACED) != session.owner:
            session.abort(CloseCode.SESSION_REPLACED, "session resumed on another connection")

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
        old_secret = ""
        if resume_token is not None:
            peer_id, _, old_secret = resume_token.partition(".")
            await self._hand_over_local(room_id, peer_id)
        else:
            peer_id = secrets.token_urlsafe(12)
        member = Member(peer_id, principal.user_id, principal.name)
        bind_session(room_id, peer_id, principal.user_id)
        session = Session(
            socket, room_id, member, principal, secrets.token_urlsafe(24), self.settings
        )
        self._rooms.setdefault(room_id, {})[peer_id] = session
        metrics.LOCAL_ROOMS.set(len(self._rooms))
        try:
            await self._serve(session, old_secret if resume_token is not None else None)
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
            await session.stop_writing()
            await socket.close(end.code, end.reason)
            code = end.code if end.code in _KNOWN_CLOSES else "other"
            metrics.CONNECTIONS_CLOSED.labels(code=str(code)).inc()
            session.finished.set()

    async def _serve(self, session: Session, old_secret: str | None) -> None:
        room_id = session.room_id
        try:
            await self.broker.subscribe(room_id)
        except BrokerUnavailable:
            self._forget(session)
            raise
        joined = False
        try:
            if old_secret is None:
                participants = await self.broker.join(
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
            session.start(
                frames.welcome(session.member, room_id, session.resume_token, participants),
                mailbox,
            )
            del participants, mailbox  # held by this frame for the whole session otherwise
            if self._synchronous_broker is not None:
                session.socket.handle_on_arrival(functools.partial(self._handle_now, session))
            await self._read_forever(session)
        finally:
            if joined:
                await self._depart(session)
            self._forget(session)
            await self.broker.unsubscribe(room_id)

    async def _hand_over_local(self, room_id: str, peer_id: str) -> None:
        """A resume of a peer this process still serves: end that session first."""
        previous = self._rooms.get(room_id, {}).get(peer_id)
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
                return await self.broker.resume(
                    session.room_id,
                    session.peer_id,
                    session.member.user_id,
                    old_secret,
                    session.owner,
                    session.resume_secret,
                    force=time.monotonic() > deadline,
                )
            except ResumeBusy as busy:
                if not asked and not busy.owner.startswith("~"):
                    replaced = Envelope(session.peer_id, "", REPLACED + session.owner)
                    await self.broker.publish(session.room_id, replaced)
                    asked = True
            await asyncio.sleep(0.02)
        raise BrokerUnavailable("resume handover did not converge")

    async def _depart(self, session: Session) -> None:
        """Leave for good, or hand the peer over for a resume."""
        end = session.finish(CloseCode.GOING_AWAY, "")
        await session.stop_writing()
        try:
            if end.code in FINAL_CLOSES or self.broker.resume_ttl <= 0:
                await self.broker.leave(session.room_id, session.member, session.owner)
                return
            if not await self.broker.away(session.room_id, session.member, session.owner):
                return  # another session serves the peer now
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(session.barrier.wait(), BARRIER_TIMEOUT_S)
            await self.broker.release(session.room_id, session.member, session.unsent())
        except BrokerUnavailable as exc:
            metrics.BROKER_ERRORS.inc()
            logger.warning("could not hand over peer %s: %s", session.peer_id, exc)

    def _forget(self, session: Session) -> None:
        local = self._rooms.get(session.room_id)
        if local is not None and local.get(session.peer_id) is session:
            del local[session.peer_id]
            if not local:
                del self._rooms[session.room_id]
        metrics.LOCAL_ROOMS.set(len(self._rooms))

    async def _read_forever(self, session: Session) -> None:
        receive = session.socket.receive
        handled = 0
        while True:
            handled += 1
            if not handled % YIELD_EVERY:
                # receive() does not yield while frames are buffered: give the
                # receivers' writers a turn before their queues fill up.
                await asyncio.sleep(0)
            try:
                text = await receive()
            except ClientGone as gone:
                raise session.finish(gone.code, "") from None
            if not isinstance(text, str):
                self._send_error(session, ProtocolError(ErrorCode.INVALID_MESSAGE, BINARY_REFUSED))
                continue
            if self._too_big(text):
                raise session.finish(CloseCode.MESSAGE_TOO_BIG, "frame too large")
            try:
                self._take_token(session)
                message = parse_client_frame(text)
                session.last_message = time.monotonic()  # only valid messages count
                try:
                    await self._handle(session, message)
                except BrokerUnavailable:
                    # Redis is away: say so and keep the connection; the broker
                    # reconnects on its own and the client may retry.
                    metrics.BROKER_ERRORS.inc()
                    raise ProtocolError(ErrorCode.UNAVAILABLE, UNAVAILABLE, message.id) from None
                except (ProtocolError, SessionEnded, asyncio.CancelledError):
                    raise
                except Exception:
                    # A bug must cost one message, not the session: log it,
                    # answer without the trace, carry on.
                    logger.exception("failed to handle a %s message", message.type.value)
                    raise ProtocolError(ErrorCode.INVALID_MESSAGE, INTERNAL, message.id) from None
            except ProtocolError as error:
                self._send_error(session, error)

    def _too_big(self, text: str) -> bool:
        # Characters never outnumber UTF-8 bytes: encode only when it matters.
        max_bytes = self.settings.max_message_bytes
        return len(text) > max_bytes or (
            len(text) * 4 > max_bytes and len(text.encode()) > max_bytes
        )

    @staticmethod
    def _take_token(session: Session) -> None:
        """Spend a rate-limit token, or refuse the frame (persistently: close)."""
        if not session.bucket.allow():
            if session.bucket.strikes >= RATE_LIMIT_STRIKES:
                raise session.finish(CloseCode.RATE_LIMITED, "rate limit exceeded")
            raise ProtocolError(ErrorCode.RATE_LIMITED, "slow down")

    def _handle_now(self, session: Session, data: str | bytes) -> bool:
        """Handle a relayed message or a ping on arrival, in the socket's read
        callback: with the embedded broker nothing in handling them waits, and
        the socket calls this only while the session's reader is idle, so
        nothing the reader holds is overtaken. Saves the reader task's wakeup
        per message. Anything else is left untouched for the reader (False).

        The order of the checks differs from the reader's in one way: the frame
        is parsed before its rate-limit token is spent (to know it is one of
        these); the limit and its close are the same."""
        broker = self._synchronous_broker
        if broker is None:
            return False
        if session.end is not None or not isinstance(data, str) or self._too_big(data):
            return False
        try:
            message = parse_client_frame(data)
        except ProtocolError:
            return False  # the reader answers it, and counts it against the limit
        if not isinstance(message, HANDLED_ON_ARRIVAL):
            return False
        try:
            self._take_token(session)
            session.last_message = time.monotonic()
            metrics.count_received(message.type.value)
            if isinstance(message, PingMessage):
                session.enqueue(_PONG)
            elif not broker.publish_now(session.room_id, self._relayed(session, message)):
                raise _unknown_peer(message)
        except ProtocolError as error:
            self._send_error(session, error)
        except SessionEnded:
            session.interrupt()
        except Exception:
            logger.exception("failed to handle a %s message", message.type.value)
            self._send_error(
                session, ProtocolError(ErrorCode.INVALID_MESSAGE, INTERNAL, message.id)
            )
        return True

    @staticmethod
    def _relayed(session: Session, message: TargetableMessage) -> Envelope:
        payload = relay_payload(message)
        if message.to == session.peer_id:
            raise ProtocolError(ErrorCode.INVALID_MESSAGE, "cannot send to yourself", message.id)
        try:
            return frames.relayed(message.type, session.member, message.to, payload)
        except orjson.JSONEncodeError:  # nested deeper than the encoder allows
            raise ProtocolError(ErrorCode.INVALID_MESSAGE, TOO_DEEP, message.id) from None

    async def _handle(self, session: Session, message: ClientMessage) -> None:
        metrics.count_received(message.type.value)
        if isinstance(message, TARGETABLE):
            envelope = self._relayed(session, message)
            if not await self.broker.publish(session.room_id, envelope):
                raise _unknown_peer(message)
        elif isinstance(message, MediaStateMessage):
            media = message.payload.as_json()
            envelope = frames.relayed(message.type, session.member, None, media)
            await self.broker.set_media(session.room_id, orjson.dumps(media), envelope)
        elif isinstance(message, PingMessage):
            session.enqueue(_PONG)
        elif isinstance(message, LeaveMessage):
            raise session.finish(CloseCode.NORMAL, "left")
        elif isinstance(message, RefreshMessage):
            await self._refresh(session, message)
        elif isinstance(message, KickMessage):
            await self._kick(session, message)

    async def _refresh(self, session: Session, message: RefreshMessage) -> None:
        try:
            principal = await self.tokens.verify_async(message.payload.token)
        except InvalidToken as exc:
            raise ProtocolError(
                ErrorCode.FORBIDDEN, f"refresh refused: {exc.reason}", message.id
            ) from None
        if principal.user_id != session.principal.user_id or not principal.may_join(
            session.room_id
        ):
            raise ProtocolError(
                ErrorCode.FORBIDDEN, "refresh token is for another user or room", message.id
            )
        session.principal = principal
        session.schedule_expiry()

    async def _kick(self, session: Session, message: KickMessage) -> None:
        if not session.principal.is_host:
            raise ProtocolError(ErrorCode.FORBIDDEN, "only a host may kick", message.id)
        target = message.payload.peer_id
        if target == session.peer_id or not await self.broker.kick(session.room_id, target):
            raise ProtocolError(ErrorCode.UNKNOWN_PEER, f"no peer {target} in the room", message.id)

    @staticmethod
    def _send_error(session: Session, error: ProtocolError) -> None:
        metrics.ERRORS_SENT.labels(code=error.code.value).inc()
        session.enqueue(error.frame().decode())

    async def resync(self) -> None:
        """Re-register every live local peer (Redis may have lost them)."""
        restored = 0
        for local in list(self._rooms.values()):
            for session in list(local.values()):
                if session.end is None and session.started:
                    restored += await self.broker.reregister(
                        session.room_id, session.member, session.owner, session.resume_secret
                    )
        if restored:
            logger.warning("re-registered %d local peers missing from Redis", restored)

    async def close_all(self, code: int, reason: str) -> None:
        """Close every local session (shutdown)."""
        sessions = [s for local in self._rooms.values() for s in local.values()]
        for session in sessions:
            session.abort(code, reason)
        for session in sessions:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(session.finished.wait(), HANDOVER_TIMEOUT_S)
