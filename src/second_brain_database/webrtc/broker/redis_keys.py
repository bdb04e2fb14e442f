"""Redis key names, by name. Every key of a room carries its hash tag
``{room}``, so a room's scripts run on one Cluster shard; likewise a call's
one key ``{call_id}`` and a user's keys a digest of the user id (which may
hold any character, braces included)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

INSTANCES_KEY = "sbd:instances"
AWAY_INDEX_KEY = "sbd:away"
# The webhook outbox's own keys share one hash tag (one slot): the scripts
# that claim rooms touch two of them at once.
WEBHOOK_ROOMS_KEY = "sbd:webhooks:{w}:rooms"
"""zset room -> the moment (ms) it may be claimed: 0 when it has events and
no deliverer, else the deliverer's lease deadline."""
WEBHOOK_HOLDERS_KEY = "sbd:webhooks:{w}:holders"
"""hash room -> instance delivering its events."""
WEBHOOK_FAILED_KEY = "sbd:webhooks:{w}:failed"
WEBHOOK_ERRORS_KEY = "sbd:webhooks:{w}:errors"
ROOM_PREFIX = "sbd:room:"
CALL_DEADLINES_KEY = "sbd:calls:due"


@dataclass(frozen=True, slots=True)
class RoomKeys:
    """The keys of one room (redis_scripts.py describes each)."""

    members: str
    owners: str
    media: str
    resume: str
    away: str
    channel: str
    policy: str
    invited: str
    events: str
    mailbox_prefix: str

    @classmethod
    def of(cls, room_id: str) -> RoomKeys:
        prefix = f"{ROOM_PREFIX}{{{room_id}}}"
        return cls(
            members=f"{prefix}:members",
            owners=f"{prefix}:owners",
            media=f"{prefix}:media",
            resume=f"{prefix}:resume",
            away=f"{prefix}:away",
            channel=f"{prefix}:ch",
            policy=f"{prefix}:policy",
            invited=f"{prefix}:invited",
            events=f"{prefix}:events",
            mailbox_prefix=f"{prefix}:mbox:",
        )

    @property
    def state(self) -> list[str]:
        """KEYS[1..8] of the room scripts, in their order."""
        return [
            self.members,
            self.owners,
            self.media,
            self.resume,
            self.away,
            self.channel,
            self.policy,
            self.invited,
        ]

    @property
    def changing(self) -> list[str]:
        """The keys of the scripts that admit or remove peers: :attr:`state`
        and the room's webhook outbox stream (KEYS[9])."""
        return [*self.state, self.events]

    def mailbox(self, peer_id: str) -> str:
        return self.mailbox_prefix + peer_id


def room_of_key(key: str) -> str:
    """The room id in a room key or channel name (its hash tag)."""
    return key[key.index("{") + 1 : key.rindex("}")]


def instance_peers_key(instance_id: str) -> str:
    return f"sbd:instance:{{{instance_id}}}:peers"


def reap_claim_key(instance_id: str) -> str:
    return f"sbd:reap:{instance_id}"


def is_room_channel(channel: str) -> bool:
    return channel.startswith(ROOM_PREFIX)


@dataclass(frozen=True, slots=True)
class UserKeys:
    """The keys of one user's calls (calls/redis_calls.py describes each)."""

    channel: str
    devices: str
    ringing: str
    outgoing: str

    @classmethod
    def of(cls, user_id: str) -> UserKeys:
        digest = hashlib.sha256(user_id.encode()).hexdigest()[:32]
        prefix = f"sbd:user:{{{digest}}}"
        return cls(
            channel=f"{prefix}:ch",
            devices=f"{prefix}:devices",
            ringing=f"{prefix}:ringing",
            outgoing=f"{prefix}:outgoing",
        )


def call_key(call_id: str) -> str:
    return f"sbd:call:{{{call_id}}}"
