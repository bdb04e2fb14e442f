"""WebSocket tickets (``POST /api/v1/webrtc/ticket``, ``?ticket=``) against real
servers: single use on one instance and across two, bound to user and room,
short-lived, and never written to a log line or a metric."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from second_brain_database.auth.tickets import (
    MAX_TICKETS_PER_USER,
    MemoryTicketStore,
    RedisTicketStore,
    TicketStore,
    TicketUnavailable,
)
from second_brain_database.auth.tokens import InvalidToken, Principal
from second_brain_database.logging_setup import RedactCredentials
from tests.peers import Peer, make_token
from tests.servers import RedisServer, SbdServer, free_port

_rooms = itertools.count()


def new_room() -> str:
    return f"ticket-room-{next(_rooms)}"


async def ticket_for(server: SbdServer, room: str, token: str | None = None) -> str:
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        answer = await http.post(
            "/api/v1/webrtc/ticket",
            json={"room_id": room},
            headers={"Authorization": f"Bearer {token or make_token('alice')}"},
        )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["expires_in"] == 30
    assert answer.headers["cache-control"] == "no-store"
    ticket: str = body["ticket"]
    return ticket


async def join_with_ticket(server: SbdServer, room: str, ticket: str) -> Peer:
    peer = await Peer.connect(server.ws_url, room, None, query=f"ticket={ticket}")
    peer.welcome = await peer.expect("welcome")
    return peer


async def first_frame(peer: Peer) -> str:
    """``welcome``, or ``closed <code>``."""
    try:
        return str((await peer.recv())["type"])
    except ConnectionClosed:
        return f"closed {peer.ws.close_code}"


async def closed_with(server: SbdServer, room: str, query: str) -> tuple[int, str]:
    peer = await Peer.connect(server.ws_url, room, None, query=query)
    return await peer.expect_close()


async def test_a_ticket_opens_its_room_once(server: SbdServer) -> None:
    room = new_room()
    ticket = await ticket_for(server, room, make_token("alice", name="Alice", role="host"))
    peer = await join_with_ticket(server, room, ticket)
    assert peer.welcome["payload"]["user_id"] == "alice"
    assert peer.welcome["payload"]["room_id"] == room
    assert await closed_with(server, room, f"ticket={ticket}") == (4003, "invalid ticket")
    # The session is the token's: its claims (role) came along.
    other = await Peer.join(server.ws_url, room, user="bob")
    await peer.expect("user-joined")
    await peer.send({"type": "kick", "payload": {"peer_id": other.peer_id}})
    assert (await other.expect_close())[0] == 4003


async def test_a_ticket_is_bound_to_its_room(server: SbdServer) -> None:
    room = new_room()
    ticket = await ticket_for(server, room)
    code, reason = await closed_with(server, new_room(), f"ticket={ticket}")
    assert (code, reason) == (4003, "ticket not valid for this room")
    # Presented once in the wrong room, it is spent.
    assert (await closed_with(server, room, f"ticket={ticket}"))[0] == 4003


async def test_garbage_tickets_and_a_ticket_with_a_token_are_refused(server: SbdServer) -> None:
    room = new_room()
    assert (await closed_with(server, room, "ticket=nope"))[0] == 4003
    assert (await closed_with(server, room, "ticket=" + "x" * 500))[0] == 4003
    ticket = await ticket_for(server, room)
    both = f"ticket={ticket}&token={make_token('mallory')}"
    assert await closed_with(server, room, both) == (4003, "send a token or a ticket, not both")


async def test_the_ticket_endpoint_needs_a_token_valid_for_the_room(server: SbdServer) -> None:
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        url = "/api/v1/webrtc/ticket"
        assert (await http.post(url, json={"room_id": "r1"})).status_code == 401
        scoped = {"Authorization": f"Bearer {make_token('alice', rooms=['r1'])}"}
        assert (await http.post(url, json={"room_id": "r2"}, headers=scoped)).status_code == 403
        assert (await http.post(url, json={"room_id": "r1"}, headers=scoped)).status_code == 200
        bad = await http.post(url, json={"room_id": "../etc"}, headers=scoped)
        assert bad.status_code == 422


async def test_tickets_per_user_are_bounded(server: SbdServer) -> None:
    token = make_token(f"hoarder-{time.monotonic_ns()}")
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        codes = [
            (
                await http.post(
                    "/api/v1/webrtc/ticket",
                    json={"room_id": "r"},
                    headers={"Authorization": f"Bearer {token}"},
                )
            ).status_code
            for _ in range(MAX_TICKETS_PER_USER + 1)
        ]
    assert codes == [200] * MAX_TICKETS_PER_USER + [429]


async def test_a_ticket_is_single_use_across_instances(
    cluster: tuple[SbdServer, SbdServer],
) -> None:
    first, second = cluster
    for _ in range(5):
        room = new_room()
        ticket = await ticket_for(first, room)
        peers = await asyncio.gather(
            Peer.connect(first.ws_url, room, None, query=f"ticket={ticket}"),
            Peer.connect(second.ws_url, room, None, query=f"ticket={ticket}"),
        )
        firsts = sorted([await first_frame(peer) for peer in peers])
        assert firsts == ["closed 4003", "welcome"]
        for peer in peers:
            await peer.close()


async def test_no_ticket_or_token_reaches_a_log_line_or_a_metric(server: SbdServer) -> None:
    room = new_room()
    token = make_token("carol")
    ticket = await ticket_for(server, room, token)
    await join_with_ticket(server, room, ticket)
    await closed_with(server, room, f"ticket={ticket}")  # a refused one is logged too
    await Peer.join(server.ws_url, room, token=token)
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        metrics = (await http.get("/metrics")).text
    log = server.log()
    assert "ticket=[redacted]" in log  # the handshake lines were logged, redacted
    for secret in (ticket, token):
        assert secret not in log
        assert secret not in metrics


def test_the_log_filter_redacts_tickets() -> None:
    record = logging.LogRecord(
        "uvicorn.error",
        logging.INFO,
        "",
        0,
        '%s - "WebSocket %s" %s',
        (
            "127.0.0.1:5000",
            "/ws/webrtc/r?ticket=s3cr3t-T1cket_x&resume=abc.def",
            "[accepted]",
        ),
        None,
    )
    RedactCredentials().filter(record)
    line = record.getMessage()
    assert "s3cr3t" not in line and "abc.def" not in line
    assert "ticket=[redacted]" in line


# --- the stores, directly: expiry and an unreachable Redis --------------------


def principal(ttl: float) -> Principal:
    return Principal(user_id="dave", name="Dave", expires_at=time.time() + ttl)


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> TicketStore:
    if request.param == "memory":
        return MemoryTicketStore()
    from redis.asyncio import Redis

    redis_server: RedisServer = request.getfixturevalue("redis_server")
    return RedisTicketStore(Redis.from_url(redis_server.url))


async def test_a_ticket_never_outlives_its_token(store: TicketStore) -> None:
    ticket, ttl = await store.issue(principal(1.9), "room")
    assert ttl == 1
    await asyncio.sleep(1.1)
    with pytest.raises(InvalidToken):
        await store.redeem(ticket, "room")


async def test_a_ticket_carries_the_principal_and_is_gone_after_use(store: TicketStore) -> None:
    ticket, ttl = await store.issue(principal(600), "room")
    assert ttl == 30
    assert (await store.redeem(ticket, "room")).name == "Dave"
    with pytest.raises(InvalidToken):
        await store.redeem(ticket, "room")


async def test_an_unreachable_ticket_store_refuses_rather_than_guesses() -> None:
    from redis.asyncio import Redis

    store = RedisTicketStore(Redis.from_url(f"redis://127.0.0.1:{free_port()}/0"))
    with pytest.raises(TicketUnavailable):
        await store.issue(principal(600), "room")
    with pytest.raises(TicketUnavailable):
        await store.redeem("a" * 43, "room")


async def test_redis_holds_a_hash_of_the_ticket_never_the_ticket(redis_server: RedisServer) -> None:
    from redis.asyncio import Redis

    redis = Redis.from_url(redis_server.url)
    ticket, _ = await RedisTicketStore(redis).issue(principal(600), "room")
    keys = [key.decode() async for key in redis.scan_iter("sbd:ticket:*")]
    values = [await redis.get(key) for key in keys if await redis.type(key) == b"string"]
    assert keys and not any(ticket in key for key in keys)
    assert not any(value and ticket.encode() in value for value in values)
    await redis.aclose()
