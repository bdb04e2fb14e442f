"""The Python client (second_brain_database.webrtc.client) against real
`sbd serve` instances sharing one redis-server, with real aiortc peers."""

from __future__ import annotations

import asyncio
import contextlib
import itertools

import pytest

from second_brain_database.webrtc.client import ServerEvent, SignalingClient, SignalingClosed
from second_brain_database.webrtc.client.aiortc_peer import AiortcMesh
from second_brain_database.webrtc.schemas import (
    ClientMessageType,
    CloseCode,
    ErrorCode,
    ErrorMessage,
    MediaState,
    MediaStateMessage,
    RelayedFrame,
    UserJoinedMessage,
    WelcomeMessage,
)
from tests.peers import eventually, make_token
from tests.scrape import call_setups
from tests.servers import SbdServer

Cluster = tuple[SbdServer, SbdServer]
_rooms = itertools.count()


def new_room() -> str:
    return f"pyclient-{next(_rooms)}"


async def test_two_aiortc_peers_on_two_instances_exchange_data(cluster: Cluster) -> None:
    one, two = cluster
    room = new_room()
    alice = AiortcMesh(SignalingClient(one.base_url, room, make_token("alice")))
    bob = AiortcMesh(SignalingClient(two.base_url, room, make_token("bob")))
    await alice.start()
    await bob.start()  # the newcomer offers, across instances
    try:
        [alice_side] = await alice.wait_connected()
        [bob_side] = await bob.wait_connected()
        assert alice_side.peer_id == bob.client.peer_id
        assert bob_side.peer_id == alice.client.peer_id
        assert alice_side.pc.connectionState == bob_side.pc.connectionState == "connected"

        assert alice.send("ping over SCTP") == 1
        assert await asyncio.wait_for(bob.messages.get(), 5) == (
            alice.client.peer_id,
            "ping over SCTP",
        )
        assert bob.send(b"\x00binary") == 1
        assert await asyncio.wait_for(alice.messages.get(), 5) == (
            bob.client.peer_id,
            b"\x00binary",
        )
    finally:
        await alice.close()
        await bob.close()


async def test_each_peer_connection_reports_its_setup(cluster: Cluster) -> None:
    """Call-setup telemetry: one call-setup per side, a host pair on loopback."""
    one, two = cluster
    servers = [one.base_url, two.base_url]
    before = call_setups(servers, "host")
    room = new_room()
    alice = AiortcMesh(SignalingClient(one.base_url, room, make_token("alice")))
    bob = AiortcMesh(SignalingClient(two.base_url, room, make_token("bob")))
    await alice.start()
    await bob.start()
    try:
        await alice.wait_connected()
        await bob.wait_connected()
        await eventually(lambda: call_setups(servers, "host")[0] - before[0] == 2, 10)
        assert call_setups(servers, "host")[1] - before[1] == 2
    finally:
        await alice.close()
        await bob.close()


async def test_messages_are_typed_and_relayed_across_instances(cluster: Cluster) -> None:
    one, two = cluster
    room = new_room()
    alice = SignalingClient(one.ws_url, room, make_token("alice", name="Alice"))
    bob = SignalingClient(two.base_url, room, make_token("bob"))
    try:
        welcome = await alice.connect()
        assert (welcome.room_id, welcome.user_id, welcome.participants) == (room, "alice", [])
        assert isinstance(await alice.recv(5), WelcomeMessage)  # also delivered as an event

        await bob.connect()
        assert [p.peer_id for p in bob.participants] == [alice.peer_id]
        joined = await alice.wait_for("user-joined", 5)
        assert isinstance(joined, UserJoinedMessage)
        assert joined.payload.peer_id == bob.peer_id

        await bob.app({"chat": "hi"}, to=alice.peer_id)
        relayed = await alice.wait_for("app", 5)
        assert isinstance(relayed, RelayedFrame)
        assert (relayed.from_, relayed.from_user, relayed.payload) == (
            bob.peer_id,
            "bob",
            {"chat": "hi"},
        )

        # The schemas' own models go out as they are (unset fields omitted).
        await alice.send(
            MediaStateMessage(type=ClientMessageType.MEDIA_STATE, payload=MediaState(audio=False))
        )
        media = await bob.wait_for("media-state", 5)
        assert isinstance(media, RelayedFrame)
        assert (media.from_, media.to, media.payload) == (alice.peer_id, None, {"audio": False})

        await alice.send({"type": "offer", "to": bob.peer_id, "id": "m1", "payload": {}})
        error = await alice.wait_for("error", 5)
        assert isinstance(error, ErrorMessage)
        assert (error.payload.code, error.payload.ref) == (ErrorCode.INVALID_MESSAGE, "m1")
    finally:
        await alice.leave()
        await bob.leave()


