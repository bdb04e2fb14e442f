"""The embedded pub/sub: one process, so publishing is delivering."""

from __future__ import annotations

from second_brain_database.webrtc.broker.model import Envelope
from second_brain_database.webrtc.broker.pubsub import PubSub


class MemoryPubSub(PubSub):
    async def connect(self) -> None:
        return None

    async def disconnect(self) -> None:
        return None

    async def ready(self) -> bool:
        return True

    async def subscribe(self, room_id: str) -> None:
        # Every room of this process is local: delivery needs no subscription.
        return None

    async def unsubscribe(self, room_id: str) -> None:
        return None

    async def publish(self, room_id: str, envelope: Envelope) -> None:
        self.publish_now(room_id, envelope)

    def publish_now(self, room_id: str, envelope: Envelope) -> None:
        listener = self._listener  # inline of _dispatch: once per relayed message
        if listener is not None:
            listener(room_id, envelope)

    async def subscribe_topic(self, topic: str) -> None:
        return None

    async def unsubscribe_topic(self, topic: str) -> None:
        return None

    async def publish_topic(self, topic: str, envelope: Envelope) -> None:
        self._dispatch_topic(topic, envelope)
