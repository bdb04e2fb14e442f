"""The Redis pub/sub: one Pub/Sub connection per process (per shard on a
Cluster, with sharded Pub/Sub) carries every room that has local peers."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import RedisError

from second_brain_database.redis_clients import RedisClients
from second_brain_database.webrtc.broker.model import BrokerUnavailable, Envelope
from second_brain_database.webrtc.broker.pubsub import PubSub
from second_brain_database.webrtc.broker.redis_keys import RoomKeys, is_room_channel, room_of_key
from second_brain_database.webrtc.broker.redis_listener import PubSubListener

logger = logging.getLogger(__name__)


class RedisPubSub(PubSub):
    def __init__(self, redis: RedisClients) -> None:
        super().__init__()
        self._clients = redis  # made and closed by the service
        self._redis: Redis | RedisCluster = redis.client
        self.cluster = redis.cluster is not None
        # Sharded Pub/Sub on a Cluster: a room's messages stay on the shard
        # that owns its hash slot instead of being copied to every node.
        self.publish_command = "SPUBLISH" if self.cluster else "PUBLISH"
        # Local sessions per channel (rooms and topics alike).
        self._local_sessions: dict[str, int] = defaultdict(int)
        self._listeners: dict[str, PubSubListener] = {}
        self._subscribing: dict[str, asyncio.Future[None]] = {}

    async def connect(self) -> None:
        if isinstance(self._redis, Redis):
            self._listener_for(b"")

    async def disconnect(self) -> None:
        for listener in self._listeners.values():
            await listener.stop()

    async def ready(self) -> bool:
        return all(listener.listening.is_set() for listener in self._listeners.values())

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
        await self.subscribe_topic(RoomKeys.of(room_id).channel)

    async def unsubscribe(self, room_id: str) -> None:
        await self.unsubscribe_topic(RoomKeys.of(room_id).channel)

    async def publish(self, room_id: str, envelope: Envelope) -> None:
        await self.publish_topic(RoomKeys.of(room_id).channel, envelope)

    async def subscribe_topic(self, topic: str) -> None:
        self._local_sessions[topic] += 1
        pending = self._subscribing.get(topic)
        if self._local_sessions[topic] > 1 and pending is None:
            return
        try:
            if pending is not None:
                # Another local session's subscription is on its way: a join
                # before it is confirmed would miss what follows it.
                await asyncio.shield(pending)
                return
            channel = topic.encode()
            pending = self._subscribing[topic] = asyncio.ensure_future(
                self._listener_for(channel).subscribe(channel)
            )
            try:
                await asyncio.shield(pending)
            finally:
                del self._subscribing[topic]
        except (BrokerUnavailable, asyncio.CancelledError):
            await self.unsubscribe_topic(topic)
            raise

    async def unsubscribe_topic(self, topic: str) -> None:
        self._local_sessions[topic] -= 1
        if self._local_sessions[topic] > 0:
            return
        del self._local_sessions[topic]
        channel = topic.encode()
        await self._listener_for(channel).unsubscribe(channel)

    async def publish_topic(self, topic: str, envelope: Envelope) -> None:
        channel = topic
        try:
            if isinstance(self._redis, RedisCluster):
                await self._redis.spublish(channel, envelope.pack())
            else:
                await self._redis.publish(channel, envelope.pack())
        except RedisError as exc:
            raise BrokerUnavailable(str(exc)) from exc

    def _on_message(self, channel: bytes, data: bytes) -> None:
        try:
            envelope = Envelope.unpack(data)
        except ValueError:
            logger.error("dropped a malformed envelope on %r", channel)
            return
        name = channel.decode()
        if is_room_channel(name):
            self._dispatch(room_of_key(name), envelope)
        else:
            self._dispatch_topic(name, envelope)

    def _on_listener_connected(self) -> None:
        # Redis may have restarted empty: put this instance's live peers back.
        if self._reconnected is not None:
            asyncio.create_task(self._resync_safely(), name="sbd-resync")  # noqa: RUF006

    async def _resync_safely(self) -> None:
        assert self._reconnected is not None
        for attempt in range(5):
            try:
                await self._reconnected()
                return
            except (BrokerUnavailable, RedisError, OSError) as exc:
                logger.warning("re-registering local peers failed (%s); retrying", exc)
                await asyncio.sleep(0.2 * (attempt + 1))
