"""What the pub/sub and the room store exchange: envelopes, members, policies,
and the ways a room operation can fail."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import orjson

from second_brain_database.webrtc.schemas import Participant

MAILBOX_MAX_FRAMES = 1024


class RoomFull(Exception):
    """The room already holds its maximum number of peers."""


class JoinRefused(Exception):
    """The room's policy keeps this user out (locked, or not invited)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PolicyForbidden(Exception):
    """Another host owns the room's policy."""


@dataclass(frozen=True, slots=True)
class RoomPolicy:
    """Who may join a room. ``owner`` is the host who first restricted it;
    ``invited`` None means anyone (with a token for the room) may join."""

    owner: str | None = None
    locked: bool = False
    invited: tuple[str, ...] | None = None


POLICY_TTL_S = 86_400
LOCKED = "room is locked"
NOT_INVITED = "not invited to this room"


class BrokerUnavailable(Exception):
    """The shared backend cannot be reached right now."""


class ResumeRefused(Exception):
    """The resume token is unknown, expired, already used or another user's."""


class ResumeBusy(Exception):
    """Another session still serves the peer, or (``handing_over``) its
    session ended and is moving the peer's unsent frames to the mailbox."""

    def __init__(self, *, handing_over: bool) -> None:
        super().__init__("handing over" if handing_over else "served")
        self.handing_over = handing_over


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs twice as much
class Envelope:
    """A frame addressed within a room, packed as four lines: ingress time,
    ``to``, ``exclude``, then the frame.

    ``to`` is a peer id, or ``""`` for every peer of the room but those in
    ``exclude`` (comma-separated: the sender, and peers waiting to resume,
    which get the frame in their mailbox instead). ``frame`` is the text
    frame, serialized once for all receivers, or an encoded
    :class:`~second_brain_database.webrtc.broker.control.Control` for the
    session serving ``to``, never sent on.
    """

    to: str
    exclude: str
    frame: str
    sent_at: float = 0.0
    """``time.time()`` at the sender's ingress, for the relay latency
    histogram; 0 for server-made frames."""

    def pack(self) -> bytes:
        # Peer ids never contain a newline or a comma (schemas.PeerId), so
        # the routing header needs no parsing of the JSON frame.
        return f"{self.sent_at:.6f}\n{self.to}\n{self.exclude}\n{self.frame}".encode()

    @classmethod
    def unpack(cls, data: bytes | str) -> Envelope:
        text = data.decode() if isinstance(data, bytes) else data
        sent_at, to, exclude, frame = text.split("\n", 3)
        return cls(to, exclude, frame, float(sent_at or 0))

    def excludes(self, peer_id: str) -> bool:
        exclude = self.exclude
        if peer_id == exclude:
            return True
        return "," in exclude and peer_id in exclude.split(",")


@dataclass(frozen=True, slots=True)
class Member:
    """A peer as the room's shared state records it."""

    peer_id: str
    user_id: str
    name: str

    def to_json(self) -> bytes:
        return orjson.dumps({"peer_id": self.peer_id, "user_id": self.user_id, "name": self.name})

    @classmethod
    def from_json(cls, data: bytes | str) -> Member:
        raw = orjson.loads(data)
        return cls(raw["peer_id"], raw["user_id"], raw["name"])

    def participant(self, media: dict[str, object] | None) -> Participant:
        return Participant(
            peer_id=self.peer_id, user_id=self.user_id, name=self.name, media=media or {}
        )


@dataclass(slots=True)
class Resumed:
    participants: list[Participant]
    """Everyone in the room, the resumed peer included."""
    mailbox: list[str] = field(default_factory=list)
    """Frames addressed to the peer while it was away, in order."""


def secret_digest(secret: str) -> str:
    """What the broker stores of a resume secret."""
    return hashlib.sha256(secret.encode()).hexdigest()
