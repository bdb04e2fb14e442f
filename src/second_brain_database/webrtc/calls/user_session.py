"""A user socket (``/ws/user``), sans I/O: a device of a user, reachable for
calls. Same checks, limits and timer as a room session
(:class:`~second_brain_database.webrtc.session.SessionCore`); it takes
``call``, ``call-answer``, ``call-cancel``, ``ping``, ``refresh`` and ``leave``."""

from __future__ import annotations

from second_brain_database.auth.tokens import Principal
from second_brain_database.config import Settings
from second_brain_database.webrtc import metrics
from second_brain_database.webrtc.actions import Action, AnswerCall, Send, VerifyRefresh
from second_brain_database.webrtc.calls.model import CallerRoute
from second_brain_database.webrtc.ids import new_peer_id
from second_brain_database.webrtc.schemas import (
    PONG_FRAME,
    CallAnswerMessage,
    CallCancelMessage,
    CallMessage,
    CloseCode,
    ErrorCode,
    LeaveMessage,
    PingMessage,
    ProtocolError,
    RefreshMessage,
)
from second_brain_database.webrtc.session import Frame, SessionCore, TooBig, error

_PONG = PONG_FRAME.decode()


class UserSession(SessionCore):
    __slots__ = ("connection_id",)

    def __init__(self, principal: Principal, settings: Settings, now: float) -> None:
        super().__init__(principal, settings, now)
        self.connection_id = new_peer_id()  # the same shape: no comma, no newline

    @property
    def route(self) -> CallerRoute:
        return CallerRoute.user_socket(self.connection_id)

    def receive(self, frame: Frame, now: float) -> list[Action]:
        screened = self.screen(frame)
        if screened is not None:
            return screened
        assert not isinstance(frame, (TooBig, ProtocolError))
        self.last_message = now
        metrics.count_received(frame.type.value)
        if isinstance(frame, PingMessage):
            return [Send(_PONG)]
        if isinstance(frame, LeaveMessage):
            return [self._close(CloseCode.NORMAL, "left")]
        if isinstance(frame, RefreshMessage):
            return [VerifyRefresh(frame.payload.token, frame.id)]
        if isinstance(frame, (CallMessage, CallCancelMessage)):
            return self.call_actions(frame)
        if isinstance(frame, CallAnswerMessage):
            payload = frame.payload
            return [
                AnswerCall(
                    payload.call_id, payload.accept, self.principal, self.connection_id, frame.id
                )
            ]
        why = f"'{frame.type.value}' is not accepted on a user socket"
        return [error(ProtocolError(ErrorCode.INVALID_MESSAGE, why, frame.id))]
