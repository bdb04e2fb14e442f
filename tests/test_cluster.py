"""Redis Cluster: sharded Pub/Sub (SSUBSCRIBE/SPUBLISH) and slot-safe keys,
against a real 3-master cluster that the suite starts; tickets and the abuse
limits (per-user cap, handshakes, logins) across two instances on it."""

from __future__ import annotations

import itertools
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from redis.cluster import RedisCluster

from second_brain_database.auth.tickets import issued_key
from second_brain_database.limits.connections import lease_key
from second_brain_database.webrtc.broker.redis_keys import UserKeys
from tests.conftest import RESUME_TTL, SbdFactory
from tests.peers import Device, Peer, make_token
from tests.servers import BIN_DIR, TEST_SECRET, RedisClusterServers, SbdServer, two_instances

_rooms = itertools.count()


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[RedisClusterServers]:
    cluster = RedisClusterServers().start()
    yield cluster
    cluster.stop()


@pytest.fixture
def instances(
    redis_cluster: RedisClusterServers, sbd_factory: SbdFactory
) -> tuple[SbdServer, SbdServer]:
    env = {"SBD_REDIS_URL": redis_cluster.url, "SBD_RESUME_TTL": str(RESUME_TTL)}
    return sbd_factory(env), sbd_factory(env)


def rooms_on_every_shard(client: RedisCluster) -> list[str]:
    """Room ids whose hash slots fall on each master in turn."""
    by_node: dict[str, str] = {}
    for i in itertools.count():
        room = f"shard-room-{next(_rooms)}-{i}"
        node = client.get_node_from_key(f"sbd:room:{{{room}}}:ch")
        assert node is not None
        by_node.setdefault(node.name, room)
        if len(by_node) == 3:
            return list(by_node.values())
    raise AssertionError("unreachable")


async def test_rooms_on_every_shard_relay_across_instances(
    redis_cluster: RedisClusterServers, instances: tuple[SbdServer, SbdServer]
) -> None:
    one, two = instances
    client = RedisCluster.from_url(redis_cluster.url)
    for room in rooms_on_every_shard(client):
        a = await Peer.join(one.ws_url, room, user="alice")
        b = await Peer.join(two.ws_url, room, user="bob")
        assert [p["peer_id"] for p in b.welcome["payload"]["participants"]] == [a.peer_id]
        await a.expect("user-joined")
        await a.send(a.offer(b.peer_id, sdp=f"v=0 {room}"))
        assert (await b.expect("offer"))["payload"]["sdp"] == f"v=0 {room}"
        await b.send({"type": "app", "payload": room})
        assert (await a.expect("app"))["payload"] == room
        await a.send(a.offer("nobody", id="x"))
        assert (await a.expect("error"))["payload"]["code"] == "unknown_peer"

        channel = f"sbd:room:{{{room}}}:ch"
        node = client.get_node_from_key(channel)
        assert node is not None
        owner = redis.Redis(host=node.host, port=node.port)
        # Sharded: both instances subscribed on the owning shard, none classic.
        assert owner.execute_command("PUBSUB", "SHARDNUMSUB", channel)[1] == 2
        for shard in redis_cluster.nodes:
            plain = redis.Redis(host="127.0.0.1", port=shard.port)
            assert plain.pubsub_numsub(channel)[0][1] == 0


async def test_resume_on_a_cluster(
    redis_cluster: RedisClusterServers, instances: tuple[SbdServer, SbdServer]
) -> None:
    one, two = instances
    room = rooms_on_every_shard(RedisCluster.from_url(redis_cluster.url))[1]
    a = await Peer.join(one.ws_url, room, user="alice")
    b = await Peer.join(one.ws_url, room, user="bob")
    await a.expect("user-joined")
    token = b.welcome["payload"]["resume_token"]
    await b.ws.close(4000)
    await a.send(a.offer(b.peer_id, sdp="while away"))
    await a.send({"type": "app", "payload": "broadcast while away"})
    back = await Peer.join(two.ws_url, room, make_token("bob"), query=f"resume={token}")
    assert back.peer_id == b.peer_id
    assert (await back.expect("offer"))["payload"]["sdp"] == "while away"
    assert (await back.expect("app"))["payload"] == "broadcast while away"
    await a.assert_silent()


