"""Faults with real processes: Redis dies or drops us, an instance drains,
a client stops reading. The suite starts, kills and restarts its own Redis."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator

import httpx
import pytest
import redis
import websockets

from tests.conftest import SbdFactory
from tests.peers import Peer, eventually, make_token
from tests.servers import RedisServer, SbdServer


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


def pair_env(own_redis: RedisServer, **extra: str) -> dict[str, str]:
    return {"SBD_REDIS_URL": own_redis.url, "SBD_PRESENCE_TTL": "3", **extra}


async def alice_and_bob(
    own_redis: RedisServer, sbd_factory: SbdFactory, room: str
) -> tuple[SbdServer, SbdServer, Peer, Peer]:
    """Two instances on ``own_redis``, alice on the first and bob on the second."""
    one, two = sbd_factory(pair_env(own_redis)), sbd_factory(pair_env(own_redis))
    a = await Peer.join(one.ws_url, room, user="alice")
    b = await Peer.join(two.ws_url, room, user="bob")
    await a.expect("user-joined")
    return one, two, a, b


async def ready_status(server: SbdServer) -> int:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=2) as http:
        return (await http.get("/health/ready")).status_code


async def wait_ready(server: SbdServer, status: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while (await ready_status(server)) != status:
        assert time.monotonic() < deadline, f"{server.base_url} never became {status}"
        await asyncio.sleep(0.1)


async def relay_works(sender: Peer, receiver: Peer, tag: str) -> None:
    await sender.send(sender.offer(receiver.peer_id, sdp=tag))
    got = await receiver.expect("offer", timeout=10)
    assert got["payload"]["sdp"] == tag


async def test_redis_killed_and_restarted_empty_under_live_rooms(
    own_redis: RedisServer, sbd_factory: SbdFactory
) -> None:
    one, two, a, b = await alice_and_bob(own_redis, sbd_factory, "outage")
    await relay_works(a, b, "before")

    own_redis.stop(signal.SIGKILL)
    await wait_ready(one, 503)
    await wait_ready(two, 503)
    # Clients stay connected; what needs Redis gets a clear error, the rest works.
    await a.send({"type": "ping"})
    await a.expect("pong")
    await a.send(a.offer(b.peer_id, id="lost"))
    error = await a.expect("error", timeout=10)
    assert (error["payload"]["code"], error["payload"]["ref"]) == ("unavailable", "lost")

    own_redis.start()  # same port, empty: no rooms, no members
    await wait_ready(one, 200)
    await wait_ready(two, 200)
    await eventually(
        lambda: redis.Redis.from_url(own_redis.url).hlen("sbd:room:{outage}:members") == 2,
        timeout=10,
    )
    # Each side may be told the other joined again (state was rebuilt); never left.
    for peer in (a, b):
        with pytest.raises(TimeoutError):
            while True:
                assert (await peer.recv(timeout=0.5))["type"] == "user-joined"
    await relay_works(a, b, "after")
    await relay_works(b, a, "and back")


async def test_pubsub_connection_killed_by_redis_is_restored(
    own_redis: RedisServer, sbd_factory: SbdFactory
) -> None:
    _, _, a, b = await alice_and_bob(own_redis, sbd_factory, "deaf")
    client = redis.Redis.from_url(own_redis.url)
    before = {c["id"] for c in client.client_list(_type="pubsub")}
    assert len(before) == 2
    client.client_kill_filter(_type="pubsub")
    await eventually(
        lambda: len({c["id"] for c in client.client_list(_type="pubsub")} - before) == 2,
        timeout=10,
    )
    await relay_works(a, b, "heard again")
    await relay_works(b, a, "both ways")


async def test_pubsub_disconnected_for_output_buffer_overflow_recovers(
    own_redis: RedisServer, sbd_factory: SbdFactory
) -> None:
    _, _, a, b = await alice_and_bob(own_redis, sbd_factory, "flood")
    client = redis.Redis.from_url(own_redis.url)
    before = {c["id"] for c in client.client_list(_type="pubsub")}
    client.config_set("client-output-buffer-limit", "pubsub 1024 1024 0")
    client.publish("sbd:room:{flood}:ch", "\n\n" + "x" * 100_000)  # over the limit: dropped
    await eventually(lambda: not ({c["id"] for c in client.client_list(_type="pubsub")} & before))
    client.config_set("client-output-buffer-limit", "pubsub 32mb 8mb 60")
    await eventually(lambda: len(client.client_list(_type="pubsub")) == 2, timeout=10)
    await relay_works(a, b, "recovered")


async def test_sigterm_drains_and_clients_resume_elsewhere(
    own_redis: RedisServer, sbd_factory: SbdFactory
) -> None:
    env = pair_env(own_redis, SBD_RESUME_TTL="15")
    draining, staying = sbd_factory(env), sbd_factory(env)
    a = await Peer.join(staying.ws_url, "drain", user="alice")
    bs = [await Peer.join(draining.ws_url, "drain", user=f"bob{i}") for i in range(3)]
    for _ in bs:
        await a.expect("user-joined")

    started = time.monotonic()
    assert draining.process is not None
    draining.process.send_signal(signal.SIGTERM)
    for b in bs:
        assert (await b.expect_close(timeout=10))[0] in (1001, 1012)
    for b in bs:  # sent while they are between instances
        await a.send({"type": "app", "to": b.peer_id, "payload": f"for {b.peer_id}"})
    code = await asyncio.to_thread(draining.process.wait, 20)
    # uvicorn re-raises the signal once its graceful shutdown is complete.
    assert code in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in draining.log()
    assert time.monotonic() - started < 15, "drain took too long"

    for b in bs:
        back = await Peer.join(
            staying.ws_url,
            "drain",
            make_token(b.welcome["payload"]["user_id"]),
            query=f"resume={b.welcome['payload']['resume_token']}",
        )
        assert back.peer_id == b.peer_id
        assert (await back.expect("app"))["payload"] == f"for {b.peer_id}"
    await a.assert_silent(0.5)  # nobody left, nobody joined


async def test_new_connections_are_refused_while_draining(sbd_factory: SbdFactory) -> None:
    server = sbd_factory()
    peer = await Peer.join(server.ws_url, "bye")
    assert server.process is not None
    server.process.send_signal(signal.SIGTERM)
    assert (await peer.expect_close())[0] in (1001, 1012)
    with pytest.raises((OSError, websockets.exceptions.InvalidStatus, TimeoutError)):
        await Peer.join(server.ws_url, "bye")


async def test_a_client_that_never_reads_is_closed_and_slows_no_one(
    sbd_factory: SbdFactory,
) -> None:
    server = sbd_factory({"SBD_SEND_QUEUE_SIZE": "16"})
    room = "slow"
    sleeper = await Peer.join(server.ws_url, room, user="sleepy", max_queue=1)
    fast = await Peer.join(server.ws_url, room, user="fast")
    talker = await Peer.join(server.ws_url, room, user="talker")
    await fast.expect("user-joined")

    blob = "y" * 16_000
    # Broadcasts: the sleeper's share piles up unread. Had it held anyone up,
    # the fast reader would stall and expect() time out.
    for i in range(300):
        await talker.send({"type": "app", "payload": {"i": i, "blob": blob}})
        assert (await fast.expect("app"))["payload"]["i"] == i

    async with httpx.AsyncClient(base_url=server.base_url) as http:
        metrics = (await http.get("/metrics")).text
    slow = [line for line in metrics.splitlines() if line.startswith("sbd_slow_consumer")]
    assert any(line.split()[-1] != "0.0" for line in slow), slow
    code, _ = await sleeper.expect_close(timeout=10)
    assert code == 1013
