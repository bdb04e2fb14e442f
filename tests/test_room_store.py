"""The room state machine, row by row, against both room stores.

Each row of ``TRANSITIONS`` is a row of the table in docs/architecture.md
("The room state machine"): from a peer state, one event, its outcome, the
state after. Every row runs against the embedded store and the Redis one
(its Lua scripts, on the suite's real redis-server), so they cannot drift.
States are observed through the stores' own operations, never their keys:

- absent: not among the participants;
- served: a participant whose resume is refused as busy (not handing over);
- flushing: a participant whose resume is refused as busy, handing over;
- away: a participant that a resume with its secret takes over.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from second_brain_database.config import Settings
from second_brain_database.redis_clients import RedisClients, connect_redis
from second_brain_database.webhooks.events import LeaveReason
from second_brain_database.webhooks.outbox import Endpoint
from second_brain_database.webrtc.broker import (
    Envelope,
    Member,
    PubSub,
    RedisRoomStore,
    ResumeBusy,
    ResumeRefused,
    RoomFull,
    RoomStore,
    create_backends,
)
from second_brain_database.webrtc.broker.control import Control, ControlKind
from tests.servers import RedisServer

PEER = Member("peer", "alice", "Alice")
OTHER = Member("other", "bob", "Bob")
SECRET, NEW_SECRET = "secret-1", "secret-2"
O1, O2 = "owner-1", "owner-2"
HOOK_SECRET = "whsec_" + "A" * 40


@dataclass
class Room:
    pubsub: PubSub
    store: RoomStore
    room_id: str
    heard: list[Envelope]

    async def published(self, predicate: Callable[[Envelope], bool], within: float = 1.0) -> bool:
        """Whether an envelope matching ``predicate`` arrives ``within`` seconds."""
        for _ in range(int(within * 100)):
            if any(predicate(envelope) for envelope in self.heard):
                return True
            await asyncio.sleep(0.01)
        return False

    async def state(self) -> str:
        present = [p.peer_id for p in await self.store.participants(self.room_id)]
        if PEER.peer_id not in present:
            return "absent"
        for secret in (SECRET, NEW_SECRET):  # a resume replaces the secret
            try:
                await self.store.resume(
                    self.room_id, PEER.peer_id, PEER.user_id, secret, "probe", "x"
                )
            except ResumeBusy as busy:
                return "flushing" if busy.handing_over else "served"
            except ResumeRefused:
                continue
            return "away"
        return "refused"


def frame_type(envelope: Envelope) -> str | None:
    if Control.decode(envelope.frame) is not None:
        return None
    kind: str = orjson.loads(envelope.frame)["type"]
    return kind


@pytest.fixture
def resume_ttl() -> float:
    return 30.0


@pytest.fixture
def webhook_urls() -> list[str]:
    return []


@pytest.fixture(params=["memory", "redis"])
async def room(
    request: pytest.FixtureRequest, resume_ttl: float, webhook_urls: list[str]
) -> AsyncIterator[Room]:
    settings = Settings(
        jwt_secret="x" * 32,
        resume_ttl=resume_ttl,
        presence_ttl=30,
        webhook_urls=webhook_urls,
        webhook_secret=HOOK_SECRET if webhook_urls else None,
    )
    redis: RedisClients | None = None
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        settings = settings.model_copy(update={"redis_url": server.url})
        redis = await connect_redis(settings)
    pubsub, store = create_backends(settings, redis)
    heard: list[Envelope] = []
    room_id = f"room-{secrets.token_hex(4)}"

    async def resync() -> None:
        return None

    pubsub.set_listener(lambda _room, envelope: heard.append(envelope), resync)
    await store.connect()
    await pubsub.connect()
    await pubsub.subscribe(room_id)
    yield Room(pubsub, store, room_id, heard)
    await pubsub.unsubscribe(room_id)
    await pubsub.disconnect()
    await store.disconnect()
    if redis is not None:
        await redis.aclose()


async def served(room: Room) -> None:
    await room.store.join(room.room_id, PEER, O1, 16, SECRET)


async def flushing(room: Room) -> None:
    await served(room)
    assert await room.store.away(room.room_id, PEER, O1)


async def away(room: Room) -> None:
    await flushing(room)
    await room.store.release(room.room_id, PEER, ["unsent-1"])


async def absent(room: Room) -> None:
    return None


async def full(room: Room) -> None:
    await room.store.join(room.room_id, OTHER, "owner-x", 1, "s")


Step = Callable[[Room], Awaitable[None]]
Event = Callable[[Room], Awaitable[Any]]


def join(room: Room) -> Awaitable[Any]:
    return room.store.join(room.room_id, PEER, O1, 1, SECRET)


def resume(secret: str = SECRET, user: str = PEER.user_id, force: bool = False) -> Event:
    def event(room: Room) -> Awaitable[Any]:
        return room.store.resume(
            room.room_id, PEER.peer_id, user, secret, O2, NEW_SECRET, force=force
        )

    return event


def relay_to_peer(room: Room) -> Awaitable[bool]:
    return room.store.relay(room.room_id, Envelope(PEER.peer_id, OTHER.peer_id, '{"type":"app"}'))


def announced(kind: str) -> Callable[[Envelope], bool]:
    return lambda envelope: frame_type(envelope) == kind


def control(kind: ControlKind) -> Callable[[Envelope], bool]:
    def matches(envelope: Envelope) -> bool:
        decoded = Control.decode(envelope.frame)
        return decoded is not None and decoded.kind is kind and envelope.to == PEER.peer_id

    return matches


@dataclass(frozen=True)
class Row:
    name: str
    given: Step
    event: Event
    outcome: Any  # a value, or an exception class
    after: str
    publishes: Callable[[Envelope], bool] | None = None


TRANSITIONS = [
    Row("join", absent, join, [], "served", announced("user-joined")),
    Row("join a full room", full, join, RoomFull, "absent"),
    Row("leave", served, lambda r: r.store.leave(r.room_id, PEER, O1), True, "absent",
        announced("user-left")),
    Row("leave by another session", served, lambda r: r.store.leave(r.room_id, PEER, O2), False,
        "served"),
    Row("connection ends", served, lambda r: r.store.away(r.room_id, PEER, O1), True, "flushing",
        control(ControlKind.BARRIER)),
    Row("stale session ends", served, lambda r: r.store.away(r.room_id, PEER, O2), False,
        "served"),
    Row("unsent frames released", flushing,
        lambda r: r.store.release(r.room_id, PEER, ["unsent-1"]), None, "away"),
    Row("resume while served", served, resume(), ResumeBusy, "served"),
    Row("resume while flushing", flushing, resume(), ResumeBusy, "flushing"),
    Row("resume", away, resume(), "mailbox:unsent-1", "served"),
    Row("resume, wrong secret", away, resume(secret="wrong"), ResumeRefused, "away"),
    Row("resume, other user", away, resume(user="mallory"), ResumeRefused, "away"),
    Row("resume, forced", served, resume(force=True), "mailbox:", "served"),
    Row("kick a served peer", served, lambda r: r.store.kick(r.room_id, PEER.peer_id), True,
        "served", control(ControlKind.KICK)),
    Row("kick a peer away", away, lambda r: r.store.kick(r.room_id, PEER.peer_id), True, "absent",
        announced("user-left")),
    Row("kick nobody", absent, lambda r: r.store.kick(r.room_id, PEER.peer_id), False, "absent"),
    Row("message to a peer away", away, relay_to_peer, True, "away"),
    Row("message to nobody", absent, relay_to_peer, False, "absent"),
    Row("old session leaves after away", away, lambda r: r.store.leave(r.room_id, PEER, O1),
        False, "away"),
]  # fmt: skip


@pytest.mark.parametrize("row", TRANSITIONS, ids=lambda row: row.name)
async def test_transition(room: Room, row: Row) -> None:
    await row.given(room)
    room.heard.clear()
    if isinstance(row.outcome, type) and issubclass(row.outcome, Exception):
        with pytest.raises(row.outcome):
            await row.event(room)
    else:
        result = await row.event(room)
        if isinstance(row.outcome, str) and row.outcome.startswith("mailbox:"):
            expected = [m for m in row.outcome.removeprefix("mailbox:").split(",") if m]
            assert result.mailbox == expected
            assert PEER.peer_id in [p.peer_id for p in result.participants]
        elif row.outcome == []:
            assert result == []
        else:
            assert result == row.outcome
    if row.publishes is not None:
        assert await room.published(row.publishes)
    assert await room.state() == row.after


async def test_a_message_to_a_peer_away_waits_in_its_mailbox(room: Room) -> None:
    await away(room)
    room.heard.clear()
    assert await relay_to_peer(room)
    resumed = await resume()(room)
    assert resumed.mailbox == ["unsent-1", '{"type":"app"}']
    assert not [e for e in room.heard if e.to == PEER.peer_id and frame_type(e) == "app"]


@pytest.mark.parametrize("resume_ttl", [0.6])
async def test_the_resume_window_runs_out(room: Room) -> None:
    await away(room)
    room.heard.clear()
    assert await room.published(announced("user-left"), within=5.0)
    assert await room.state() == "absent"


@pytest.mark.parametrize(
    ("given", "user", "secret", "expected"),
    [
        (served, PEER.user_id, SECRET, True),
        (away, PEER.user_id, SECRET, True),
        (served, PEER.user_id, "wrong", False),
        (served, "mallory", SECRET, False),
        (absent, PEER.user_id, SECRET, False),
    ],
)
async def test_may_resume_checks_credentials_and_changes_nothing(
    room: Room, given: Step, user: str, secret: str, expected: bool
) -> None:
    await given(room)
    before = await room.store.participants(room.room_id)
    assert await room.store.may_resume(room.room_id, PEER.peer_id, user, secret) is expected
    assert await room.store.participants(room.room_id) == before


NEWLINE_USER = Member("peer-nl", "evil\nuser\nid", "Evil")


async def test_presence_entries_survive_a_user_id_with_newlines(
    redis_server: RedisServer,
) -> None:
    """Reaping a dead instance and expiring a resume window both read back
    what an instance recorded of its peers: with a user id holding newlines
    (the handshake refuses them, the store must not depend on it)."""
    base = Settings(jwt_secret="x" * 32, resume_ttl=0.5, redis_url=redis_server.url)
    clients = [await connect_redis(base), await connect_redis(base)]
    dead_settings = base.model_copy(update={"instance_id": "dead-" + secrets.token_hex(3)})
    _, dead = create_backends(dead_settings, clients[0])
    pubsub, reaper = create_backends(base, clients[1])
    assert isinstance(dead, RedisRoomStore) and isinstance(reaper, RedisRoomStore)
    heard: list[Envelope] = []

    async def resync() -> None:
        return None

    pubsub.set_listener(lambda _room, envelope: heard.append(envelope), resync)
    await pubsub.connect()
    reaped_room, expired_room = f"nl-{secrets.token_hex(3)}", f"nl-{secrets.token_hex(3)}"
    for room_id in (reaped_room, expired_room):
        await pubsub.subscribe(room_id)
    try:
        await dead.join(reaped_room, NEWLINE_USER, O1, 16, SECRET)
        await reaper.presence.reap(dead_settings.instance_id)
        assert await reaper.participants(reaped_room) == []

        await reaper.join(expired_room, NEWLINE_USER, O1, 16, SECRET)
        assert await reaper.away(expired_room, NEWLINE_USER, O1)
        await reaper.release(expired_room, NEWLINE_USER, [])
        await asyncio.sleep(0.7)
        await reaper.presence.expire_due()
        assert await reaper.participants(expired_room) == []

        left = [orjson.loads(e.frame) for e in heard if frame_type(e) == "user-left"]
        assert [m["payload"]["user_id"] for m in left] == [NEWLINE_USER.user_id] * 2
    finally:
        await pubsub.disconnect()
        for client in clients:
            await client.aclose()


async def test_a_join_that_cannot_be_announced_changes_nothing(room: Room) -> None:
    """All or nothing: a member whose ``user-joined`` cannot be encoded (a
    lone surrogate in its name) is refused without a trace in the room."""
    broken = Member("peer-broken", "eve", "Eve \ud83d")
    with pytest.raises(TypeError):  # orjson.JSONEncodeError is a TypeError
        await room.store.join(room.room_id, broken, O1, 16, SECRET)
    assert await room.store.participants(room.room_id) == []
    assert await room.store.join(room.room_id, PEER, O1, 16, SECRET) == []
    assert [p.peer_id for p in await room.store.participants(room.room_id)] == [PEER.peer_id]


async def drain_events(room: Room) -> list[tuple[str, str, str]]:
    """(type, peer_id, reason) of the room's events in the store's outbox, in order."""
    outbox = room.store.outbox
    assert outbox is not None
    endpoint = Endpoint.of("http://receiver.test/hook")
    assert room.room_id in await outbox.claim(100)
    found = []
    while (pending := await outbox.next(room.room_id, endpoint)) is not None:
        data = orjson.loads(pending.event.body)["data"]
        assert data["room_id"] == room.room_id
        found.append((pending.event.type, data.get("peer_id", ""), data.get("reason", "")))
        await outbox.ack(room.room_id, endpoint, pending)
    await outbox.release(room.room_id, [endpoint])
    return found


@pytest.mark.parametrize("webhook_urls", [["http://receiver.test/hook"]])
@pytest.mark.parametrize("resume_ttl", [0.6])
async def test_room_changes_write_their_webhook_events_in_order(room: Room) -> None:
    """The events of the transitions (docs/architecture.md), both stores alike:
    refused joins and resumed drops write none."""
    store, room_id = room.store, room.room_id
    await store.join(room_id, PEER, O1, 2, SECRET)
    await store.join(room_id, OTHER, O2, 2, "s")
    with pytest.raises(RoomFull):
        await store.join(room_id, Member("third", "carol", "Carol"), "o3", 2, "s")
    assert await store.away(room_id, PEER, O1)
    await store.release(room_id, PEER, [])
    await store.resume(room_id, PEER.peer_id, PEER.user_id, SECRET, "o4", NEW_SECRET)
    assert await store.leave(room_id, PEER, "o4", LeaveReason.EXPIRED)
    assert not await store.leave(room_id, PEER, "o4", LeaveReason.EXPIRED)
    assert await store.away(room_id, OTHER, O2)
    await store.release(room_id, OTHER, [])
    # The window ran out: OTHER's own user-left (PEER's may still be on its
    # way through the Pub/Sub listener).
    assert await room.published(
        lambda e: announced("user-left")(e) and OTHER.peer_id in e.frame, within=5.0
    )
    assert await drain_events(room) == [
        ("room.started", "", ""),
        ("participant.joined", PEER.peer_id, ""),
        ("participant.joined", OTHER.peer_id, ""),
        ("participant.left", PEER.peer_id, "expired"),
        ("participant.left", OTHER.peer_id, "timeout"),
        ("room.finished", "", ""),
    ]
    # Delivered and released: nothing is left to claim.
    assert room.room_id not in await room.store.outbox.claim(100)  # type: ignore[union-attr]