# --- tickets and abuse limits on the cluster ----------------------------------

HANDSHAKE_BURST = 4
USER_CAP = 2
LOGINS_PER_MINUTE = 5
_clients = itertools.count(1)


@pytest.fixture(scope="module")
def limited_on_cluster(
    redis_cluster: RedisClusterServers, artifacts_dir: Path
) -> Iterator[tuple[SbdServer, SbdServer]]:
    env = {
        "SBD_REDIS_URL": redis_cluster.url,
        "SBD_HANDSHAKE_RATE_PER_S": "0.2",
        "SBD_HANDSHAKE_BURST": str(HANDSHAKE_BURST),
        "SBD_MAX_CONNECTIONS_PER_USER": str(USER_CAP),
        "SBD_LOGIN_ATTEMPTS_PER_MINUTE": str(LOGINS_PER_MINUTE),
    }
    with two_instances(env, artifacts_dir) as instances:
        yield instances


def via_new_address() -> dict[str, Any]:
    """A client address of its own (uvicorn trusts X-Forwarded-For from 127.0.0.1)."""
    return {"additional_headers": {"X-Forwarded-For": f"203.0.113.{next(_clients)}"}}


def names_on_every_shard(client: RedisCluster, prefix: str, key: Callable[[str], str]) -> list[str]:
    """Names whose ``key(name)`` falls on each master in turn."""
    by_node: dict[str, str] = {}
    for i in itertools.count():
        name = f"{prefix}-{i}"
        node = client.get_node_from_key(key(name))
        assert node is not None
        by_node.setdefault(node.name, name)
        if len(by_node) == 3:
            return list(by_node.values())
    raise AssertionError("unreachable")


async def test_a_ticket_minted_on_one_instance_opens_the_other_once(
    redis_cluster: RedisClusterServers, limited_on_cluster: tuple[SbdServer, SbdServer]
) -> None:
    one, two = limited_on_cluster
    client = RedisCluster.from_url(redis_cluster.url)
    # The users' issue windows on every shard; each ticket's own key on any.
    for user in names_on_every_shard(client, "ticket-user", issued_key):
        for room in rooms_on_every_shard(client):
            async with httpx.AsyncClient(base_url=one.base_url) as http:
                answer = await http.post(
                    "/api/v1/webrtc/ticket",
                    json={"room_id": room},
                    headers={"Authorization": f"Bearer {make_token(user)}"},
                )
            assert answer.status_code == 200, answer.text
            query = f"ticket={answer.json()['ticket']}"
            peer = await Peer.connect(two.ws_url, room, None, query=query, **via_new_address())
            welcome = await peer.expect("welcome")
            assert welcome["payload"]["user_id"] == user
            again = await Peer.connect(one.ws_url, room, None, query=query, **via_new_address())
            assert await again.expect_close() == (4003, "invalid ticket")
            await peer.close()


async def test_the_per_user_cap_holds_across_instances_on_a_cluster(
    redis_cluster: RedisClusterServers, limited_on_cluster: tuple[SbdServer, SbdServer]
) -> None:
    one, two = limited_on_cluster
    client = RedisCluster.from_url(redis_cluster.url)
    for user in names_on_every_shard(client, f"capped-{os.getpid()}", lease_key):
        first = await Peer.join(one.ws_url, "cap-room", user=user, **via_new_address())
        await Peer.join(two.ws_url, "cap-room-2", user=user, **via_new_address())
        for server in (one, two):
            over = await Peer.connect(
                server.ws_url, "cap-room", make_token(user), **via_new_address()
            )
            assert await over.expect_close() == (4029, "too many connections for this user")
        await first.send({"type": "leave"})
        await first.expect_close()
        again = await Peer.join(two.ws_url, "cap-room", user=user, **via_new_address())
        assert again.welcome["payload"]["user_id"] == user


