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
    sbd:instances              zset  instance id -> last heartbeat (ms)
    sbd:instance:{I}:peers     set   "room\\npeer\\nuser\\nsession" it serves
    sbd:away                   zset  "room\\npeer\\nuser" -> resume deadline
    sbd:reap:{I}               string, the reaper's claim on a dead instance
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import defaultdict, deque
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from second_brain_database.webrtc import frames
from second_brain_database.webrtc.broker import redis_scripts
from second_brain_database.webrtc.broker.base import (
    BARRIER,
    KICK,
    MAILBOX_MAX_FRAMES,
    Broker,
    BrokerUnavailable,
    Envelope,
    Member,
    ResumeBusy,
    Resumed,
    ResumeRefused,
    RoomFull,
    secret_digest,
)
from second_brain_database.webrtc.schemas import Participant

logger = logging.getLogger(__name__)

INSTANCES_KEY = "sbd:instances"
AWAY_INDEX_KEY = "sbd:away"
_RECONNECT_MAX_DELAY_S = 2.0
_WATCHDOG_INTERVAL_S = 1.0
_WATCHDOG_SILENCE_S = 3.0
_EXPIRY_INTERVAL_S = 0.25
# Mailboxes outlive the resume window a little, for a resume in its last instant.
_MAILBOX_SLACK_MS = 5_000


def room_keys(room_id: str) -> list[str]:
    """members, owners, media, resume, away, channel: one hash slot per room."""
    prefix = f"sbd:room:{{{room_id}}}"
    return [f"{prefix}:{name}" for name in ("members", "owners", "media", "resume", "away", "ch")]


def mailbox_prefix(room_id: str) -> str:
    return f"sbd:room:{{{room_id}}}:mbox:"


def _room_of_channel(channel: bytes) -> str:
    text = channel.decode()
    return text[text.index("{") + 1 : text.rindex("}")]


def instance_peers_key(instance_id: str) -> str:
    return f"sbd:instance:{{{instance_id}}}:peers"


