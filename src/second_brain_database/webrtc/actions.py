"""What a :class:`~second_brain_database.webrtc.session.Session` asks its
driver to do: the outputs of the sans-I/O core, as typed values.

The driver (connection_manager.py) runs them in order: synchronously in the
socket's read callback with the embedded broker, awaited with Redis.
"""

from __future__ import annotations

from dataclasses import dataclass

from second_brain_database.auth.tokens import Principal
from second_brain_database.webrtc.broker.model import Envelope
from second_brain_database.webrtc.calls.model import CallerRoute
from second_brain_database.webrtc.schemas import CallPayload


@dataclass(slots=True)
class Send:
    """Send this text frame to this session's client."""

    frame: str


@dataclass(slots=True)
class Publish:
    """Publish to the room; when ``envelope.to`` is not a member, answer
    ``unknown_peer`` (with ``ref``)."""

    envelope: Envelope
    ref: str | None


@dataclass(slots=True)
class SetMedia:
    """Record the sender's media state and broadcast ``envelope`` with it."""

    media: bytes
    envelope: Envelope


@dataclass(slots=True)
class VerifyRefresh:
    """Verify ``token``; feed the result back (``Session.refreshed``)."""

    token: str
    ref: str | None


@dataclass(slots=True)
class Kick:
    """Remove ``peer_id`` from the room; ``unknown_peer`` if not a member."""

    peer_id: str
    ref: str | None


@dataclass(slots=True)
class Close:
    """End the session with this close code (``Session.end`` holds it)."""

    code: int
    reason: str


@dataclass(slots=True)
class BarrierPassed:
    """Every frame published before this session's hand-over has arrived."""


@dataclass(slots=True)
class StartCall:
    """Ring ``request.to_user`` for ``caller`` (checked already: claims, not
    oneself); ``call-state`` frames go to ``route``, ``ringing`` with ``ref``."""

    request: CallPayload
    caller: Principal
    route: CallerRoute
    ref: str | None


@dataclass(slots=True)
class AnswerCall:
    """Answer ``call_id`` as ``callee`` from user socket ``connection_id``;
    ``unknown_call`` unless it rings that user."""

    call_id: str
    accept: bool
    callee: Principal
    connection_id: str
    ref: str | None


@dataclass(slots=True)
class CancelCall:
    """Cancel ``call_id``; ``unknown_call`` unless it rings and ``route`` started it."""

    call_id: str
    route: CallerRoute
    ref: str | None


Action = (
    Send
    | Publish
    | SetMedia
    | VerifyRefresh
    | Kick
    | Close
    | BarrierPassed
    | StartCall
    | AnswerCall
    | CancelCall
)
NEEDS_AWAIT = (SetMedia, VerifyRefresh, Kick, StartCall, AnswerCall, CancelCall)
"""Actions that wait on the backend or the token verifier whatever the broker."""
