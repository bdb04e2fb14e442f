"""The Python client (second_brain_database.webrtc.client) against real
`sbd serve` instances sharing one redis-server, with real aiortc peers."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from second_brain_database.webrtc.client import SignalingClient, SignalingClosed
from second_brain_database.webrtc.client.aiortc_peer import AiortcMesh
from second_brain_database.webrtc.schemas import (
    CloseCode,
    ErrorCode,
    ErrorMessage,
    RelayedFrame,
    UserJoinedMessage,
    WelcomeMessage,
)
from tests.peers import make_token
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

        await alice.send({"type": "offer", "to": bob.peer_id, "id": "m1", "payload": {}})
        error = await alice.wait_for("error", 5)
        assert isinstance(error, ErrorMessage)
        assert (error.payload.code, error.payload.ref) == (ErrorCode.INVALID_MESSAGE, "m1")
    finally:
        await alice.leave()
        await bob.leave()


async def test_bad_token_is_fatal_not_retried(cluster: Cluster) -> None:
    one, _ = cluster
    client = SignalingClient(one.base_url, new_room(), make_token("eve", secret="x" * 40))
    with pytest.raises(SignalingClosed) as closed:
        await asyncio.wait_for(client.connect(), 10)
    assert closed.value.code == CloseCode.UNAUTHORIZED
    assert client.reconnects == 0
    with pytest.raises(SignalingClosed):
        await client.recv(1)


async def test_reconnects_after_a_drop_and_keeps_the_call(cluster: Cluster) -> None:
    one, two = cluster
    room = new_room()
    alice = AiortcMesh(SignalingClient(one.base_url, room, make_token("alice")))
    bob = AiortcMesh(SignalingClient(two.base_url, room, make_token("bob")))
    await alice.start()
    await bob.start()
    try:
        await alice.wait_connected()
        await bob.wait_connected()
        first_id = bob.client.peer_id

        await bob.client.drop()  # as a network failure would: no leave
        async with asyncio.timeout(10):
            while bob.client.reconnects == 0 or not bob.client.is_open:
                await asyncio.sleep(0.05)
        # Resumed: same peer id, peer connection kept. New session: a new
        # peer id and bob offers again. Either way the call comes back.
        [bob_side] = await bob.wait_connected()
        [alice_side] = await alice.wait_connected(timeout=15)
        assert alice_side.peer_id == bob.client.peer_id
        if bob.client.peer_id == first_id:
            assert alice_side.pc.connectionState == "connected"

        assert bob.send("still here") == 1
        peer_id, data = await asyncio.wait_for(alice.messages.get(), 5)
        assert (peer_id, data) == (bob.client.peer_id, "still here")
        assert bob_side.peer_id == alice.client.peer_id
    finally:
        await alice.close()
        await bob.close()
