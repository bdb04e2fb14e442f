"""Redis Cluster: sharded Pub/Sub (SSUBSCRIBE/SPUBLISH) and slot-safe keys,
against a real 3-master cluster that the suite starts."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
import redis
from redis.cluster import RedisCluster

from tests.conftest import RESUME_TTL, SbdFactory
from tests.peers import Peer, make_token
from tests.servers import RedisClusterServers, SbdServer

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
