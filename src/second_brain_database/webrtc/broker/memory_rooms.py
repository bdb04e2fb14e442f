"""The embedded room store: room state in this process, delivery through
:class:`MemoryPubSub` by direct call.

Used when ``SBD_REDIS_URL`` is unset, so a single instance needs nothing
else. Its transitions are the table in docs/architecture.md, which
tests/test_room_store.py runs against this store and the Redis one alike.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

import orjson

from second_brain_database.webhooks import events
from second_brain_database.webhooks.events import LeaveReason
from second_brain_database.webhooks.memory_outbox import MemoryOutbox
from second_brain_database.webrtc import server_frames
from second_brain_database.webrtc.broker.control import (
    OWNER_STATES,
    Control,
    ControlKind,
    OwnerState,
    is_owner_state,
)
from second_brain_database.webrtc.broker.memory_pubsub import MemoryPubSub
from second_brain_database.webrtc.broker.model import (
    LOCKED,
    MAILBOX_MAX_FRAMES,
    NOT_INVITED,
    POLICY_TTL_S,
    Envelope,
    JoinRefused,
    Member,
    PolicyForbidden,
    ResumeBusy,
    Resumed,
    ResumeRefused,
    RoomFull,
    RoomPolicy,
    secret_digest,
)
from second_brain_database.webrtc.broker.room_store import SynchronousRoomStore
from second_brain_database.webrtc.schemas import Participant


class _Room:
    __slots__ = ("expiries", "mailboxes", "media", "members", "owners", "secrets")

    def __init__(self) -> None:
        self.members: dict[str, Member] = {}
        self.owners: dict[str, str] = {}
        self.media: dict[str, dict[str, object]] = {}
        self.secrets: dict[str, str] = {}
        self.mailboxes: dict[str, deque[str]] = {}
        self.expiries: dict[str, asyncio.TimerHandle] = {}

    def is_away(self, peer_id: str) -> bool:
        return self.owners.get(peer_id, "") in OWNER_STATES

    def mail(self, peer_id: str, frame: str) -> None:
        self.mailboxes.setdefault(peer_id, deque(maxlen=MAILBOX_MAX_FRAMES)).append(frame)

    def forget(self, peer_id: str) -> None:
        for table in (self.members, self.owners, self.media, self.secrets, self.mailboxes):
            table.pop(peer_id, None)
        expiry = self.expiries.pop(peer_id, None)
        if expiry is not None:
            expiry.cancel()


class MemoryRoomStore(SynchronousRoomStore):
    def __init__(
        self, pubsub: MemoryPubSub, *, resume_ttl: float, outbox: MemoryOutbox | None = None
    ) -> None:
        super().__init__(resume_ttl=resume_ttl, outbox=outbox)
        self._publish_now = pubsub.publish_now
        self._outbox = outbox
        self._rooms: dict[str, _Room] = {}
        self._policies: dict[str, tuple[RoomPolicy, float]] = {}

    async def connect(self) -> None:
        return None

    async def disconnect(self) -> None:
        for room in self._rooms.values():
            for expiry in room.expiries.values():
                expiry.cancel()
        self._rooms.clear()

    async def ready(self) -> bool:
        return True

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
        # All or nothing: everything that can fail comes before the first change.
        joined = server_frames.user_joined(member)
        room = self._rooms.get(room_id) or _Room()
        if len(room.members) >= capacity:
            raise RoomFull(room_id)
        policy = self._policy(room_id)
        if not privileged and policy.owner != member.user_id:
            if policy.locked:
                raise JoinRefused(LOCKED)
            if policy.invited is not None and member.user_id not in policy.invited:
                raise JoinRefused(NOT_INVITED)
        present = self._participants(room)
        if self._outbox is not None:
            started = [events.room_started(room_id)] if not room.members else []
            self._outbox.add(room_id, [*started, events.participant_joined(room_id, member)])
        self._rooms[room_id] = room
        room.members[member.peer_id] = member
        room.owners[member.peer_id] = owner
        room.secrets[member.peer_id] = secret_digest(resume_secret)
        self._publish_now(room_id, joined)
        return present

    async def reregister(
        self, room_id: str, member: Member, owner: str, resume_secret: str
    ) -> bool:
        return False  # this process's state cannot be lost without the process

    async def leave(
        self, room_id: str, member: Member, owner: str, reason: LeaveReason = LeaveReason.LEAVE
    ) -> bool:
        room = self._rooms.get(room_id)
        if room is None or room.owners.get(member.peer_id) != owner:
            return False
        self._remove(room_id, room, member, reason)
        return True

    def _remove(self, room_id: str, room: _Room, member: Member, reason: LeaveReason) -> None:
        left = server_frames.user_left(member)  # before any change: all or nothing
        room.forget(member.peer_id)
        if not room.members:
            del self._rooms[room_id]
        if self._outbox is not None:
            finished = [] if room.members else [events.room_finished(room_id)]
            self._outbox.add(room_id, [events.participant_left(room_id, member, reason), *finished])
        self._publish_now(room_id, left)

    async def away(self, room_id: str, member: Member, owner: str) -> bool:
        room = self._rooms.get(room_id)
        if room is None or room.owners.get(member.peer_id) != owner:
            return False
        room.owners[member.peer_id] = OwnerState.FLUSHING
        room.expiries[member.peer_id] = asyncio.get_running_loop().call_later(
            self.resume_ttl, self._expire, room_id, member
        )
        self._publish_now(
            room_id, Envelope(member.peer_id, "", Control(ControlKind.BARRIER, owner).encode())
        )
        return True

    def _expire(self, room_id: str, member: Member) -> None:
        room = self._rooms.get(room_id)
        if room is not None and room.is_away(member.peer_id):
            room.expiries.pop(member.peer_id, None)
            self._remove(room_id, room, member, LeaveReason.TIMEOUT)

    async def release(self, room_id: str, member: Member, unsent: list[str]) -> None:
        room = self._rooms.get(room_id)
        if room is None or room.owners.get(member.peer_id) != OwnerState.FLUSHING:
            return
        mailbox = room.mailboxes.setdefault(member.peer_id, deque(maxlen=MAILBOX_MAX_FRAMES))
        # Unsent frames were published before anything in the mailbox.
        mailbox.extendleft(reversed(unsent[-MAILBOX_MAX_FRAMES:]))
        while len(mailbox) > MAILBOX_MAX_FRAMES:
            mailbox.popleft()
        room.owners[member.peer_id] = OwnerState.AWAY

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
        room = self._rooms.get(room_id)
        member = room.members.get(peer_id) if room is not None else None
        if room is None or member is None or room.secrets.get(peer_id) != secret_digest(secret):
            raise ResumeRefused(peer_id)
        if member.user_id != user_id:
            raise ResumeRefused(peer_id)
        current = room.owners[peer_id]
        if current != OwnerState.AWAY and not force:
            raise ResumeBusy(handing_over=is_owner_state(current))
        room.owners[peer_id] = owner
        room.secrets[peer_id] = secret_digest(new_secret)
        expiry = room.expiries.pop(peer_id, None)
        if expiry is not None:
            expiry.cancel()
        mailbox = list(room.mailboxes.pop(peer_id, ()))
        return Resumed(self._participants(room), mailbox)

    async def may_resume(self, room_id: str, peer_id: str, user_id: str, secret: str) -> bool:
        room = self._rooms.get(room_id)
        member = room.members.get(peer_id) if room is not None else None
        return (
            room is not None
            and member is not None
            and member.user_id == user_id
            and room.secrets.get(peer_id) == secret_digest(secret)
        )

    async def relay(self, room_id: str, envelope: Envelope) -> bool:
        return self.relay_now(room_id, envelope)

    def relay_now(self, room_id: str, envelope: Envelope) -> bool:
        room = self._rooms.get(room_id)
        if envelope.to:
            if room is None or envelope.to not in room.owners:
                return False
            if room.is_away(envelope.to):
                room.mail(envelope.to, envelope.frame)
                return True
        elif room is not None:
            envelope = self._mail_away(room, envelope)
        self._publish_now(room_id, envelope)
        return True

    @staticmethod
    def _mail_away(room: _Room, envelope: Envelope) -> Envelope:
        away = [p for p in room.owners if room.is_away(p) and p != envelope.exclude]
        for peer_id in away:
            room.mail(peer_id, envelope.frame)
        if not away:
            return envelope
        return Envelope("", ",".join([envelope.exclude, *away]), envelope.frame, envelope.sent_at)

    async def set_media(self, room_id: str, media: bytes, envelope: Envelope) -> None:
        room = self._rooms.get(room_id)
        if room is not None and envelope.exclude in room.members:
            room.media[envelope.exclude] = orjson.loads(media)
        self.relay_now(room_id, envelope)

    async def kick(self, room_id: str, peer_id: str) -> bool:
        room = self._rooms.get(room_id)
        member = room.members.get(peer_id) if room is not None else None
        if room is None or member is None:
            return False
        if room.is_away(peer_id):
            self._remove(room_id, room, member, LeaveReason.KICKED)
        else:
            self._publish_now(room_id, Envelope(peer_id, "", Control(ControlKind.KICK).encode()))
        return True

    def _policy(self, room_id: str) -> RoomPolicy:
        policy, expires = self._policies.get(room_id, (RoomPolicy(), 0.0))
        if expires and expires < time.monotonic():
            del self._policies[room_id]
            return RoomPolicy()
        return policy

    async def set_policy(
        self,
        room_id: str,
        user_id: str,
        *,
        locked: bool,
        invited: list[str] | None,
        privileged: bool = False,
    ) -> RoomPolicy:
        current = self._policy(room_id)
        if current.owner not in (None, user_id) and not privileged:
            raise PolicyForbidden(current.owner)
        owner = current.owner or user_id
        policy = RoomPolicy(
            owner=owner,
            locked=locked,
            invited=None if invited is None else tuple(sorted({owner, *invited})),
        )
        self._policies[room_id] = (policy, time.monotonic() + POLICY_TTL_S)
        return policy

    async def get_policy(self, room_id: str) -> RoomPolicy:
        return self._policy(room_id)

    async def participants(self, room_id: str) -> list[Participant]:
        room = self._rooms.get(room_id)
        return self._participants(room) if room is not None else []

    @staticmethod
    def _participants(room: _Room) -> list[Participant]:
        return [m.participant(room.media.get(p)) for p, m in room.members.items()]

    async def list_rooms(self, cursor: str, count: int) -> tuple[list[tuple[str, int]], str]:
        # The cursor is an offset into the sorted room ids: stable enough for
        # an operator paging through one process's rooms.
        start = int(cursor)
        names = sorted(room_id for room_id, room in self._rooms.items() if room.members)
        page = [(name, len(self._rooms[name].members)) for name in names[start : start + count]]
        end = start + count
        return page, str(end) if end < len(names) else "0"