async def test_the_client_connects_with_a_ticket_not_its_token(cluster: Cluster) -> None:
    one, _ = cluster
    room = new_room()
    client = SignalingClient(one.base_url, room, make_token("tess"))
    try:
        await asyncio.wait_for(client.connect(), 10)
    finally:
        await client.leave()
    handshakes = [line for line in one.log().splitlines() if f"/ws/webrtc/{room}?" in line]
    assert handshakes, "no handshake logged"
    assert all("?ticket=" in line and "token=" not in line for line in handshakes), handshakes


async def test_bad_token_is_fatal_not_retried(cluster: Cluster) -> None:
    one, _ = cluster
    client = SignalingClient(one.base_url, new_room(), make_token("eve", secret="x" * 40))
    with pytest.raises(SignalingClosed) as closed:
        await asyncio.wait_for(client.connect(), 10)
    assert closed.value.code == CloseCode.UNAUTHORIZED
    assert client.reconnects == 0
    with pytest.raises(SignalingClosed):
        await client.recv(1)


async def test_a_dropped_client_resumes_its_session_and_call(cluster: Cluster) -> None:
    one, two = cluster
    room = new_room()
    alice = AiortcMesh(SignalingClient(one.base_url, room, make_token("alice")))
    # Bob waits 0.5-1 s before reconnecting: time for the server to see him gone.
    bob = AiortcMesh(SignalingClient(two.base_url, room, make_token("bob"), initial_delay=1.0))
    await alice.start()
    await bob.start()
    try:
        await alice.wait_connected()
        await bob.wait_connected()
        bob_id, alice_side = bob.client.peer_id, alice.peers[bob.client.peer_id]
        assert [e.type for e in await drain(alice.events)] == ["welcome", "user-joined"]
        assert [e.type for e in await drain(bob.events)] == ["welcome"]

        await bob.client.drop()  # as a network failure would: no leave
        await bob.client.app({"said": "while away"})  # kept in the outbox
        await asyncio.sleep(0.3)
        await alice.client.app({"to": "bob"}, to=bob_id)  # kept by the server
        welcome = await bob.client.wait_open(timeout=10)

        assert (welcome.peer_id, bob.client.reconnects) == (bob_id, 1)
        got = await asyncio.wait_for(alice.events.get(), 5)
        assert isinstance(got, RelayedFrame)
        assert (got.type, got.from_, got.payload) == ("app", bob_id, {"said": "while away"})
        after = await drain(bob.events)
        assert [e.type for e in after] == ["welcome", "app"]
        assert isinstance(after[1], RelayedFrame) and after[1].payload == {"to": "bob"}
        # The peer connection never noticed: same object, still connected.
        assert alice.peers[bob_id] is alice_side
        assert alice_side.pc.connectionState == "connected"
        assert bob.send("still here") == 1
        assert await asyncio.wait_for(alice.messages.get(), 5) == (bob_id, "still here")
        assert alice.events.empty()  # no user-left, no user-joined
    finally:
        await alice.close()
        await bob.close()


async def drain(queue: asyncio.Queue[ServerEvent], quiet: float = 0.3) -> list[ServerEvent]:
    """Everything in ``queue`` until it stays empty for ``quiet`` seconds."""
    events = []
    with contextlib.suppress(TimeoutError):
        while True:
            events.append(await asyncio.wait_for(queue.get(), quiet))
    return events