class RedisBroker(Broker):
    def __init__(
        self, url: str, *, instance_id: str, presence_ttl: float, resume_ttl: float
    ) -> None:
        super().__init__(resume_ttl=resume_ttl)
        self.instance_id = instance_id
        self._presence_ttl = presence_ttl
        # One quick retry: after a Redis restart, pooled connections are stale
        # and the first command on each fails before reaching the server.
        self._redis: Redis = Redis.from_url(
            url,
            socket_connect_timeout=2,
            socket_timeout=5,
            retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), retries=1),
            retry_on_error=[RedisConnectionError],
        )
        self._publish = "PUBLISH"
        self._scripts: dict[str, AsyncScript] = {
            name: self._redis.register_script(getattr(redis_scripts, name))
            for name in (
                "JOIN", "REREGISTER", "LEAVE", "AWAY", "RELEASE", "RESUME", "RELAY_TO",
                "BROADCAST", "SET_MEDIA", "KICK", "EXPIRE_AWAY", "PARTICIPANTS", "HEARTBEAT",
                "DUE_AWAY", "DROP_DUE",
            )
        }  # fmt: skip
        self._mailbox_ttl_ms = int(resume_ttl * 1000) + _MAILBOX_SLACK_MS
        self._local_sessions: dict[str, int] = defaultdict(int)
        self._pending_subscribes: dict[bytes, deque[asyncio.Future[None]]] = defaultdict(deque)
        self._listener: Connection | None = None
        self._listening = asyncio.Event()
        self._last_heard = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        self.reconnects = 0

    async def _run(self, script: str, keys: list[str], args: list[Any]) -> Any:
        try:
            return await self._scripts[script](keys=keys, args=args)
        except RedisError as exc:
            raise BrokerUnavailable(str(exc)) from exc

    # --- lifecycle ------------------------------------------------------

    async def connect(self) -> None:
        self._tasks = [
            asyncio.create_task(self._listen_forever(), name="sbd-redis-listener"),
            asyncio.create_task(self._watchdog_forever(), name="sbd-redis-watchdog"),
            asyncio.create_task(self._heartbeat_forever(), name="sbd-redis-heartbeat"),
            asyncio.create_task(self._expire_forever(), name="sbd-redis-expirer"),
        ]

    async def disconnect(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(RedisError, OSError):
            await self._redis.zrem(INSTANCES_KEY, self.instance_id)
        await self._redis.aclose()

    async def ready(self) -> bool:
        if not self._listening.is_set():
            return False
        try:
            return bool(await self._redis.ping())
        except (RedisError, OSError):
            return False

    # --- subscriptions --------------------------------------------------

    async def subscribe(self, room_id: str) -> None:
        self._local_sessions[room_id] += 1
        if self._local_sessions[room_id] > 1:
            return
        channel = room_keys(room_id)[5].encode()
        confirmed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending_subscribes[channel].append(confirmed)
        try:
            await self._send_to_listener("SUBSCRIBE", channel)
            await asyncio.wait_for(confirmed, timeout=5)
        except (RedisError, OSError, TimeoutError, BrokerUnavailable) as exc:
            await self.unsubscribe(room_id)
            raise BrokerUnavailable(str(exc)) from exc

    async def unsubscribe(self, room_id: str) -> None:
        self._local_sessions[room_id] -= 1
        if self._local_sessions[room_id] > 0:
            return
        del self._local_sessions[room_id]
        with contextlib.suppress(RedisError, OSError, BrokerUnavailable):
            await self._send_to_listener("UNSUBSCRIBE", room_keys(room_id)[5])

    async def _send_to_listener(self, *args: Any) -> None:
        listener = self._listener
        if listener is None or not self._listening.is_set():
            raise BrokerUnavailable("Redis Pub/Sub is not connected")
        await listener.send_command(*args, check_health=False)

    async def _listen_forever(self) -> None:
        delay = 0.05
        while True:
            try:
                await self._listen_once()
            except (RedisError, OSError) as exc:
                logger.warning("Redis Pub/Sub connection lost (%s); reconnecting", exc)
            except Exception:
                # A bug must not leave the instance deaf: log it and reconnect.
                logger.exception("Redis Pub/Sub listener failed; reconnecting")
            self._listening.clear()
            self.reconnects += 1
            for waiters in self._pending_subscribes.values():
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_exception(BrokerUnavailable("Redis Pub/Sub reconnecting"))
            self._pending_subscribes.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RECONNECT_MAX_DELAY_S)
            if self._listening.is_set():
                delay = 0.05

    async def _listen_once(self) -> None:
        # RESP2: Pub/Sub replies arrive as plain arrays from read_response(),
        # where RESP3 would route them to push handlers.
        kwargs = {**self._redis.connection_pool.connection_kwargs, "protocol": 2}
        listener = Connection(**kwargs)
        self._listener = listener
        try:
            await listener.connect()  # type: ignore[no-untyped-call]
            channels = [room_keys(room)[5] for room in self._local_sessions]
            if channels:
                await listener.send_command("SUBSCRIBE", *channels, check_health=False)
            self._last_heard = time.monotonic()
            self._listening.set()
            logger.info("Redis Pub/Sub listening (%d rooms)", len(channels))
            if self._resync is not None:
                asyncio.create_task(self._resync_safely(), name="sbd-resync")  # noqa: RUF006
            while True:
                response = await listener.read_response(timeout=math.inf)
                self._last_heard = time.monotonic()
                self._on_pubsub(response)
        finally:
            self._listener = None
            await listener.disconnect()

    async def _resync_safely(self) -> None:
        assert self._resync is not None
        for attempt in range(5):
            try:
                await self._resync()
                return
            except (BrokerUnavailable, RedisError, OSError) as exc:
                logger.warning("re-registering local peers failed (%s); retrying", exc)
                await asyncio.sleep(0.2 * (attempt + 1))

    async def _watchdog_forever(self) -> None:
        """Ping the listener; a listener that stops answering is replaced."""
        while True:
            await asyncio.sleep(_WATCHDOG_INTERVAL_S)
            listener = self._listener
            if listener is None or not self._listening.is_set():
                continue
            if time.monotonic() - self._last_heard > _WATCHDOG_SILENCE_S:
                logger.warning("Redis Pub/Sub listener went silent; reconnecting")
                await listener.disconnect()
                continue
            with contextlib.suppress(RedisError, OSError):
                await listener.send_command("PING", check_health=False)

    def _on_pubsub(self, response: list[Any]) -> None:
        kind = response[0]
        if kind in (b"message", b"smessage"):
            try:
                envelope = Envelope.unpack(response[2])
            except ValueError:
                logger.error("dropped a malformed envelope on %r", response[1])
                return
            self._dispatch(_room_of_channel(response[1]), envelope)
        elif kind in (b"subscribe", b"ssubscribe"):
            waiters = self._pending_subscribes.get(response[1])
            if waiters:
                waiter = waiters.popleft()
                if not waiter.done():
                    waiter.set_result(None)
                if not waiters:
                    del self._pending_subscribes[response[1]]

    # --- room state -----------------------------------------------------

    async def join(
        self, room_id: str, member: Member, owner: str, capacity: int, resume_secret: str
    ) -> list[Participant]:
        entry = _instance_entry(room_id, member, owner)
        try:
            await self._redis.sadd(instance_peers_key(self.instance_id), entry)
        except RedisError as exc:
            raise BrokerUnavailable(str(exc)) from exc
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
                frames.user_joined(member).pack(),
            ],
        )
        if result is None:
            with contextlib.suppress(RedisError):
                await self._redis.srem(instance_peers_key(self.instance_id), entry)
            raise RoomFull(room_id)
        return _participants(result[0], result[1])

    async def reregister(
        self, room_id: str, member: Member, owner: str, resume_secret: str
    ) -> bool:
        """Put a live local peer back after Redis lost it; True if it was missing."""
        try:
            await self._redis.sadd(
                instance_peers_key(self.instance_id), _instance_entry(room_id, member, owner)
            )
        except RedisError as exc:
            raise BrokerUnavailable(str(exc)) from exc
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
                frames.user_joined(member).pack(),
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
                frames.user_left(member).pack(),
                mailbox_prefix(room_id) + member.peer_id,
            ],
        )
        with contextlib.suppress(RedisError):
            await self._redis.srem(
                instance_peers_key(instance), _instance_entry(room_id, member, owner)
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
                Envelope(member.peer_id, "", BARRIER + owner).pack(),
            ],
        )
        with contextlib.suppress(RedisError):
            await self._redis.srem(
                instance_peers_key(self.instance_id), _instance_entry(room_id, member, owner)
            )
        if not deadline:
            return False
        try:
            await self._redis.zadd(AWAY_INDEX_KEY, {_away_entry(room_id, member): deadline})
        except RedisError as exc:
            raise BrokerUnavailable(str(exc)) from exc
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
            raise ResumeBusy(_text(result[1]))
        if status != 1:
            raise ResumeRefused(peer_id)
        participants = _participants(result[1], result[2])
        member = next(p for p in participants if p.peer_id == peer_id)
        entry = _instance_entry(room_id, Member(peer_id, user_id, member.name), owner)
        try:
            await self._redis.sadd(instance_peers_key(self.instance_id), entry)
            await self._redis.zrem(
                AWAY_INDEX_KEY, _away_entry(room_id, Member(peer_id, user_id, ""))
            )
        except RedisError as exc:
            raise BrokerUnavailable(str(exc)) from exc
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
                    mailbox_prefix(room_id),
                    self._mailbox_ttl_ms,
                    MAILBOX_MAX_FRAMES,
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
                mailbox_prefix(room_id),
                self._mailbox_ttl_ms,
                MAILBOX_MAX_FRAMES,
            ],
        )
        return True

    async def set_media(self, room_id: str, sender: str, media: bytes, frame: str) -> None:
        await self._run(
            "SET_MEDIA",
            room_keys(room_id),
            [
                self._publish,
                sender,
                frame,
                mailbox_prefix(room_id),
                self._mailbox_ttl_ms,
                MAILBOX_MAX_FRAMES,
                media,
            ],
        )

    async def kick(self, room_id: str, peer_id: str) -> bool:
        try:
            raw = await self._redis.hget(room_keys(room_id)[0], peer_id)
        except RedisError as exc:
            raise BrokerUnavailable(str(exc)) from exc
        if raw is None:
            return False
        member = Member.from_json(raw)
        kicked = await self._run(
            "KICK",
            room_keys(room_id),
            [
                self._publish,
                peer_id,
                frames.user_left(member).pack(),
                Envelope(peer_id, "", KICK).pack(),
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
                            frames.user_left(Member(peer_id, user_id, user_id)).pack(),
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
