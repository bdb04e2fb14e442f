"""The broker interface: room membership, and publishing to a room.

One broker per server process. Every message for a room is published to the
room's channel as an :class:`Envelope`; the broker hands each envelope that
reaches this process to the single delivery callback the connection manager
registered, which fans it out to the local connections of that room. An
instance is subscribed to a room while it has at least one local peer there.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from second_brain_database.webrtc.schemas import Participant


class RoomFull(Exception):
    """The room already holds its maximum number of peers."""


class BrokerUnavailable(Exception):
    """The shared backend cannot be reached right now."""


@dataclass(frozen=True, slots=True)
class Envelope:
    """A frame addressed within a room.

    ``to`` is a peer id, or ``""`` for every peer of the room but ``exclude``.
    ``frame`` is the serialized text frame, encoded once for all receivers.
    A ``frame`` starting with ``!`` is a control instruction for the instance
    holding ``to`` (e.g. ``!kick``), never sent to a client.
    """

    to: str
    exclude: str
    frame: str

    def pack(self) -> bytes:
        # Peer ids never contain a newline (schemas.PeerId), so two newlines
        # delimit the routing header without parsing the JSON frame again.
        return f"{self.to}\n{self.exclude}\n{self.frame}".encode()

    @classmethod
    def unpack(cls, data: bytes | str) -> Envelope:
        text = data.decode() if isinstance(data, bytes) else data
        to, exclude, frame = text.split("\n", 2)
        return cls(to, exclude, frame)


KICK = "!kick"

Deliver = Callable[[str, Envelope], None]


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


class Broker(ABC):
    """What the connection manager needs from a backend."""

    def __init__(self) -> None:
        self._deliver: Deliver | None = None

    def set_delivery(self, deliver: Deliver) -> None:
        self._deliver = deliver

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
        """Count one more local peer in ``room_id``; the first subscribes.

        Returns once envelopes published to the room reach this process."""

    @abstractmethod
    async def unsubscribe(self, room_id: str) -> None:
        """Count one local peer fewer in ``room_id``; the last unsubscribes."""

    @abstractmethod
    async def join(self, room_id: str, member: Member, capacity: int) -> list[Participant]:
        """Add ``member`` unless the room is full (:class:`RoomFull`), announce
        it with ``user-joined``, and return the participants already there."""

    @abstractmethod
    async def leave(self, room_id: str, member: Member) -> bool:
        """Remove the peer if this instance still owns it and announce it with
        ``user-left``; False when it was not (or no longer) ours."""

    @abstractmethod
    async def publish(self, room_id: str, envelope: Envelope) -> bool:
        """Publish to the room; False (nothing sent) when ``envelope.to`` is
        not a member. One backend round trip."""

    @abstractmethod
    async def set_media(self, room_id: str, peer_id: str, media: bytes, envelope: Envelope) -> None:
        """Record the peer's media state and publish ``envelope`` with it."""

    @abstractmethod
    async def participants(self, room_id: str) -> list[Participant]: ...
