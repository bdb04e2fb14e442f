"""The broker interface: room membership, resumable sessions, publishing.

One broker per server process. Every message for a room is published to the
room's channel as an :class:`Envelope`; the broker hands each envelope that
reaches this process to the single delivery callback the connection manager
registered, which fans it out to the local connections of that room. An
instance is subscribed to a room while it has at least one local peer there.

Each connection is a *session* with its own id (its ``owner`` token). A
peer is served by one session at a time; when that connection ends without
``leave`` the peer waits, for ``SBD_RESUME_TTL`` seconds, for a new session
to resume it, and messages to it go to its mailbox meanwhile.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
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


Deliver = Callable[[str, Envelope], None]
Resync = Callable[[], Awaitable[None]]


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


class Broker(ABC):
    """What the connection manager needs from a backend."""

    def __init__(self, *, resume_ttl: float) -> None:
        self._deliver: Deliver | None = None
        self._resync: Resync | None = None
        self.resume_ttl = resume_ttl

    def set_delivery(self, deliver: Deliver) -> None:
        self._deliver = deliver

    def set_resync(self, resync: Resync) -> None:
        """Called when shared state may have been lost (a backend restart)."""
        self._resync = resync

    def _dispatch(self, room_id: str, envelope: Envelope) -> None:
        if self._deliver is not None:
            self._deliver(room_id, envelope)

    @abstractmethod
    async def connect(self) -> None: ...

    @abstractmethod
    async def disconnect(self) -> None: ...

    @abstractmethod
    async def ready(self) -> bool:
        """Whether the backend can serve now (health checks)."""

    @abstractmethod
    async def subscribe(self, room_id: str) -> None:
        """Count one more local session in ``room_id``; the first subscribes.

        Returns once envelopes published to the room reach this process."""

    @abstractmethod
    async def unsubscribe(self, room_id: str) -> None:
        """Count one local session fewer in ``room_id``; the last unsubscribes."""

    @abstractmethod
    async def join(
        self,
        room_id: str,
        member: Member,
        owner: str,
        capacity: int,
        resume_secret: str,
        *,
        privileged: bool = False,
    ) -> list[Participant]:
        """Add ``member``, served by session ``owner``, unless the room is full
        (:class:`RoomFull`) or its policy refuses the user (:class:`JoinRefused`;
        ``privileged`` admins pass); announce it with ``user-joined``; return
        the participants that were already there."""

    @abstractmethod
    async def set_policy(
        self,
        room_id: str,
        user_id: str,
        *,
        locked: bool,
        invited: list[str] | None,
        privileged: bool = False,
    ) -> RoomPolicy:
        """Restrict or lock the room. The first host to do so owns its policy;
        anyone else but an admin (``privileged``) gets :class:`PolicyForbidden`.
        Policies expire POLICY_TTL_S after their last change."""

    @abstractmethod
    async def get_policy(self, room_id: str) -> RoomPolicy: ...

    @abstractmethod
    async def reregister(
        self, room_id: str, member: Member, owner: str, resume_secret: str
    ) -> bool:
        """Put a live local peer back if the shared state lost it, announcing
        it with ``user-joined``; True when it was missing."""

    @abstractmethod
    async def leave(self, room_id: str, member: Member, owner: str) -> bool:
        """Remove the peer while ``owner`` still serves it and announce
        ``user-left``; False when it was not (or no longer) ``owner``'s."""

    @abstractmethod
    async def away(self, room_id: str, member: Member, owner: str) -> bool:
        """``owner``'s connection ended without ``leave``: keep the peer for
        ``resume_ttl`` seconds and publish the barrier control frame to it.
        False when ``owner`` no longer serves the peer."""

    @abstractmethod
    async def release(self, room_id: str, member: Member, unsent: list[str]) -> None:
        """Put the frames the old session never sent at the head of the
        peer's mailbox and make the peer resumable."""

    @abstractmethod
    async def resume(
        self,
        room_id: str,
        peer_id: str,
        user_id: str,
        secret: str,
        owner: str,
        new_secret: str,
        *,
        force: bool = False,
    ) -> Resumed:
        """Hand the peer to session ``owner``. Raises :class:`ResumeRefused`,
        or :class:`ResumeBusy` while another session serves it (``force``
        takes it regardless, for an owner that died)."""

    @abstractmethod
    async def publish(self, room_id: str, envelope: Envelope) -> bool:
        """Deliver to the room (``to`` empty) or to one peer; False (nothing
        sent) when ``envelope.to`` is not a member. One backend round trip."""

    @abstractmethod
    async def set_media(self, room_id: str, media: bytes, envelope: Envelope) -> None:
        """Record the media state of the envelope's sender (its ``exclude``)
        and broadcast the envelope with it."""

    @abstractmethod
    async def kick(self, room_id: str, peer_id: str) -> bool:
        """Remove a peer: its session is told to close (``ControlKind.KICK``), or, when it
        is waiting to resume, it is removed at once. False if not a member."""

    @abstractmethod
    async def participants(self, room_id: str) -> list[Participant]: ...

    # --- administration (admin API, ``sbd rooms``) ------------------------

    @abstractmethod
    async def list_rooms(self, cursor: str, count: int) -> tuple[list[tuple[str, int]], str]:
        """One page of rooms that have members, as ``(room_id, member count)``,
        and the cursor of the next page (``"0"`` after the last). SCAN
        semantics: a page may be shorter or longer than ``count``, and a room
        that exists for the whole walk is listed at least once."""


class SynchronousBroker(Broker):
    """A broker whose publishing never waits (the embedded one delivers in
    process), so a message can be relayed from a read callback."""

    @abstractmethod
    def publish_now(self, room_id: str, envelope: Envelope) -> bool:
        """:meth:`publish`, done before returning."""
