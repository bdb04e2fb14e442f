"""The Redis broker: room state in Redis hashes, fan-out over Pub/Sub.

One Pub/Sub connection per process carries every room that has local peers
(subscribed on the first, unsubscribed after the last); its reader hands each
envelope to the connection manager. Room operations are Lua scripts
(:mod:`.redis_scripts`), so a relayed message costs one round trip. Instances
heartbeat into a sorted set scored by the Redis clock; any instance reaps the
peers of one whose heartbeat is older than ``SBD_PRESENCE_TTL``.

Keys (``R`` a room id, ``I`` an instance id; see docs/architecture.md)::

    sbd:room:{R}:members   hash  peer_id -> member JSON
    sbd:room:{R}:owners    hash  peer_id -> instance id
    sbd:room:{R}:media     hash  peer_id -> last media-state JSON
    sbd:room:{R}:ch        channel of the room's envelopes
    sbd:instances          zset  instance id -> last heartbeat (ms)
    sbd:instance:{I}:peers set   "room\\npeer\\nuser" of the instance's peers
    sbd:reap:{I}           string, the reaper's claim on a dead instance
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import defaultdict, deque
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from second_brain_database.webrtc import frames
from second_brain_database.webrtc.broker import redis_scripts
from second_brain_database.webrtc.broker.base import (
    Broker,
    BrokerUnavailable,
    Envelope,
    Member,
    RoomFull,
)
from second_brain_database.webrtc.schemas import Participant

logger = logging.getLogger(__name__)

INSTANCES_KEY = "sbd:instances"
_RECONNECT_MAX_DELAY_S = 2.0


def room_keys(room_id: str) -> tuple[str, str, str, str]:
    """members, owners, media, channel: one hash slot per room."""
    prefix = f"sbd:room:{{{room_id}}}"
    return f"{prefix}:members", f"{prefix}:owners", f"{prefix}:media", f"{prefix}:ch"


def _room_of_channel(channel: bytes) -> str:
    text = channel.decode()
    return text[text.index("{") + 1 : text.rindex("}")]


def instance_peers_key(instance_id: str) -> str:
    return f"sbd:instance:{{{instance_id}}}:peers"


class RedisBroker(Broker):
    def __init__(self, url: str, *, instance_id: str, presence_ttl: float) -> None:
        super().__init__()
        self.instance_id = instance_id
        self._presence_ttl = presence_ttl
        self._redis: Redis = Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
        self._publish = "PUBLISH"
        self._join: AsyncScript = self._redis.register_script(redis_scripts.JOIN)
        self._leave: AsyncScript = self._redis.register_script(redis_scripts.LEAVE)
        self._relay_to: AsyncScript = self._redis.register_script(redis_scripts.RELAY_TO)
        self._set_media: AsyncScript = self._redis.register_script(redis_scripts.SET_MEDIA)
        self._participants: AsyncScript = self._redis.register_script(redis_scripts.PARTICIPANTS)
        self._heartbeat: AsyncScript = self._redis.register_script(redis_scripts.HEARTBEAT)
        self._local_peers: dict[str, int] = defaultdict(int)
        self._pending_subscribes: dict[bytes, deque[asyncio.Future[None]]] = defaultdict(deque)
        self._listener: Connection | None = None
        self._listening = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # --- lifecycle ------------------------------------------------------

    async def connect(self) -> None:
        self._tasks = [
            asyncio.create_task(self._listen_forever(), name="sbd-redis-listener"),
            asyncio.create_task(self._heartbeat_forever(), name="sbd-redis-heartbeat"),
        ]

    async def disconnect(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(RedisError, OSError):
            await self._redis.zrem(INSTANCES_KEY, self.instance_id)
        if self._listener is not None:
            await self._listener.disconnect()
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
        self._local_peers[room_id] += 1
        if self._local_peers[room_id] > 1:
            return
        channel = room_keys(room_id)[3].encode()
        confirmed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending_subscribes[channel].append(confirmed)
        try:
            await self._send_to_listener("SUBSCRIBE", channel)
            await asyncio.wait_for(confirmed, timeout=5)
        except (RedisError, OSError, TimeoutError, BrokerUnavailable) as exc:
            await self.unsubscribe(room_id)
            raise BrokerUnavailable(str(exc)) from exc

    async def unsubscribe(self, room_id: str) -> None:
        self._local_peers[room_id] -= 1
        if self._local_peers[room_id] > 0:
            return
        del self._local_peers[room_id]
        with contextlib.suppress(RedisError, OSError, BrokerUnavailable):
            await self._send_to_listener("UNSUBSCRIBE", room_keys(room_id)[3])

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
            self._listening.clear()
            for waiters in self._pending_subscribes.values():
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_exception(BrokerUnavailable("Redis Pub/Sub reconnecting"))
            self._pending_subscribes.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RECONNECT_MAX_DELAY_S)

    async def _listen_once(self) -> None:
        # RESP2: Pub/Sub replies arrive as plain arrays from read_response(),
        # where RESP3 would route them to push handlers.
        kwargs = {**self._redis.connection_pool.connection_kwargs, "protocol": 2}
        listener = Connection(**kwargs)
        self._listener = listener
        try:
            await listener.connect()  # type: ignore[no-untyped-call]
            channels = [room_keys(room)[3] for room in self._local_peers]
            if channels:
                await listener.send_command("SUBSCRIBE", *channels, check_health=False)
            self._listening.set()
            logger.info("Redis Pub/Sub listening (%d rooms)", len(channels))
            while True:
                response = await listener.read_response(timeout=math.inf)
                self._on_pubsub(response)
        finally:
            await listener.disconnect()

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

    async def join(self, room_id: str, member: Member, capacity: int) -> list[Participant]:
        members, owners, media, channel = room_keys(room_id)
        entry = _instance_entry(room_id, member)
        try:
            await self._redis.sadd(instance_peers_key(self.instance_id), entry)
            result = await self._join(
                keys=[members, owners, media, channel],
                args=[
                    self._publish,
                    member.peer_id,
                    member.to_json(),
                    self.instance_id,
                    capacity,
                    frames.user_joined(member).pack(),
                ],
            )
            if result is None:
                await self._redis.srem(instance_peers_key(self.instance_id), entry)
                raise RoomFull(room_id)
        except RedisError as exc:
            raise BrokerUnavailable(str(exc)) from exc
        return _participants(result[0], result[1])

    async def leave(self, room_id: str, member: Member) -> bool:
        return await self._leave_as(self.instance_id, room_id, member)

    async def _leave_as(self, owner: str, room_id: str, member: Member) -> bool:
        members, owners, media, channel = room_keys(room_id)
        try:
            removed = await self._leave(
                keys=[members, owners, media, channel],
                args=[self._publish, member.peer_id, owner, frames.user_left(member).pack()],
            )
            await self._redis.srem(instance_peers_key(owner), _instance_entry(room_id, member))
        except RedisError as exc:
            raise BrokerUnavailable(str(exc)) from exc
        return bool(removed)

    async def publish(self, room_id: str, envelope: Envelope) -> bool:
        members, _, _, channel = room_keys(room_id)
        try:
            if not envelope.to:
                await self._redis.execute_command(  # type: ignore[no-untyped-call]
                    self._publish, channel, envelope.pack()
                )
                return True
            sent = await self._relay_to(
                keys=[members, channel], args=[self._publish, envelope.to, envelope.pack()]
            )
        except RedisError as exc:
            raise BrokerUnavailable(str(exc)) from exc
        return bool(sent != -1)

    async def set_media(self, room_id: str, peer_id: str, media: bytes, envelope: Envelope) -> None:
        members, _, media_key, channel = room_keys(room_id)
        try:
            await self._set_media(
                keys=[members, media_key, channel],
                args=[self._publish, peer_id, media, envelope.pack()],
            )
        except RedisError as exc:
            raise BrokerUnavailable(str(exc)) from exc

    async def participants(self, room_id: str) -> list[Participant]:
        members, _, media, _ = room_keys(room_id)
        try:
            result = await self._participants(keys=[members, media])
        except RedisError as exc:
            raise BrokerUnavailable(str(exc)) from exc
        return _participants(result[0], result[1])

    # --- presence -------------------------------------------------------

    async def _heartbeat_forever(self) -> None:
        interval = max(self._presence_ttl / 3, 0.2)
        ttl_ms = int(self._presence_ttl * 1000)
        while True:
            try:
                dead = await self._heartbeat(keys=[INSTANCES_KEY], args=[self.instance_id, ttl_ms])
                for instance in dead:
                    await self._reap(instance.decode())
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
            room_id, peer_id, user_id = _text(entry).split("\n")
            # The name is not needed to announce a departure.
            await self._leave_as(instance, room_id, Member(peer_id, user_id, user_id))
        await self._redis.delete(instance_peers_key(instance))
        await self._redis.zrem(INSTANCES_KEY, instance)
        logger.warning("reaped instance %s: %d peers announced as left", instance, len(entries))


def _instance_entry(room_id: str, member: Member) -> str:
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
