"""The signaling session, sans I/O: one peer's protocol state and decisions.

In the spirit of python-websockets' ``Protocol``: a :class:`Session` holds
no socket, no task and no timer. Its inputs are a client frame
(:meth:`Session.receive`), a control envelope from the broker
(:meth:`Session.control`), a timer (:meth:`Session.timer_fired`) and the
result of a token check (:meth:`Session.refreshed`); its outputs are lists of
typed actions (webrtc/actions.py) that the driver (connection_manager.py)
runs. Its one state is :class:`SessionState`.

:class:`SessionCore` is what a room's :class:`Session` shares with a user
socket's session (calls/user_session.py): the checks every frame passes
first, token refresh, the timer, ``call`` and ``call-cancel``.
"""

from __future__ import annotations

import secrets
from abc import ABC, abstractmethod
from enum import Enum

import orjson

from second_brain_database.auth.tokens import Principal
from second_brain_database.config import Settings
from second_brain_database.limits.token_bucket import TokenBucket
from second_brain_database.webhooks.events import LeaveReason
from second_brain_database.webrtc import metrics, server_frames
from second_brain_database.webrtc.actions import (
    Action,
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
from second_brain_database.webrtc.broker.control import Control, ControlKind
from second_brain_database.webrtc.broker.model import Member
from second_brain_database.webrtc.calls.model import CallerRoute
from second_brain_database.webrtc.calls.rules import call_refusal
from second_brain_database.webrtc.schemas import (
    PONG_FRAME,
    AnswerMessage,
    AppMessage,
    CallCancelMessage,
    CallMessage,
    CallSetupMessage,
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

# Consecutive frames refused by the rate limit before the connection is closed.
RATE_LIMIT_STRIKES = 20
TOO_DEEP = "payload is nested too deeply"
BINARY_REFUSED = "binary frames are not accepted; send JSON in text frames"
TARGETABLE = (OfferMessage, AnswerMessage, IceCandidateMessage, AppMessage)
# Messages whose actions never wait with the embedded broker: handled in the
# socket's read callback there (connection_manager.ConnectionManager._on_arrival).
HANDLED_ON_ARRIVAL = (*TARGETABLE, PingMessage)
_PONG = PONG_FRAME.decode()


class SessionState(Enum):
    JOINING = "joining"
    """Joined or resuming in the room; frames for it are held for the welcome."""
    LIVE = "live"
    """Welcomed: frames go to the client."""
    ENDING = "ending"
    """Its end is decided (:attr:`Session.end`): frames are held for the mailbox."""
    STOPPED = "stopped"
    """Nothing more is written; what is held goes to the mailbox or nowhere."""


class SessionEnded(Exception):
    """Why a session ended: the close code and reason it is closed with, and
    (should the peer be gone for good) the ``participant.left`` reason."""

    def __init__(self, code: int, reason: str, departure: LeaveReason | None = None) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        # Only a ``leave`` frame is a leave; a close, even 1000, is "closed".
        self.departure = departure or LeaveReason.CLOSED


class TooBig:
    """A client frame larger than ``SBD_MAX_MESSAGE_BYTES``."""


TOO_BIG = TooBig()
Frame = ClientMessage | ProtocolError | TooBig


def read_frame(data: str | bytes, max_bytes: int) -> Frame:
    """A client frame, parsed and validated once: a message, the error it
    gets, or :data:`TOO_BIG`. No state changes: the session decides."""
    if not isinstance(data, str):
        return ProtocolError(ErrorCode.INVALID_MESSAGE, BINARY_REFUSED)
    # Characters never outnumber UTF-8 bytes: encode only when it matters.
    if len(data) > max_bytes or (len(data) * 4 > max_bytes and len(data.encode()) > max_bytes):
        return TOO_BIG
    try:
        return parse_client_frame(data)
    except ProtocolError as error:
        return error


def error(problem: ProtocolError) -> Send:
    metrics.ERRORS_SENT.labels(code=problem.code.value).inc()
    return Send(problem.frame().decode())


def unknown_peer(peer_id: str | None, ref: str | None) -> Send:
    return error(ProtocolError(ErrorCode.UNKNOWN_PEER, f"no peer {peer_id} in the room", ref))


class SessionCore(ABC):
    """What every signaling connection has, room socket or user socket: its
    state, its token, its rate limit, its timer, and the outgoing calls it
    started (cancelled when it ends for good)."""

    __slots__ = (
        "bucket",
        "called",
        "end",
        "frames_in",
        "idle_timeout",
        "last_message",
        "opened_at",
        "principal",
        "state",
    )

    def __init__(self, principal: Principal, settings: Settings, now: float) -> None:
        self.principal = principal
        self.bucket = TokenBucket(settings.rate_limit_per_s, settings.rate_limit_burst)
        self.idle_timeout = settings.idle_timeout
        self.opened_at = self.last_message = now
        self.frames_in = 0
        self.state = SessionState.JOINING
        self.end: SessionEnded | None = None
        # Whether it sent a ``call``: only then does its end look for calls to cancel.
        self.called = False

    @property
    @abstractmethod
    def route(self) -> CallerRoute:
        """Where the calls it starts send their ``call-state`` frames."""

    def screen(self, frame: Frame) -> list[Action] | None:
        """The checks every frame passes first, in this order: size, rate
        limit, validity. Their answer, or None for a valid message."""
        self.frames_in += 1
        if isinstance(frame, TooBig):
            return [self._close(CloseCode.MESSAGE_TOO_BIG, "frame too large")]
        if not self.bucket.allow():
            if self.bucket.strikes >= RATE_LIMIT_STRIKES:
                return [self._close(CloseCode.RATE_LIMITED, "rate limit exceeded")]
            return [error(ProtocolError(ErrorCode.RATE_LIMITED, "slow down"))]
        if isinstance(frame, ProtocolError):
            return [error(frame)]
        return None

    def call_actions(self, frame: CallMessage | CallCancelMessage) -> list[Action]:
        """``call`` and ``call-cancel``, on either socket."""
        if isinstance(frame, CallCancelMessage):
            return [CancelCall(frame.payload.call_id, self.route, frame.id)]
        refused = call_refusal(self.principal, frame)
        if refused is not None:
            return [error(refused)]
        self.called = True
        return [StartCall(frame.payload, self.principal, self.route, frame.id)]

    def may_keep(self, principal: Principal) -> bool:
        """Whether a refreshed token may carry this session on."""
        return principal.user_id == self.principal.user_id

    def refreshed(self, principal: Principal | None, why: str, ref: str | None) -> list[Action]:
        """The outcome of :class:`VerifyRefresh`: the verified token, or None
        and why it was refused."""
        if principal is None:
            return [error(ProtocolError(ErrorCode.FORBIDDEN, f"refresh refused: {why}", ref))]
        if not self.may_keep(principal):
            message = "refresh token is for another user or room"
            return [error(ProtocolError(ErrorCode.FORBIDDEN, message, ref))]
        self.principal = principal
        return []

    # --- state ------------------------------------------------------------

    def finish(self, code: int, reason: str, departure: LeaveReason | None = None) -> SessionEnded:
        """Record why the session ends (the first reason wins) and return it."""
        if self.end is None:
            self.end = SessionEnded(code, reason, departure)
            if self.state is not SessionState.STOPPED:
                self.state = SessionState.ENDING
        return self.end

    def welcomed(self) -> None:
        if self.state is SessionState.JOINING:
            self.state = SessionState.LIVE

    def stop(self) -> bool:
        """Stop writing; True the first time."""
        first = self.state is not SessionState.STOPPED
        self.state = SessionState.STOPPED
        return first

    # --- input: the timer -----------------------------------------------------

    def next_check_in(self, monotonic: float, wall: float) -> float:
        """Seconds until the earlier of the token's expiry and the idle timeout
        counted from the last valid message (re-armed when it fires, not reset
        on every frame)."""
        idle_in = self.last_message + self.idle_timeout - monotonic
        expires_in = self.principal.expires_at - wall
        return max(min(idle_in, expires_in), 0.0)

    def timer_fired(self, monotonic: float, wall: float) -> list[Action]:
        """Close for an expired token or idleness; nothing when neither is due."""
        if self.end is not None:
            return []
        if self.principal.expires_at <= wall:
            return [self._close(CloseCode.UNAUTHORIZED, "token expired", LeaveReason.EXPIRED)]
        if monotonic - self.last_message >= self.idle_timeout:
            return [self._close(CloseCode.IDLE, "no message received for too long")]
        return []

    def _close(self, code: int, reason: str, departure: LeaveReason | None = None) -> Close:
        ended = self.finish(code, reason, departure)
        return Close(ended.code, ended.reason)


class Session(SessionCore):
    """One peer of a room on one connection: its state and what each input
    makes it do."""

    __slots__ = ("member", "owner", "resume_secret", "room_id")

    def __init__(
        self, room_id: str, member: Member, principal: Principal, settings: Settings, now: float
    ) -> None:
        super().__init__(principal, settings, now)
        self.room_id = room_id
        self.member = member
        self.owner = secrets.token_hex(8)
        self.resume_secret = secrets.token_urlsafe(24)

    @property
    def route(self) -> CallerRoute:
        # By room and peer, not connection: a resumed session still hears its calls.
        return CallerRoute.in_room(self.room_id, self.peer_id)

    @property
    def peer_id(self) -> str:
        return self.member.peer_id

    @property
    def resume_token(self) -> str:
        return f"{self.peer_id}.{self.resume_secret}"

    # --- input: a client frame ----------------------------------------------

    def receive(self, frame: Frame, now: float) -> list[Action]:
        """The actions one client frame calls for; every path calls this, with
        the same checks in the same order: size, rate limit, validity, type."""
        screened = self.screen(frame)
        if screened is not None:
            return screened
        assert not isinstance(frame, (TooBig, ProtocolError))
        self.last_message = now  # only valid messages count
        metrics.count_received(frame.type.value)
        if isinstance(frame, TARGETABLE):  # the hot path: inline, not a method call
            if frame.to == self.member.peer_id:
                why = "cannot send to yourself"
                return [error(ProtocolError(ErrorCode.INVALID_MESSAGE, why, frame.id))]
            payload = relay_payload(frame)
            try:
                envelope = server_frames.relayed(frame.type, self.member, frame.to, payload)
            except orjson.JSONEncodeError:  # nested deeper than the encoder allows
                return [error(ProtocolError(ErrorCode.INVALID_MESSAGE, TOO_DEEP, frame.id))]
            return [Publish(envelope, frame.id)]
        if isinstance(frame, PingMessage):
            return [Send(_PONG)]
        if isinstance(frame, MediaStateMessage):
            media = frame.payload.as_json()
            envelope = server_frames.relayed(frame.type, self.member, None, media)
            return [SetMedia(orjson.dumps(media), envelope)]
        if isinstance(frame, LeaveMessage):
            return [self._close(CloseCode.NORMAL, "left", LeaveReason.LEAVE)]
        if isinstance(frame, RefreshMessage):
            return [VerifyRefresh(frame.payload.token, frame.id)]
        if isinstance(frame, KickMessage):
            return [self._kick(frame)]
        if isinstance(frame, CallSetupMessage):
            metrics.observe_call_setup(frame.payload)
            return []
        if isinstance(frame, (CallMessage, CallCancelMessage)):
            return self.call_actions(frame)
        # call-answer: only a user socket answers calls.
        why = f"'{frame.type.value}' is not accepted on a room socket"
        return [error(ProtocolError(ErrorCode.INVALID_MESSAGE, why, frame.id))]

    def _kick(self, message: KickMessage) -> Action:
        if not self.principal.is_host:
            return error(ProtocolError(ErrorCode.FORBIDDEN, "only a host may kick", message.id))
        target = message.payload.peer_id
        if target == self.peer_id:
            return unknown_peer(target, message.id)
        return Kick(target, message.id)

    def may_keep(self, principal: Principal) -> bool:
        return super().may_keep(principal) and principal.may_join(self.room_id)

    # --- input: a control envelope ------------------------------------------

    def control(self, control: Control) -> list[Action]:
        if control.kind is ControlKind.BARRIER:
            return [BarrierPassed()] if control.owner == self.owner else []
        if self.end is not None:
            return []
        if control.kind is ControlKind.KICK:
            why = "removed from the room by a host"
            return [self._close(CloseCode.UNAUTHORIZED, why, LeaveReason.KICKED)]
        if control.owner != self.owner:  # REPLACED by another session
            return [
                self._close(CloseCode.SESSION_REPLACED, "session resumed on another connection")
            ]
        return []
