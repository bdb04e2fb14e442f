"""Typed values the broker passes besides client frames.

A :class:`Control` is an instruction for the one session serving a peer
(never sent on to a client); an :class:`OwnerState` is what a room records
as a peer's owner while no session serves it. Both travel as text, through
Redis Pub/Sub and Lua (redis_scripts.py writes the same literals), so each
has one encoding, here: a control frame starts with ``!``, an owner state
with ``~``; neither can start a JSON frame or a session's owner token (hex).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, StrEnum


class ControlKind(Enum):
    KICK = "!kick"
    """A host removed the peer: close it for good."""
    BARRIER = "!barrier:"
    """Every frame published before it has reached this process (``owner``:
    the session that asked, handing its peer over for a resume)."""
    REPLACED = "!replaced:"
    """Another session (``owner``) resumes the peer: let it go."""


_BY_PREFIX = {kind.value: kind for kind in ControlKind}


@dataclass(frozen=True, slots=True)
class Control:
    kind: ControlKind
    owner: str = ""

    def encode(self) -> str:
        return self.kind.value + self.owner

    @staticmethod
    def decode(frame: str) -> Control | None:
        """The control a frame holds, or None for a client frame."""
        if not frame.startswith(CONTROL_PREFIX):
            return None
        if frame == ControlKind.KICK.value:
            return Control(ControlKind.KICK)
        prefix, _, owner = frame.partition(":")
        kind = _BY_PREFIX.get(prefix + ":")
        return None if kind is None else Control(kind, owner)


CONTROL_PREFIX = "!"


def is_control(frame: str) -> bool:
    return frame.startswith(CONTROL_PREFIX)


class OwnerState(StrEnum):
    """A peer's owner while no session serves it."""

    FLUSHING = "~flushing"
    """Its session ended and is moving unsent frames to the mailbox."""
    AWAY = "~away"
    """Waiting, up to ``SBD_RESUME_TTL`` seconds, for a resume."""


OWNER_STATES = frozenset(OwnerState)


def is_owner_state(owner: str) -> bool:
    return owner in OWNER_STATES
