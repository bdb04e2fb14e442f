"""The Python client of calls (``CallClient``, and ``SignalingClient.call``)
against two real `sbd serve` instances sharing a real redis-server: the
caller on one, the callee's devices on both; the accepted side joins the
call's room with its ticket and the two exchange an offer there."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from second_brain_database.webrtc.client import CallClient, CallRefused, SignalingClient
from second_brain_database.webrtc.schemas import (
    CallStateMessage,
    ErrorCode,
    IncomingCallMessage,
    RelayedFrame,
)
from tests.conftest import SbdFactory
from tests.peers import make_token
from tests.servers import SbdServer

Cluster = tuple[SbdServer, SbdServer]
_users = itertools.count()


def names() -> tuple[str, str]:
    n = next(_users)
    return f"py-alice-{n}", f"py-bob-{n}"


async def test_ring_accept_and_meet_in_the_room(cluster: Cluster) -> None:
    one, two = cluster
    alice, bob = names()
    caller = CallClient(one.base_url, make_token(alice))
    bob_token = make_token(bob, rooms=["not-the-call-room"])
    phone, laptop = CallClient(two.base_url, bob_token), CallClient(one.base_url, bob_token)
    for client in (caller, phone, laptop):
        await client.connect()
    try:
        ringing = await caller.call(bob, "py-call", data={"video": True})
        assert ringing.state == "ringing" and ringing.devices == 2
        for device in (phone, laptop):
            incoming = await device.wait_for("incoming-call")
            assert isinstance(incoming, IncomingCallMessage)
            assert incoming.from_user == alice and incoming.payload.data == {"video": True}
        accepted = await phone.accept(ringing.call_id)
        assert accepted.room_id == "py-call" and accepted.ticket
        with pytest.raises(CallRefused) as late:
            await laptop.accept(ringing.call_id)
        assert late.value.error.code is ErrorCode.UNKNOWN_CALL
        heard = await caller.wait_for("call-state")
        assert isinstance(heard, CallStateMessage) and heard.payload.state == "ringing"
        heard = await caller.wait_for("call-state")
        assert isinstance(heard, CallStateMessage) and heard.payload.state == "accepted"

        # Into the call's room: Bob by the ticket (his token does not list the room).
        room_alice = SignalingClient(one.base_url, "py-call", make_token(alice))
        room_bob = SignalingClient(
            two.base_url, "py-call", bob_token, ticket=accepted.ticket, use_tickets=False
        )
        await room_alice.connect()
        welcome = await room_bob.connect()
        assert [p.user_id for p in welcome.participants] == [alice]
        await room_bob.offer(room_alice.peer_id, "v=0\r\n")
        offer = await room_alice.wait_for("offer")
        assert isinstance(offer, RelayedFrame) and offer.from_user == bob
        await room_alice.leave()
        await room_bob.leave()
    finally:
        for client in (caller, phone, laptop):
            await client.close()


async def test_decline_cancel_and_refusals(cluster: Cluster) -> None:
    one, two = cluster
    alice, bob = names()
    caller = CallClient(one.base_url, make_token(alice, calls=[bob]))
    phone = CallClient(two.base_url, make_token(bob))
    await caller.connect()
    await phone.connect()
    try:
        first = await caller.call(bob, "py-room")
        await phone.wait_for("incoming-call")
        assert (await phone.decline(first.call_id)).state == "declined"
        second = await caller.call(bob, "py-room")
        await phone.wait_for("incoming-call")
        assert (await caller.cancel(second.call_id)).state == "cancelled"
        with pytest.raises(CallRefused) as refused:
            await caller.call("carol", "py-room")  # not in the token's calls claim
        assert refused.value.error.code is ErrorCode.FORBIDDEN
        with pytest.raises(CallRefused) as unknown:
            await phone.accept("no-such-call")
        assert unknown.value.error.code is ErrorCode.UNKNOWN_CALL
    finally:
        await caller.close()
        await phone.close()


async def test_a_device_that_reconnects_gets_the_ringing_call_again(cluster: Cluster) -> None:
    one, two = cluster
    alice, bob = names()
    caller = CallClient(one.base_url, make_token(alice))
    phone = CallClient(two.base_url, make_token(bob), initial_delay=0.05)
    await caller.connect()
    first_ready = await phone.connect()
    try:
        ringing = await caller.call(bob, "py-room")
        await phone.wait_for("incoming-call")
        await phone.drop()
        await phone.wait_for("ready")
        assert phone.ready is not None and phone.ready.connection_id != first_ready.connection_id
        again = await phone.wait_for("incoming-call")
        assert isinstance(again, IncomingCallMessage) and again.payload.call_id == ringing.call_id
        assert (await phone.accept(ringing.call_id)).ticket
    finally:
        await caller.close()
        await phone.close()


async def test_a_room_socket_rings_with_the_python_client(cluster: Cluster) -> None:
    one, two = cluster
    alice, bob = names()
    in_room = SignalingClient(one.base_url, f"py-lobby-{alice}", make_token(alice))
    phone = CallClient(two.base_url, make_token(bob))
    await in_room.connect()
    await phone.connect()
    try:
        await in_room.call(bob, "py-room", ref="r1")
        ringing = await in_room.wait_for("call-state")
        assert isinstance(ringing, CallStateMessage) and ringing.ref == "r1"
        await phone.wait_for("incoming-call")
        await in_room.cancel_call(ringing.payload.call_id)
        ended = await phone.wait_for("call-state")
        assert isinstance(ended, CallStateMessage) and ended.payload.state == "cancelled"
    finally:
        await in_room.leave()
        await phone.close()


async def test_a_waiting_device_outlives_the_idle_timeout(sbd_factory: SbdFactory) -> None:
    server = sbd_factory({"SBD_IDLE_TIMEOUT": "1"})
    alice, bob = names()
    phone = CallClient(server.base_url, make_token(bob), ping_interval=0.3, reconnect=False)
    await phone.connect()
    try:
        await asyncio.sleep(2.5)  # past the idle timeout, with nothing but pings
        caller = CallClient(server.base_url, make_token(alice), ping_interval=0.3)
        await caller.connect()
        ringing = await caller.call(bob, "py-room")
        incoming = await phone.wait_for("incoming-call", timeout=5)
        assert isinstance(incoming, IncomingCallMessage)
        assert incoming.payload.call_id == ringing.call_id
        await caller.close()
    finally:
        await phone.close()
