"""The Redis broker: room state in Redis hashes, fan-out over Pub/Sub.

One Pub/Sub connection per process carries every room that has local peers
(subscribed on the first, unsubscribed after the last); its reader hands each
envelope to the connection manager. Room operations are Lua scripts
(:mod:`.redis_scripts`), so a relayed message costs one round trip.

Three background tasks keep the instance honest:

- the listener reconnects with backoff, resubscribes every room it serves
  and asks the manager to re-register its peers (Redis may have restarted
  empty); a watchdog pings it and replaces it when it goes silent, so the
  instance never stays deaf (e.g. after ``CLIENT KILL TYPE pubsub`` or an
  output-buffer disconnect);
- the heartbeat scores this instance in ``sbd:instances`` by the Redis
  clock and reaps the peers of instances silent for ``SBD_PRESENCE_TTL``;
- the expirer announces ``user-left`` for peers whose resume window passed.

Keys (``R`` a room id, ``I`` an instance id; see docs/architecture.md)::

    sbd:room:{R}:members|owners|media|resume|away   room state (redis_scripts)
    sbd:room:{R}:mbox:<peer>   list, frames for a peer waiting to resume
    sbd:room:{R}:ch            channel of the room's envelopes
    sbd:instances              zset  instance id -> when it counts as dead (ms)
    sbd:instance:{I}:peers     set   "room\\npeer\\nuser\\nsession" it serves
    sbd:away                   zset  "room\\npeer\\nuser" -> resume deadline
    sbd:reap:{I}               string, a reaper's claim while it reaps instance I
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from typing import Any

import orjson
from redis.asyncio import Redis, RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from second_brain_database.redis_clients import RedisClients
from second_brain_database.webrtc import server_frames
from second_brain_database.webrtc.broker import redis_scripts
from second_brain_database.webrtc.broker.base import (
    LOCKED,
    MAILBOX_MAX_FRAMES,
    NOT_INVITED,
    POLICY_TTL_S,
    Broker,
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
from second_brain_database.webrtc.broker.control import Control, ControlKind, is_owner_state
from second_brain_database.webrtc.broker.redis_listener import PubSubListener
from second_brain_database.webrtc.broker.redis_pipeline import CommandPipeline
from second_brain_database.webrtc.schemas import Participant

logger = logging.getLogger(__name__)

INSTANCES_KEY = "sbd:instances"
AWAY_INDEX_KEY = "sbd:away"
_EXPIRY_INTERVAL_S = 0.25
# Mailboxes outlive the resume window a little, for a resume in its last instant.
_MAILBOX_SLACK_MS = 5_000


ROOM_KEY_NAMES = ("members", "owners", "media", "resume", "away", "ch", "policy", "invited")


def room_keys(room_id: str) -> list[str]:
    """The room's keys in the scripts' KEYS order; one hash slot per room."""
    prefix = f"sbd:room:{{{room_id}}}"
    return [f"{prefix}:{name}" for name in ROOM_KEY_NAMES]


def mailbox_prefix(room_id: str) -> str:
    return f"sbd:room:{{{room_id}}}:mbox:"


def _room_of_channel(channel: bytes) -> str:
    text = channel.decode()
    return text[text.index("{") + 1 : text.rindex("}")]


def instance_peers_key(instance_id: str) -> str:
    return f"sbd:instance:{{{instance_id}}}:peers"


class RedisBroker(Broker):
    def __init__(
        self, redis: RedisClients, *, instance_id: str, presence_ttl: float, resume_ttl: float
    ) -> None:
        super().__init__(resume_ttl=resume_ttl)
        self.instance_id = instance_id
        self._clients = redis  # made and closed by the service
        self._presence_ttl = presence_ttl
        self._redis: Redis | RedisCluster = redis.client
        self.cluster = redis.cluster is not None
        # Sharded Pub/Sub on a Cluster: a room's messages stay on the shard
        # that owns its hash slot instead of being copied to every node.
        self._publish = "SPUBLISH" if self.cluster else "PUBLISH"
        self._scripts = self._register_scripts()
        self._mailbox_ttl_ms = int(resume_ttl * 1000) + _MAILBOX_SLACK_MS
        self._local_sessions: dict[str, int] = defaultdict(int)
        self._listeners: dict[str, PubSubListener] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._pipeline: CommandPipeline | None = None

    def _register_scripts(self) -> dict[str, AsyncScript]:
        names = (
            "JOIN", "REREGISTER", "LEAVE", "AWAY", "RELEASE", "RESUME", "RELAY_TO", "BROADCAST",
            "SET_MEDIA", "KICK", "EXPIRE_AWAY", "PARTICIPANTS", "HEARTBEAT", "DUE_AWAY",
            "DROP_DUE", "SET_POLICY", "GET_POLICY",
        )  # fmt: skip
        return {n: self._redis.register_script(getattr(redis_scripts, n)) for n in names}

    async def _run(self, script: str, keys: list[str], args: list[Any]) -> Any:
        try:
            if self._pipeline is not None:
                return await self._pipeline.evalsha(self._scripts[script].sha, keys, args)
            return await self._scripts[script](keys=keys, args=args)
        except RedisError as exc:
            raise BrokerUnavailable(str(exc)) from exc

    async def _command(self, *args: Any) -> Any:
        """A plain command, on the pipeline when there is one."""
        try:
            if self._pipeline is not None:
                return await self._pipeline.execute(*args)
            return await self._redis.execute_command(*args)
        except RedisError as exc:
            raise BrokerUnavailable(str(exc)) from exc

    @property
    def reconnects(self) -> int:
        return sum(listener.reconnects for listener in self._listeners.values())

    # --- lifecycle ------------------------------------------------------

    async def connect(self) -> None:
        self._tasks = [
            asyncio.create_task(self._heartbeat_forever(), name="sbd-redis-heartbeat"),
            asyncio.create_task(self._expire_forever(), name="sbd-redis-expirer"),
        ]
        if isinstance(self._redis, Redis):
            # One connection carries every session's commands. (On a cluster
            # they go through the cluster client's per-node pools.)
            self._pipeline = CommandPipeline(
                self._clients,
                {script.sha: str(script.script) for script in self._scripts.values()},
            )
            self._pipeline.start()
            self._listener_for(b"")

    async def disconnect(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for listener in self._listeners.values():
            await listener.stop()
        if self._pipeline is not None:
            await self._pipeline.stop()
        with contextlib.suppress(RedisError, OSError):
            await self._redis.zrem(INSTANCES_KEY, self.instance_id)

    async def ready(self) -> bool:
        if not all(listener.listening.is_set() for listener in self._listeners.values()):
            return False
        try:
            return bool(await self._redis.ping())
        except (RedisError, OSError):
            return False

    # --- subscriptions --------------------------------------------------

    def _listener_for(self, channel: bytes) -> PubSubListener:
        """The Pub/Sub connection that carries ``channel``: the only one, or
        the one to the shard that owns its slot."""
        node = None
        if isinstance(self._redis, RedisCluster):
            node = self._redis.get_node_from_key(channel.decode())
            if node is None:
                raise BrokerUnavailable("no Redis Cluster node serves this room's slot")
        name = "redis" if node is None else node.name
        listener = self._listeners.get(name)
        if listener is None:
            listener = PubSubListener(
                name,
                self._clients,
                node,
                sharded=self.cluster,
                on_message=self._on_message,
                on_connected=self._on_listener_connected,
            )
            self._listeners[name] = listener
            listener.start()
        return listener

    async def subscribe(self, room_id: str) -> None:
        self._local_sessions[room_id] += 1
        if self._local_sessions[room_id] > 1:
            return
        channel = room_keys(room_id)[5].encode()
        try:
            await self._listener_for(channel).subscribe(channel)
        except BrokerUnavailable:
            await self.unsubscribe(room_id)
            raise

    async def unsubscribe(self, room_id: str) -> None:
        self._local_sessions[room_id] -= 1
        if self._local_sessions[room_id] > 0:
            return
        del self._local_sessions[room_id]
        channel = room_keys(room_id)[5].encode()
        await self._listener_for(channel).unsubscribe(channel)

    def _on_message(self, channel: bytes, data: bytes) -> None:
        try:
            envelope = Envelope.unpack(data)
        except ValueError:
            logger.error("dropped a malformed envelope on %r", channel)
            return
        self._dispatch(_room_of_channel(channel), envelope)

    def _on_listener_connected(self) -> None:
        # Redis may have restarted empty: put this instance's live peers back.
        if self._resync is not None:
            asyncio.create_task(self._resync_safely(), name="sbd-resync")  # noqa: RUF006

    async def _resync_safely(self) -> None:
        assert self._resync is not None
        for attempt in range(5):
            try:
                await self._resync()
                return
            except (BrokerUnavailable, RedisError, OSError) as exc:
                logger.warning("re-registering local peers failed (%s); retrying", exc)
                await asyncio.sleep(0.2 * (attempt + 1))

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
        entry = _instance_entry(room_id, member, owner)
        await self._command("SADD", instance_peers_key(self.instance_id), entry)
        result = await self._run(
            "JOIN",
            room_keys(room_id),
            [
                self._publish,
                member.peer_id,
                member.to_json(),
                owner,
                capacity,
                secret_digest(resume_secret),
                server_frames.user_joined(member).pack(),
                member.user_id,
                "1" if privileged else "0",
            ],
        )
        if result[0] != 1:
            with contextlib.suppress(BrokerUnavailable):
                await self._command("SREM", instance_peers_key(self.instance_id), entry)
            if result[0] == -1:
                raise RoomFull(room_id)
            raise JoinRefused(LOCKED if result[0] == -2 else NOT_INVITED)
        return _participants(result[1], result[2])

    async def set_policy(
        self,
        room_id: str,
        user_id: str,
        *,
        locked: bool,
        invited: list[str] | None,
        privileged: bool = False,
    ) -> RoomPolicy:
        keys = room_keys(room_id)
        result = await self._run(
            "SET_POLICY",
            keys[6:8],
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
        owner, locked, invited = await self._run("GET_POLICY", room_keys(room_id)[6:8], [])
        if owner is None:
            return RoomPolicy()
        return RoomPolicy(
            owner=_text(owner),
            locked=locked == b"1",
            invited=tuple(sorted(_text(u) for u in invited)) if invited else None,
        )

    async def reregister(
        self, room_id: str, member: Member, owner: str, resume_secret: str
    ) -> bool:
        """Put a live local peer back after Redis lost it; True if it was missing."""
        entry = _instance_entry(room_id, member, owner)
        await self._command("SADD", instance_peers_key(self.instance_id), entry)
        added = await self._run(
            "REREGISTER",
            room_keys(room_id),
            [
                self._publish,
                member.peer_id,
                member.to_json(),
                owner,
                0,
                secret_digest(resume_secret),
                server_frames.user_joined(member).pack(),
            ],
        )
        return bool(added)

    async def leave(self, room_id: str, member: Member, owner: str) -> bool:
        return await self._leave_as(self.instance_id, room_id, member, owner)

    async def _leave_as(self, instance: str, room_id: str, member: Member, owner: str) -> bool:
        removed = await self._run(
            "LEAVE",
            room_keys(room_id),
            [
                self._publish,
                member.peer_id,
                owner,
                server_frames.user_left(member).pack(),
                mailbox_prefix(room_id) + member.peer_id,
            ],
        )
        with contextlib.suppress(BrokerUnavailable):
            await self._command(
                "SREM", instance_peers_key(instance), _instance_entry(room_id, member, owner)
            )
        return bool(removed)

    async def away(self, room_id: str, member: Member, owner: str) -> bool:
        deadline = await self._run(
            "AWAY",
            room_keys(room_id),
            [
                self._publish,
                member.peer_id,
                owner,
                int(self.resume_ttl * 1000),
                Envelope(member.peer_id, "", Control(ControlKind.BARRIER, owner).encode()).pack(),
            ],
        )
        with contextlib.suppress(BrokerUnavailable):
            await self._command(
                "SREM",
                instance_peers_key(self.instance_id),
                _instance_entry(room_id, member, owner),
            )
        if not deadline:
            return False
        await self._command("ZADD", AWAY_INDEX_KEY, deadline, _away_entry(room_id, member))
        return True

    async def release(self, room_id: str, member: Member, unsent: list[str]) -> None:
        keys = room_keys(room_id)
        await self._run(
            "RELEASE",
            [keys[1], mailbox_prefix(room_id) + member.peer_id],
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
        result = await self._run(
            "RESUME",
            room_keys(room_id),
            [
                self._publish,
                peer_id,
                user_id,
                secret_digest(secret),
                owner,
                secret_digest(new_secret),
                "1" if force else "0",
                mailbox_prefix(room_id) + peer_id,
            ],
        )
        status = result[0]
        if status == -3:
            raise ResumeBusy(handing_over=is_owner_state(_text(result[1])))
        if status != 1:
            raise ResumeRefused(peer_id)
        participants = _participants(result[1], result[2])
        member = next(p for p in participants if p.peer_id == peer_id)
        entry = _instance_entry(room_id, Member(peer_id, user_id, member.name), owner)
        await self._command("SADD", instance_peers_key(self.instance_id), entry)
        await self._command(
            "ZREM", AWAY_INDEX_KEY, _away_entry(room_id, Member(peer_id, user_id, ""))
        )
        return Resumed(participants, [_text(frame) for frame in result[3]])

    async def publish(self, room_id: str, envelope: Envelope) -> bool:
        if envelope.to:
            sent = await self._run(
                "RELAY_TO",
                room_keys(room_id),
                [
                    self._publish,
                    envelope.to,
                    envelope.exclude,
                    envelope.frame,
                    *self._mail_args(room_id, envelope),
                ],
            )
            return bool(sent != -1)
        await self._run(
            "BROADCAST",
            room_keys(room_id),
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
        prefix = mailbox_prefix(room_id)
        return prefix, self._mailbox_ttl_ms, MAILBOX_MAX_FRAMES, f"{envelope.sent_at:.6f}"

    async def set_media(self, room_id: str, media: bytes, envelope: Envelope) -> None:
        await self._run(
            "SET_MEDIA",
            room_keys(room_id),
            [
                self._publish,
                envelope.exclude,
                envelope.frame,
                *self._mail_args(room_id, envelope),
                media,
            ],
        )

    async def kick(self, room_id: str, peer_id: str) -> bool:
        raw = await self._command("HGET", room_keys(room_id)[0], peer_id)
        if raw is None:
            return False
        member = Member.from_json(raw)
        kicked = await self._run(
            "KICK",
            room_keys(room_id),
            [
                self._publish,
                peer_id,
                server_frames.user_left(member).pack(),
                Envelope(peer_id, "", Control(ControlKind.KICK).encode()).pack(),
                mailbox_prefix(room_id) + peer_id,
            ],
        )
        return bool(kicked)

    async def participants(self, room_id: str) -> list[Participant]:
        keys = room_keys(room_id)
        result = await self._run("PARTICIPANTS", [keys[0], keys[2]], [])
        return _participants(result[0], result[1])

    # --- presence and resume deadlines ----------------------------------

    async def _heartbeat_forever(self) -> None:
        interval = max(self._presence_ttl / 3, 0.2)
        ttl_ms = int(self._presence_ttl * 1000)
        while True:
            try:
                dead = await self._run("HEARTBEAT", [INSTANCES_KEY], [self.instance_id, ttl_ms])
                for instance in dead:
                    await self._reap(_text(instance))
            except (RedisError, OSError, BrokerUnavailable) as exc:
                logger.warning("presence heartbeat failed: %s", exc)
            await asyncio.sleep(interval)

    async def _reap(self, instance: str) -> None:
        """Remove the peers of a dead instance, announcing each as gone."""
        if instance == self.instance_id:
            return
        claim = f"sbd:reap:{instance}"
        if not await self._redis.set(claim, self.instance_id, nx=True, ex=60):
            return
        entries = await self._redis.smembers(instance_peers_key(instance))
        for entry in entries:
            room_id, peer_id, user_id, owner = _text(entry).split("\n")
            # The name is not needed to announce a departure.
            member = Member(peer_id, user_id, user_id)
            await self._leave_as(instance, room_id, member, owner)
        await self._redis.delete(instance_peers_key(instance))
        await self._redis.zrem(INSTANCES_KEY, instance)
        # The claim only keeps reapers from racing; should the instance come
        # back and die again, it must be reapable at once.
        await self._redis.delete(claim)
        logger.warning("reaped instance %s: %d peers", instance, len(entries))

    async def _expire_forever(self) -> None:
        interval = min(_EXPIRY_INTERVAL_S, max(self.resume_ttl / 4, 0.05))
        while True:
            try:
                for entry in await self._run("DUE_AWAY", [AWAY_INDEX_KEY], [100]):
                    room_id, peer_id, user_id = _text(entry).split("\n")
                    await self._run(
                        "EXPIRE_AWAY",
                        room_keys(room_id),
                        [
                            self._publish,
                            peer_id,
                            server_frames.user_left(Member(peer_id, user_id, user_id)).pack(),
                            mailbox_prefix(room_id) + peer_id,
                        ],
                    )
                    await self._run("DROP_DUE", [AWAY_INDEX_KEY], [entry])
            except (RedisError, OSError, BrokerUnavailable) as exc:
                logger.warning("resume expiry pass failed: %s", exc)
            await asyncio.sleep(interval)

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
        rooms = [(self._room_of_key(_text(key)), int(size)) for key, size in pairs if size]
        return rooms, str(next_cursor)

    @staticmethod
    def _room_of_key(key: str) -> str:
        return key[key.index("{") + 1 : key.rindex("}")]


def _instance_entry(room_id: str, member: Member, owner: str) -> str:
    return f"{room_id}\n{member.peer_id}\n{member.user_id}\n{owner}"


def _away_entry(room_id: str, member: Member) -> str:
    return f"{room_id}\n{member.peer_id}\n{member.user_id}"


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
