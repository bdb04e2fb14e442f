"""How envelopes reach every instance: a pub/sub as small as
encode/broadcaster's backend (connect, disconnect, subscribe, unsubscribe,
publish, one listener).

Every message for a room goes to the room's channel as an :class:`Envelope`;
each envelope that reaches this process goes to the one listener (the
connection manager's ``deliver``), which fans it out to the local sessions of
that room. An instance is subscribed to a room while it has a local peer
there (counted: the first subscribe subscribes, the last unsubscribe leaves).

Besides rooms, a *topic* is a channel for anything else that must reach
every instance (a user's channel, which rings the user's sockets for calls):
the same envelopes, counted subscriptions and delivery, to a second
listener, named by its channel (redis_keys.py).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable

from second_brain_database.webrtc.broker.model import Envelope

Listener = Callable[[str, Envelope], None]
Reconnected = Callable[[], Awaitable[None]]
TopicListener = Callable[[str, Envelope], None]


class PubSub(ABC):
    def __init__(self) -> None:
        self._listener: Listener | None = None
        self._reconnected: Reconnected | None = None
        self._topic_listener: TopicListener | None = None

    def set_topic_listener(self, listener: TopicListener) -> None:
        """``listener`` gets every envelope of a subscribed topic."""
        self._topic_listener = listener

    def _dispatch_topic(self, topic: str, envelope: Envelope) -> None:
        if self._topic_listener is not None:
            self._topic_listener(topic, envelope)

    def set_listener(self, listener: Listener, reconnected: Reconnected) -> None:
        """``listener`` gets every envelope of a subscribed room;
        ``reconnected`` is awaited after a lost connection came back (shared
        room state may have been lost with it)."""
        self._listener = listener
        self._reconnected = reconnected

    def _dispatch(self, room_id: str, envelope: Envelope) -> None:
        if self._listener is not None:
            self._listener(room_id, envelope)

    @abstractmethod
    async def connect(self) -> None: ...

    @abstractmethod
    async def disconnect(self) -> None: ...

    @abstractmethod
    async def ready(self) -> bool:
        """Whether every subscription is live (health checks)."""

    @abstractmethod
    async def subscribe(self, room_id: str) -> None:
        """Count one more local session in ``room_id``; returns once envelopes
        published to the room reach this process."""

    @abstractmethod
    async def unsubscribe(self, room_id: str) -> None:
        """Count one local session fewer in ``room_id``."""

    @abstractmethod
    async def publish(self, room_id: str, envelope: Envelope) -> None:
        """Send to every subscribed instance, as is (no membership check: room
        messages go through the room store, which also fills mailboxes)."""

    @abstractmethod
    async def subscribe_topic(self, topic: str) -> None:
        """Count one more local listener of ``topic`` (a channel name);
        returns once envelopes published to it reach this process."""

    @abstractmethod
    async def unsubscribe_topic(self, topic: str) -> None: ...

    @abstractmethod
    async def publish_topic(self, topic: str, envelope: Envelope) -> None:
        """Send to every instance subscribed to ``topic``."""