async def test_handshakes_are_limited_per_address_on_a_cluster(
    limited_on_cluster: tuple[SbdServer, SbdServer],
) -> None:
    server = limited_on_cluster[0]
    address = via_new_address()
    for n in range(HANDSHAKE_BURST):
        peer = await Peer.join(server.ws_url, "hs-room", user=f"hs-{n}", **address)
        await peer.close()
    refused = await Peer.connect(server.ws_url, "hs-room", "not-a-jwt", **address)
    assert await refused.expect_close() == (4029, "too many connection attempts")


async def test_login_attempts_are_rationed_across_instances_on_a_cluster(
    limited_on_cluster: tuple[SbdServer, SbdServer],
) -> None:
    one, two = limited_on_cluster
    headers = via_new_address()["additional_headers"]
    statuses = []
    for attempt in range(LOGINS_PER_MINUTE + 3):
        server = (one, two)[attempt % 2]  # alternating: per-instance buckets would allow 10
        async with httpx.AsyncClient(base_url=server.base_url, headers=headers) as http:
            answer = await http.post(
                "/api/v1/auth/token", data={"username": "victim", "password": f"guess-{attempt}"}
            )
        statuses.append(answer.status_code)
    assert statuses == [401] * LOGINS_PER_MINUTE + [429] * 3
    # The username's bucket is empty on both instances, whatever the address.
    for server in (one, two):
        async with httpx.AsyncClient(
            base_url=server.base_url, headers=via_new_address()["additional_headers"]
        ) as http:
            answer = await http.post(
                "/api/v1/auth/token", data={"username": "victim", "password": "again"}
            )
        assert answer.status_code == 429


def test_check_reports_the_cluster(redis_cluster: RedisClusterServers) -> None:
    base = {k: v for k, v in SbdServer().env.items() if not k.startswith("SBD_")}
    result = subprocess.run(
        [str(BIN_DIR / "sbd"), "check", "--no-probe-turn"],
        env={**base, "SBD_JWT_SECRET": TEST_SECRET, "SBD_REDIS_URL": redis_cluster.url},
        capture_output=True, text=True, timeout=30, check=False, cwd="/",
    )  # fmt: skip
    [line] = [line for line in result.stdout.splitlines() if line.split()[1] == "redis"]
    assert line.startswith(f"ok    redis     {redis_cluster.url}: PONG in ")
    assert "(Cluster of 3 masters; " in line


async def test_calls_ring_and_answer_across_instances_on_a_cluster(
    redis_cluster: RedisClusterServers, instances: tuple[SbdServer, SbdServer]
) -> None:
    """User channels on every shard (sharded Pub/Sub), a call's key on its
    own slot: callees whose channels fall on each master in turn are rung
    from the other instance, answer, and the caller hears it."""
    first, second = instances
    client = RedisCluster.from_url(redis_cluster.url)
    callees: dict[str, str] = {}
    for i in itertools.count():
        user = f"callee-{i}"
        node = client.get_node_from_key(UserKeys.of(user).channel)
        assert node is not None
        callees.setdefault(node.name, user)
        if len(callees) == 3:
            break
    client.close()
    caller = await Device.ready(first.ws_url, "caller-on-cluster")
    for callee in callees.values():
        phone = await Device.ready(second.ws_url, callee)
        call_id = await caller.call(callee, "cluster-call", ref=callee)
        assert (await phone.expect("incoming-call"))["payload"]["call_id"] == call_id
        await phone.answer(call_id)
        assert (await phone.expect_state("accepted"))["payload"]["ticket"]
        await caller.expect_state("accepted")
        await phone.close()
