"""What a :class:`~second_brain_database.webrtc.session.Session` asks its
driver to do: the outputs of the sans-I/O core, as typed values.

The driver (connection_manager.py) runs them in order: synchronously in the
socket's read callback with the embedded broker, awaited with Redis.
"""

from __future__ import annotations

from dataclasses import dataclass

from second_brain_database.webrtc.broker.model import Envelope


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


Action = Send | Publish | SetMedia | VerifyRefresh | Kick | Close | BarrierPassed
NEEDS_AWAIT = (SetMedia, VerifyRefresh, Kick)
"""Actions that wait on the backend or the token verifier whatever the broker."""
