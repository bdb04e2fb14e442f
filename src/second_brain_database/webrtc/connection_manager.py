"""Signaling sessions: one per accepted WebSocket, fanned out by the broker.

The manager owns this process's local connections, grouped by room. Each
session reads client frames in its own task and writes through a bounded
queue drained by a writer task, so a client that cannot keep up is closed
instead of slowing delivery to anyone else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from typing import Any

import orjson
from pydantic import BaseModel
from starlette.websockets import WebSocket, WebSocketState

from second_brain_database.auth.tokens import InvalidToken, Principal, TokenService
from second_brain_database.config import Settings
from second_brain_database.webrtc import frames, metrics
from second_brain_database.webrtc.broker import (
    Broker,
    BrokerUnavailable,
    Envelope,
    Member,
    RoomFull,
)
from second_brain_database.webrtc.broker.base import KICK
from second_brain_database.webrtc.ratelimit import TokenBucket
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
)

logger = logging.getLogger(__name__)

CLOSE_TIMEOUT_S = 2.0
# Consecutive frames refused by the rate limit before the connection is closed.
RATE_LIMIT_STRIKES = 20
# A client that stops reading: 1013 "try again later"; it may resume.
SLOW_CONSUMER_CLOSE = 1013
UNAVAILABLE_CLOSE = 1013
BINARY_REFUSED = "binary frames are not accepted; send JSON in text frames"
TARGETABLE = (OfferMessage, AnswerMessage, IceCandidateMessage, AppMessage)
RELAYED = (*TARGETABLE, MediaStateMessage)

_PONG = PONG_FRAME.decode()


class SessionEnded(Exception):
    """Raised inside a session's reader to end it with a close code."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class Session:
    """One peer on one WebSocket."""

    def __init__(
        self,
        websocket: WebSocket,
        room_id: str,
        member: Member,
        principal: Principal,
        settings: Settings,
    ) -> None:
        self.websocket = websocket
        self.room_id = room_id
        self.member = member
        self.principal = principal
        self.bucket = TokenBucket(settings.rate_limit_per_s, settings.rate_limit_burst)
        self._queue: asyncio.Queue[str] = asyncio.Queue(maxsize=settings.send_queue_size)
        self._held: list[str] | None = []
        self._limit = settings.send_queue_size
        self._reader: asyncio.Task[Any] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self.end: SessionEnded | None = None

    @property
    def peer_id(self) -> str:
        return self.member.peer_id

    def enqueue(self, frame: str) -> None:
        if self._held is not None:
            # Not welcomed yet: keep arrivals until the welcome goes first.
            if len(self._held) >= self._limit:
                self.abort(SLOW_CONSUMER_CLOSE, "send queue overflow")
                return
            self._held.append(frame)
            return
        try:
            self._queue.put_nowait(frame)
        except asyncio.QueueFull:
            metrics.SLOW_CONSUMERS.inc()
            self.abort(SLOW_CONSUMER_CLOSE, "send queue overflow")
            return
        metrics.MESSAGES_DELIVERED.inc()

    def start(self, welcome: str) -> None:
        """Send the welcome, then whatever arrived while joining, then live frames."""
        held, self._held = self._held or [], None
        self._queue.put_nowait(welcome)
        for frame in held:
            self.enqueue(frame)
        self._reader = asyncio.current_task()
        self._writer = asyncio.create_task(self._write_forever(), name=f"sbd-writer-{self.peer_id}")
        self.schedule_expiry()

    def schedule_expiry(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        delay = max(self.principal.expires_at - time.time(), 0.0)
        self._expiry = asyncio.get_running_loop().call_later(
            delay, self.abort, CloseCode.UNAUTHORIZED, "token expired"
        )

    def abort(self, code: int, reason: str) -> None:
        """End the session from outside its reader (kick, expiry, overflow)."""
        if self.end is not None:
            return
        self.end = SessionEnded(code, reason)
        if self._reader is not None:
            self._reader.cancel()

    async def _write_forever(self) -> None:
        send = self.websocket.send
        queue = self._queue
        try:
            while True:
                frame = await queue.get()
                await send({"type": "websocket.send", "text": frame})
                queue.task_done()
        except Exception:  # the peer went away; the reader notices and cleans up
            self.abort(CloseCode.GOING_AWAY, "send failed")

    async def stop(self, code: int, reason: str) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        if self._writer is not None:
            if code == CloseCode.NORMAL:
                await self._drain()
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        await close_websocket(self.websocket, code, reason)

    async def _drain(self) -> None:
        """Let queued frames go out before a normal close, briefly."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), CLOSE_TIMEOUT_S)


async def close_websocket(websocket: WebSocket, code: int, reason: str = "") -> None:
    """Close without ever blocking on a peer that does not read."""
    if websocket.application_state != WebSocketState.CONNECTED:
        return
    with contextlib.suppress(Exception):
        await asyncio.wait_for(websocket.close(code, reason[:120]), CLOSE_TIMEOUT_S)


class ConnectionManager:
    def __init__(self, broker: Broker, tokens: TokenService, settings: Settings) -> None:
        self.broker = broker
        self.tokens = tokens
        self.settings = settings
        self._rooms: dict[str, dict[str, Session]] = {}
        broker.set_delivery(self.deliver)

    @property
    def session_count(self) -> int:
        return sum(len(peers) for peers in self._rooms.values())

    # --- fan-out (called by the broker for every envelope of a local room) --

    def deliver(self, room_id: str, envelope: Envelope) -> None:
        local = self._rooms.get(room_id)
        if not local:
            return
        if envelope.to:
            session = local.get(envelope.to)
            if session is None:
                return
            if envelope.frame == KICK:
                session.abort(CloseCode.UNAUTHORIZED, "removed from the room by a host")
            else:
                session.enqueue(envelope.frame)
            return
        frame = envelope.frame
        for peer_id, session in local.items():
            if peer_id != envelope.exclude:
                session.enqueue(frame)

    # --- one WebSocket session ------------------------------------------

    async def run(self, websocket: WebSocket, room_id: str, principal: Principal) -> None:
        """Join ``room_id`` as ``principal`` and serve until the session ends.

        The WebSocket is already accepted and authenticated."""
        member = Member(secrets.token_urlsafe(12), principal.user_id, principal.name)
        session = Session(websocket, room_id, member, principal, self.settings)
        self._rooms.setdefault(room_id, {})[member.peer_id] = session
        metrics.LOCAL_ROOMS.set(len(self._rooms))
        end = SessionEnded(CloseCode.GOING_AWAY, "")
        joined = False
        try:
            await self.broker.subscribe(room_id)
            try:
                participants = await self.broker.join(
                    room_id, member, self.settings.max_peers_per_room
                )
                joined = True
                metrics.ROOM_SIZE.observe(len(participants) + 1)
                session.start(
                    frames.welcome(member, room_id, secrets.token_urlsafe(24), participants)
                )
                await self._read_forever(session)
            finally:
                if joined and (session.end is None or session.end.code != CloseCode.NORMAL):
                    await self.broker.leave(room_id, member)
                await self.broker.unsubscribe(room_id)
        except RoomFull:
            end = SessionEnded(CloseCode.ROOM_FULL, "room is full")
        except BrokerUnavailable:
            metrics.BROKER_ERRORS.inc()
            end = SessionEnded(UNAVAILABLE_CLOSE, "signaling backend unavailable, retry")
        except SessionEnded as ended:
            end = ended
        except asyncio.CancelledError:
            if session.end is None:
                raise
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            end = session.end
        finally:
            self._forget(session)
            await session.stop(end.code, end.reason)
            metrics.CONNECTIONS_CLOSED.labels(code=str(end.code)).inc()

    def _forget(self, session: Session) -> None:
        local = self._rooms.get(session.room_id)
        if local is not None:
            local.pop(session.peer_id, None)
            if not local:
                del self._rooms[session.room_id]
        metrics.LOCAL_ROOMS.set(len(self._rooms))

    async def _read_forever(self, session: Session) -> None:
        receive = session.websocket.receive
        max_bytes = self.settings.max_message_bytes
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                raise SessionEnded(message.get("code", CloseCode.GOING_AWAY), "")
            text = message.get("text")
            if text is None:
                self._send_error(session, ProtocolError(ErrorCode.INVALID_MESSAGE, BINARY_REFUSED))
                continue
            # Characters never outnumber UTF-8 bytes: encode only when it matters.
            if len(text) > max_bytes or (
                len(text) * 4 > max_bytes and len(text.encode()) > max_bytes
            ):
                raise SessionEnded(CloseCode.MESSAGE_TOO_BIG, "frame too large")
            if not session.bucket.allow():
                if session.bucket.strikes >= RATE_LIMIT_STRIKES:
                    raise SessionEnded(CloseCode.RATE_LIMITED, "rate limit exceeded")
                self._send_error(session, ProtocolError(ErrorCode.RATE_LIMITED, "slow down"))
                continue
            try:
                await self._handle(session, parse_client_frame(text))
            except ProtocolError as error:
                self._send_error(session, error)

    async def _handle(self, session: Session, message: ClientMessage) -> None:
        metrics.MESSAGES_RECEIVED.labels(type=message.type.value).inc()
        if isinstance(message, RELAYED):
            if isinstance(message, MediaStateMessage):
                media = message.payload.model_dump(exclude_none=True)
                envelope = frames.relayed(message.type, session.member, None, media)
                await self.broker.set_media(
                    session.room_id, session.peer_id, orjson.dumps(media), envelope
                )
                return
            assert isinstance(message, TARGETABLE)
            payload = message.payload
            if isinstance(payload, BaseModel):
                payload = payload.model_dump(exclude_none=True)
            to = message.to
            if to == session.peer_id:
                raise ProtocolError(
                    ErrorCode.INVALID_MESSAGE, "cannot send to yourself", message.id
                )
            envelope = frames.relayed(message.type, session.member, to, payload)
            if not await self.broker.publish(session.room_id, envelope):
                raise ProtocolError(
                    ErrorCode.UNKNOWN_PEER, f"no peer {to} in the room", message.id
                )
        elif isinstance(message, PingMessage):
            session.enqueue(_PONG)
        elif isinstance(message, LeaveMessage):
            await self.broker.leave(session.room_id, session.member)
            session.end = SessionEnded(CloseCode.NORMAL, "left")
            raise session.end
        elif isinstance(message, RefreshMessage):
            self._refresh(session, message)
        elif isinstance(message, KickMessage):
            await self._kick(session, message)

    def _refresh(self, session: Session, message: RefreshMessage) -> None:
        try:
            principal = self.tokens.verify(message.payload.token)
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
        envelope = Envelope(to=target, exclude=session.peer_id, frame=KICK)
        if target == session.peer_id or not await self.broker.publish(session.room_id, envelope):
            raise ProtocolError(
                ErrorCode.UNKNOWN_PEER, f"no peer {target} in the room", message.id
            )

    @staticmethod
    def _send_error(session: Session, error: ProtocolError) -> None:
        metrics.ERRORS_SENT.labels(code=error.code.value).inc()
        session.enqueue(error.frame().decode())

    async def close_all(self, code: int, reason: str) -> None:
        """Close every local session (shutdown)."""
        for local in list(self._rooms.values()):
            for session in list(local.values()):
                session.abort(code, reason)
