"""What a ``call`` may ask, decided from the token alone (no I/O)."""

from __future__ import annotations

from second_brain_database.auth.tokens import Principal
from second_brain_database.webrtc.schemas import CallMessage, ErrorCode, ProtocolError


def call_refusal(caller: Principal, message: CallMessage) -> ProtocolError | None:
    """Why ``caller`` may not send this ``call``, or None: ringing oneself is
    ``invalid_message``; a room the token may not join, or a user its
    ``calls`` claim does not list, is ``forbidden``."""
    request = message.payload
    if request.to_user == caller.user_id:
        return ProtocolError(ErrorCode.INVALID_MESSAGE, "cannot call yourself", message.id)
    if not caller.may_join(request.room_id):
        return ProtocolError(ErrorCode.FORBIDDEN, "token not valid for this room", message.id)
    if not caller.may_call(request.to_user):
        return ProtocolError(ErrorCode.FORBIDDEN, "token may not call this user", message.id)
    return None
