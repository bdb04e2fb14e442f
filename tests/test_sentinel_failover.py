"""Redis Sentinel failover under live traffic: the primary is SIGKILLed while
two ``sbd serve`` instances relay between their peers; Sentinel promotes the
replica and both instances follow it (redis-py asks the Sentinels again on
each new connection), with no restart and no client reconnecting.

The bound: relay across the instances works again within
:data:`RECOVERY_BOUND_S` of the kill. What it is made of: Sentinel's
``down-after-milliseconds`` (1 s here), its election and promotion (about
1 s), and the instances' reconnect backoff (at most 2 s). The measured time
is printed (``-s``) and recorded in docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.conftest import RESUME_TTL, SHARED_SERVER_ENV
from tests.peers import Peer, make_token
from tests.servers import SbdServer, SentinelCluster, two_instances

PASSWORD = "failover-test-password"
RECOVERY_BOUND_S = 20.0
DOWN_AFTER_MS = 1000
SEND_INTERVAL_S = 0.05


@pytest.fixture
def sentinels() -> Iterator[SentinelCluster]:
    cluster = SentinelCluster(password=PASSWORD, down_after_ms=DOWN_AFTER_MS).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def instances(
    sentinels: SentinelCluster, artifacts_dir: Path
) -> Iterator[tuple[SbdServer, SbdServer]]:
    env = {**SHARED_SERVER_ENV, **sentinels.env, "SBD_RESUME_TTL": str(RESUME_TTL)}
    with two_instances(env, artifacts_dir) as pair:
        yield pair


async def send_forever(sender: Peer, to: str, sent_at: dict[int, float]) -> None:
    """Numbered ``app`` messages, one every SEND_INTERVAL_S."""
    n = 0
    while True:
        n += 1
        sent_at[n] = time.monotonic()
        await sender.send({"type": "app", "to": to, "id": f"m{n}", "payload": n})
        await asyncio.sleep(SEND_INTERVAL_S)


async def first_delivered_after(receiver: Peer, sent_at: dict[int, float], kill: float) -> float:
    """When ``receiver`` got the first message that was sent after ``kill``."""
    while True:
        with contextlib.suppress(TimeoutError):
            message = await receiver.recv(timeout=0.5)
            if message["type"] == "app" and sent_at[message["payload"]] > kill:
                return time.monotonic()


async def test_relay_works_again_after_the_primary_is_killed(
    sentinels: SentinelCluster, instances: tuple[SbdServer, SbdServer]
) -> None:
    one, two = instances
    old_primary, replica = sentinels.primary.port, sentinels.replica.port
    assert sentinels.primary_port() == old_primary
    a = await Peer.join(one.ws_url, "failover", user="alice")
    b = await Peer.join(two.ws_url, "failover", user="bob")
    await a.expect("user-joined")

    sent_at: dict[int, float] = {}
    sender = asyncio.create_task(send_forever(a, b.peer_id, sent_at))
    try:
        await asyncio.sleep(0.5)  # traffic flows
        kill = time.monotonic()
        sentinels.primary.stop(signal.SIGKILL)
        async with asyncio.timeout(RECOVERY_BOUND_S):
            recovered = await first_delivered_after(b, sent_at, kill)
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender
    print(f"\nrelay across instances again {recovered - kill:.2f} s after the primary died")

    # Promotion happened: the Sentinels name the old replica, and it is a primary.
    assert sentinels.primary_port() == replica
    promoted = redis.Redis(port=replica, password=PASSWORD)
    assert promoted.info("replication")["role"] == "master"

    # What a sent meanwhile was delivered or answered with `unavailable`; a's
    # socket carries on. (The state rebuilt after the failover may announce a
    # peer again; never as gone.)
    await a.send({"type": "ping"})
    while (message := await a.recv())["type"] != "pong":
        assert message["type"] in ("error", "user-joined"), message
        if message["type"] == "error":
            assert message["payload"]["code"] == "unavailable", message

    # Both ways, new joins, tickets: all on the promoted primary.
    await b.send({"type": "app", "to": a.peer_id, "payload": "back"})
    while (message := await a.recv())["type"] != "app":
        assert message["type"] in ("error", "user-joined"), message
    assert message["payload"] == "back"
    c = await Peer.join(two.ws_url, "failover", user="carol")
    assert {p["user_id"] for p in c.welcome["payload"]["participants"]} == {"alice", "bob"}
    async with httpx.AsyncClient(base_url=one.base_url) as http:
        answer = await http.post(
            "/api/v1/webrtc/ticket",
            json={"room_id": "failover"},
            headers={"Authorization": f"Bearer {make_token('dave')}"},
        )
    assert answer.status_code == 200, answer.text
    query = f"ticket={answer.json()['ticket']}"
    dave = await Peer.connect(two.ws_url, "failover", None, query=query)
    assert (await dave.expect("welcome"))["payload"]["user_id"] == "dave"
    assert promoted.zcard("sbd:instances") == 2
