"""The Redis room store: room state in Redis hashes, every operation one Lua
script (:mod:`.redis_scripts`) and one round trip, publishing in the same
script so that state and fan-out never disagree.

Keys by name in :mod:`.redis_keys`; presence (heartbeat, reaping dead
instances, resume deadlines) in :mod:`.redis_presence`.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import orjson
from redis.asyncio import Redis, RedisCluster
from redis.exceptions import RedisError

from second_brain_database.redis_clients import RedisClients
from second_brain_database.webhooks import events
from second_brain_database.webhooks.events import LeaveReason, WebhookEvent
from second_brain_database.webhooks.redis_outbox import RedisOutbox
from second_brain_database.webrtc import server_frames
from second_brain_database.webrtc.broker.control import Control, ControlKind, is_owner_state
from second_brain_database.webrtc.broker.model import (
    LOCKED,
    MAILBOX_MAX_FRAMES,
    NOT_INVITED,
    POLICY_TTL_S,
    BrokerUnavailable,
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
from second_brain_database.webrtc.broker.redis_commands import RedisCommands
from second_brain_database.webrtc.broker.redis_keys import (
    AWAY_INDEX_KEY,
    INSTANCES_KEY,
    RoomKeys,
    instance_peers_key,
    room_of_key,
)
from second_brain_database.webrtc.broker.redis_presence import (
    RedisPresence,
    away_entry,
    instance_entry,
)
from second_brain_database.webrtc.broker.room_store import RoomStore
from second_brain_database.webrtc.schemas import Participant

logger = logging.getLogger(__name__)

# Mailboxes outlive the resume window a little, for a resume in its last instant.
_MAILBOX_SLACK_MS = 5_000
# A script's event arguments when webhooks are off (redis_scripts.py).
_NO_EVENT: list[str | bytes] = ["", "", "", ""]


def _event_args(*made: WebhookEvent) -> list[str | bytes]:
    return [arg for e in made for arg in (e.id, e.type, f"{e.at:.6f}", e.body)]


class RedisRoomStore(RoomStore):
    def __init__(
        self,
        redis: RedisClients,
        *,
        instance_id: str,
        presence_ttl: float,
        resume_ttl: float,
        webhooks: bool = False,
    ) -> None:
        # Room changes write webhook events when SBD_WEBHOOK_URLS is set.
        self._outbox = (
            RedisOutbox(redis, instance_id=instance_id, claim_ttl=presence_ttl)
            if webhooks
            else None
        )
        super().__init__(resume_ttl=resume_ttl, outbox=self._outbox)
        self.instance_id = instance_id
        self._redis: Redis | RedisCluster = redis.client
        # Sharded Pub/Sub on a Cluster: a room's messages stay on the shard
        # that owns its hash slot instead of being copied to every node.
        self._publish = "PUBLISH" if redis.cluster is None else "SPUBLISH"
        self._commands = RedisCommands(redis)
        self._mailbox_ttl_ms = int(resume_ttl * 1000) + _MAILBOX_SLACK_MS
        self.presence = RedisPresence(self, redis, instance_id, presence_ttl)

    async def run(self, script: str, keys: list[str], args: list[Any]) -> Any:
        return await self._commands.run(script, keys, args)

    async def command(self, *args: Any) -> Any:
        return await self._commands.command(*args)

    # --- lifecycle ------------------------------------------------------

    async def connect(self) -> None:
        self.presence.start()
        self._commands.start()

    async def disconnect(self) -> None:
        await self.presence.stop()
        await self._commands.stop()
        with contextlib.suppress(RedisError, OSError):
            await self._redis.zrem(INSTANCES_KEY, self.instance_id)

    async def ready(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except (RedisError, OSError):
            return False

    # --- room state -----------------------------------------------------

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
        # All or nothing: the arguments (where encoding can fail) before any write.
        entry = instance_entry(room_id, member, owner)
        args = [
            self._publish,
            member.peer_id,
            member.to_json(),
            owner,
            capacity,
            secret_digest(resume_secret),
            server_frames.user_joined(member).pack(),
            member.user_id,
            "1" if privileged else "0",
            *self._joined_events(room_id, member),
        ]
        await self.command("SADD", instance_peers_key(self.instance_id), entry)
        try:
            result = await self.run("JOIN", RoomKeys.of(room_id).changing, args)
        except BrokerUnavailable:
            await self._drop_entry(entry)
            raise
        if result[0] != 1:
            await self._drop_entry(entry)
            if result[0] == -1:
                raise RoomFull(room_id)
            raise JoinRefused(LOCKED if result[0] == -2 else NOT_INVITED)
        await self._announce_events(room_id)
        return _participants(result[1], result[2])

    # --- webhook events ---------------------------------------------------

    def _joined_events(self, room_id: str, member: Member) -> list[str | bytes]:
        """room.started (written only if the room was empty) and participant.joined."""
        if self._outbox is None:
            return _NO_EVENT * 2
        return _event_args(events.room_started(room_id), events.participant_joined(room_id, member))

    def _left_events(self, room_id: str, member: Member, reason: LeaveReason) -> list[str | bytes]:
        """participant.left and room.finished (written only if the room is then empty)."""
        if self._outbox is None:
            return _NO_EVENT * 2
        left = events.participant_left(room_id, member, reason)
        return _event_args(left, events.room_finished(room_id))

    async def _announce_events(self, room_id: str) -> None:
        if self._outbox is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._outbox.announce(room_id)

    async def set_policy(
        self,
        room_id: str,
        user_id: str,
        *,
        locked: bool,
        invited: list[str] | None,
        privileged: bool = False,
    ) -> RoomPolicy:
        keys = RoomKeys.of(room_id)
        result = await self.run(
            "SET_POLICY",
            [keys.policy, keys.invited],
            [
                user_id,
                "1" if privileged else "0",
                "1" if locked else "0",
                POLICY_TTL_S,
                "0" if invited is None else "1",
                *(invited or []),
            ],
        )
        if result[0] != 1:
            raise PolicyForbidden(_text(result[1]))
        return await self.get_policy(room_id)

    async def get_policy(self, room_id: str) -> RoomPolicy:
        keys = RoomKeys.of(room_id)
        owner, locked, invited = await self.run("GET_POLICY", [keys.policy, keys.invited], [])
        if owner is None:
            return RoomPolicy()
        return RoomPolicy(
            owner=_text(owner),
            locked=locked == b"1",
            invited=tuple(sorted(_text(u) for u in invited)) if invited else None,
        )

    async def _drop_entry(self, entry: str) -> None:
        """Undo the instance's record of a peer that did not join."""
        with contextlib.suppress(BrokerUnavailable):
            await self.command("SREM", instance_peers_key(self.instance_id), entry)

    async def reregister(
        self, room_id: str, member: Member, owner: str, resume_secret: str
    ) -> bool:
        """Put a live local peer back after Redis lost it; True if it was missing."""
        entry = instance_entry(room_id, member, owner)
        await self.command("SADD", instance_peers_key(self.instance_id), entry)
        added = await self.run(
            "REREGISTER",
            RoomKeys.of(room_id).changing,
            [
                self._publish,
                member.peer_id,
                member.to_json(),
                owner,
                0,
                secret_digest(resume_secret),
                server_frames.user_joined(member).pack(),
                *self._joined_events(room_id, member),
            ],
        )
        if added:
            await self._announce_events(room_id)
        return bool(added)

    async def leave(
        self, room_id: str, member: Member, owner: str, reason: LeaveReason = LeaveReason.LEAVE
    ) -> bool:
        return await self.leave_as(self.instance_id, room_id, member, owner, reason)

    async def leave_as(
        self, instance: str, room_id: str, member: Member, owner: str, reason: LeaveReason
    ) -> bool:
        removed = await self.run(
            "LEAVE",
            RoomKeys.of(room_id).changing,
            [
                self._publish,
                member.peer_id,
                owner,
                server_frames.user_left(member).pack(),
                RoomKeys.of(room_id).mailbox(member.peer_id),
                *self._left_events(room_id, member, reason),
            ],
        )
        if removed:
            await self._announce_events(room_id)
        with contextlib.suppress(BrokerUnavailable):
            await self.command(
                "SREM", instance_peers_key(instance), instance_entry(room_id, member, owner)
            )
        return bool(removed)

    async def away(self, room_id: str, member: Member, owner: str) -> bool:
        deadline = await self.run(
            "AWAY",
            RoomKeys.of(room_id).state,
            [
                self._publish,
                member.peer_id,
                owner,
                int(self.resume_ttl * 1000),
                Envelope(member.peer_id, "", Control(ControlKind.BARRIER, owner).encode()).pack(),
            ],
        )
        with contextlib.suppress(BrokerUnavailable):
            await self.command(
                "SREM",
                instance_peers_key(self.instance_id),
                instance_entry(room_id, member, owner),
            )
        if not deadline:
            return False
        await self.command("ZADD", AWAY_INDEX_KEY, deadline, away_entry(room_id, member))
        return True

    async def release(self, room_id: str, member: Member, unsent: list[str]) -> None:
        keys = RoomKeys.of(room_id)
        await self.run(
            "RELEASE",
            [keys.owners, keys.mailbox(member.peer_id)],
            [member.peer_id, self._mailbox_ttl_ms, MAILBOX_MAX_FRAMES, *unsent],
        )

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
        result = await self.run(
            "RESUME",
            RoomKeys.of(room_id).state,
            [
                self._publish,
                peer_id,
                user_id,
                secret_digest(secret),
                owner,
                secret_digest(new_secret),
                "1" if force else "0",
                RoomKeys.of(room_id).mailbox(peer_id),
            ],
        )
        status = result[0]
        if status == -3:
            raise ResumeBusy(handing_over=is_owner_state(_text(result[1])))
        if status != 1:
            raise ResumeRefused(peer_id)
        participants = _participants(result[1], result[2])
        member = next(p for p in participants if p.peer_id == peer_id)
        entry = instance_entry(room_id, Member(peer_id, user_id, member.name), owner)
        await self.command("SADD", instance_peers_key(self.instance_id), entry)
        await self.command(
            "ZREM", AWAY_INDEX_KEY, away_entry(room_id, Member(peer_id, user_id, ""))
        )
        return Resumed(participants, [_text(frame) for frame in result[3]])

    async def may_resume(self, room_id: str, peer_id: str, user_id: str, secret: str) -> bool:
        result = await self.run(
            "MAY_RESUME",
            RoomKeys.of(room_id).state,
            [self._publish, peer_id, user_id, secret_digest(secret)],
        )
        return bool(result[0] == 1)

    async def relay(self, room_id: str, envelope: Envelope) -> bool:
        if envelope.to:
            sent = await self.run(
                "RELAY_TO",
                RoomKeys.of(room_id).state,
                [
                    self._publish,
                    envelope.to,
                    envelope.exclude,
                    envelope.frame,
                    *self._mail_args(room_id, envelope),
                ],
            )
            return bool(sent != -1)
        await self.run(
            "BROADCAST",
            RoomKeys.of(room_id).state,
            [
                self._publish,
                envelope.exclude,
                envelope.frame,
                *self._mail_args(room_id, envelope),
            ],
        )
        return True

    def _mail_args(self, room_id: str, envelope: Envelope) -> tuple[str, int, int, str]:
        """The arguments every relaying script shares: where and how long to
        keep frames for peers waiting to resume, and the ingress stamp."""
        prefix = RoomKeys.of(room_id).mailbox_prefix
        return prefix, self._mailbox_ttl_ms, MAILBOX_MAX_FRAMES, f"{envelope.sent_at:.6f}"

    async def set_media(self, room_id: str, media: bytes, envelope: Envelope) -> None:
        await self.run(
            "SET_MEDIA",
            RoomKeys.of(room_id).state,
            [
                self._publish,
                envelope.exclude,
                envelope.frame,
                *self._mail_args(room_id, envelope),
                media,
            ],
        )

    async def kick(self, room_id: str, peer_id: str) -> bool:
        raw = await self.command("HGET", RoomKeys.of(room_id).members, peer_id)
        if raw is None:
            return False
        member = Member.from_json(raw)
        kicked = await self.run(
            "KICK",
            RoomKeys.of(room_id).changing,
            [
                self._publish,
                peer_id,
                server_frames.user_left(member).pack(),
                Envelope(peer_id, "", Control(ControlKind.KICK).encode()).pack(),
                RoomKeys.of(room_id).mailbox(peer_id),
                *self._left_events(room_id, member, LeaveReason.KICKED),
            ],
        )
        if kicked == 2:  # removed now (a served peer's session leaves, with its own events)
            await self._announce_events(room_id)
        return bool(kicked)

    async def participants(self, room_id: str) -> list[Participant]:
        keys = RoomKeys.of(room_id)
        result = await self.run("PARTICIPANTS", [keys.members, keys.media], [])
        return _participants(result[0], result[1])

    async def expire_away(self, room_id: str, peer_id: str, user_id: str) -> None:
        """The resume window of a peer passed: remove it, announcing ``user-left``."""
        keys = RoomKeys.of(room_id)
        member = Member(peer_id, user_id, user_id)
        removed = await self.run(
            "EXPIRE_AWAY",
            keys.changing,
            [
                self._publish,
                peer_id,
                server_frames.user_left(member).pack(),
                keys.mailbox(peer_id),
                *self._left_events(room_id, member, LeaveReason.TIMEOUT),
            ],
        )
        if removed:
            await self._announce_events(room_id)

    # --- administration -----------------------------------------------------

    async def list_rooms(self, cursor: str, count: int) -> tuple[list[tuple[str, int]], str]:
        # SCAN, never KEYS: one bounded step of the keyspace per page, so
        # listing rooms never blocks Redis for everyone else.
        try:
            next_cursor, keys = await self._redis.scan(
                int(cursor), match="sbd:room:*:members", count=count
            )
            async with self._redis.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.hlen(key)
                sizes = await pipe.execute()
        except RedisError as exc:
            raise BrokerUnavailable(str(exc)) from exc
        pairs = zip(keys, sizes, strict=True)
        rooms = [(room_of_key(_text(key)), int(size)) for key, size in pairs if size]
        return rooms, str(next_cursor)


def _participants(members_flat: list[bytes], media_flat: list[bytes]) -> list[Participant]:
    media = {media_flat[i]: media_flat[i + 1] for i in range(0, len(media_flat), 2)}
    return [
        Member.from_json(members_flat[i + 1]).participant(
            orjson.loads(media[members_flat[i]]) if members_flat[i] in media else None
        )
        for i in range(0, len(members_flat), 2)
    ]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
