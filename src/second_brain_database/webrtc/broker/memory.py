"""The embedded broker: room state in this process, delivery by direct call.

Used when ``SBD_REDIS_URL`` is unset, so a single instance needs nothing
else. Its semantics match the Redis broker's, which the shared test suite
checks by running the same contract tests against both.
"""

from __future__ import annotations

import asyncio

import orjson

from second_brain_database.webrtc import frames
from second_brain_database.webrtc.broker.base import Broker, Envelope, Member, RoomFull
from second_brain_database.webrtc.schemas import Participant


class _Room:
    __slots__ = ("media", "members")

    def __init__(self) -> None:
        self.members: dict[str, Member] = {}
        self.media: dict[str, dict[str, object]] = {}


class MemoryBroker(Broker):
    def __init__(self) -> None:
        super().__init__()
        self._rooms: dict[str, _Room] = {}

    async def connect(self) -> None:
        return None

    async def disconnect(self) -> None:
        self._rooms.clear()

    async def ready(self) -> bool:
        return True

    async def subscribe(self, room_id: str) -> None:
        # Every room of this process is local: delivery needs no subscription.
        return None

    async def unsubscribe(self, room_id: str) -> None:
        return None

    async def join(self, room_id: str, member: Member, capacity: int) -> list[Participant]:
        room = self._rooms.setdefault(room_id, _Room())
        if len(room.members) >= capacity:
            raise RoomFull(room_id)
        present = self._participants(room)
        room.members[member.peer_id] = member
        self._dispatch(room_id, frames.user_joined(member))
        return present

    async def leave(self, room_id: str, member: Member) -> bool:
        room = self._rooms.get(room_id)
        if room is None or room.members.pop(member.peer_id, None) is None:
            return False
        room.media.pop(member.peer_id, None)
        if not room.members:
            del self._rooms[room_id]
        self._dispatch(room_id, frames.user_left(member))
        return True

    async def publish(self, room_id: str, envelope: Envelope) -> bool:
        if envelope.to:
            room = self._rooms.get(room_id)
            if room is None or envelope.to not in room.members:
                return False
        self._dispatch(room_id, envelope)
        # Yield like a network publish would: a sender whose frames are all
        # buffered must not starve the receivers' writer tasks.
        await asyncio.sleep(0)
        return True

    async def set_media(self, room_id: str, peer_id: str, media: bytes, envelope: Envelope) -> None:
        room = self._rooms.get(room_id)
        if room is not None and peer_id in room.members:
            room.media[peer_id] = orjson.loads(media)
        self._dispatch(room_id, envelope)

    async def participants(self, room_id: str) -> list[Participant]:
        room = self._rooms.get(room_id)
        return self._participants(room) if room is not None else []

    @staticmethod
    def _participants(room: _Room) -> list[Participant]:
        return [m.participant(room.media.get(p)) for p, m in room.members.items()]
