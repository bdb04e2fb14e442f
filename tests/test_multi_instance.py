"""Several `sbd serve` processes sharing one redis-server act as one service."""

from __future__ import annotations

import hashlib
import itertools
import shlex
import signal
import threading
import time
from collections import Counter

import httpx
import redis

from second_brain_database.webrtc.broker import redis_scripts
from tests.conftest import SbdFactory
from tests.peers import Peer, eventually, make_token
from tests.servers import RedisServer, SbdServer

_rooms = itertools.count()
Cluster = tuple[SbdServer, SbdServer]


def new_room() -> str:
    return f"multi-{next(_rooms)}"


async def test_welcome_and_joins_cross_instances(cluster: Cluster) -> None:
    one, two = cluster
    room = new_room()
    a = await Peer.join(one.ws_url, room, user="alice")
    b = await Peer.join(two.ws_url, room, user="bob")
    assert [p["peer_id"] for p in b.welcome["payload"]["participants"]] == [a.peer_id]
    assert (await a.expect("user-joined"))["payload"]["peer_id"] == b.peer_id

    await b.send({"type": "leave"})
    assert (await a.expect("user-left"))["payload"]["peer_id"] == b.peer_id


async def test_targeted_and_broadcast_relay_cross_instances(cluster: Cluster) -> None:
    one, two = cluster
    room = new_room()
    a = await Peer.join(one.ws_url, room, user="alice")
    c = await Peer.join(one.ws_url, room, user="carol")
    b = await Peer.join(two.ws_url, room, user="bob")
    await a.expect("user-joined")
    await a.expect("user-joined")
    await c.expect("user-joined")

    await b.send(b.offer(a.peer_id, sdp="v=0 cross"))
    got = await a.expect("offer")
    assert (got["from"], got["from_user"], got["payload"]["sdp"]) == (b.peer_id, "bob", "v=0 cross")
    await c.assert_silent()

    await a.send({"type": "app", "payload": {"all": True}})
    assert (await b.expect("app"))["from"] == a.peer_id
    assert (await c.expect("app"))["from"] == a.peer_id
    await a.assert_silent()

    for i in range(100):
        await b.send({"type": "app", "to": c.peer_id, "payload": i})
    assert [(await c.expect("app"))["payload"] for _ in range(100)] == list(range(100))


async def test_unknown_peer_and_capacity_are_global(cluster: Cluster) -> None:
    one, two = cluster
    room, elsewhere = new_room(), new_room()
    a = await Peer.join(one.ws_url, room, user="alice")
    stranger = await Peer.join(two.ws_url, elsewhere, user="sam")
    await a.send(a.offer(stranger.peer_id, id="x"))
    error = await a.expect("error")
    assert (error["payload"]["code"], error["payload"]["ref"]) == ("unknown_peer", "x")


async def test_participants_endpoint_sees_every_instance(cluster: Cluster) -> None:
    one, two = cluster
    room = new_room()
    a = await Peer.join(one.ws_url, room, user="alice")
    b = await Peer.join(two.ws_url, room, user="bob")
    await b.send({"type": "media-state", "payload": {"audio": True}})
    await a.expect("user-joined")
    await a.expect("media-state")
    headers = {"Authorization": f"Bearer {make_token('obs')}"}
    for instance in cluster:
        async with httpx.AsyncClient(base_url=instance.base_url, headers=headers) as http:
            body = (await http.get(f"/api/v1/webrtc/rooms/{room}/participants")).json()
        assert body["room_id"] == room
        assert {p["peer_id"]: p["media"] for p in body["participants"]} == {
            a.peer_id: {},
            b.peer_id: {"audio": True},
        }


async def test_one_pubsub_connection_per_instance_and_unsubscribe_after_last(
    cluster: Cluster, redis_server: RedisServer
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    pubsub_connections = len(client.client_list(_type="pubsub"))
    rooms = [new_room() for _ in range(5)]
    peers = [await Peer.join(inst.ws_url, room) for room in rooms for inst in cluster]
    channels = [f"sbd:room:{{{room}}}:ch" for room in rooms]
    assert len(client.client_list(_type="pubsub")) == pubsub_connections
    assert [n for _, n in client.pubsub_numsub(*channels)] == [2] * 5

    for peer in peers:
        await peer.send({"type": "leave"})
        await peer.expect_close()
    await eventually(lambda: not any(n for _, n in client.pubsub_numsub(*channels)))
    assert [n for _, n in client.pubsub_numsub(*channels)] == [0] * 5
    assert client.exists(*(f"sbd:room:{{{room}}}:members" for room in rooms)) == 0


async def test_a_relayed_message_costs_one_redis_command(
    cluster: Cluster, redis_server: RedisServer
) -> None:
    one, two = cluster
    room = new_room()
    a = await Peer.join(one.ws_url, room, user="alice")
    b = await Peer.join(two.ws_url, room, user="bob")
    await a.expect("user-joined")
    script_of = {
        hashlib.sha1(getattr(redis_scripts, name).encode()).hexdigest(): name
        for name in ("RELAY_TO", "BROADCAST")
    }
    # Warm up: the first use of a script on a Redis server loads it.
    await a.send(a.offer(b.peer_id))
    await a.send({"type": "app", "payload": "to all"})
    await b.expect("offer")
    await b.expect("app")
    with MonitoredCommands(redis_server.url) as seen:
        for _ in range(50):
            await a.send(a.offer(b.peer_id))
            await a.send({"type": "app", "payload": "to all"})
        for _ in range(50):
            await b.expect("offer")
            await b.expect("app")
    # Every command that touched this room's keys, whoever sent it; the
    # instances' housekeeping (heartbeats, other rooms, pings) touches none.
    tag = f"{{{room}}}".encode()
    per_message = Counter(
        script_of.get(cmd[1].decode(), "other script") if cmd[0].upper() == b"EVALSHA"
        else cmd[0].decode().upper()
        for cmd in seen
        if any(tag in part for part in cmd)
    )  # fmt: skip
    # Targeted: one EVALSHA (membership check + PUBLISH, in Lua); broadcast: one EVALSHA.
    assert per_message == {"RELAY_TO": 50, "BROADCAST": 50}, per_message


class MonitoredCommands:
    """Top-level commands that clients sent to Redis while the block ran."""

    def __init__(self, url: str) -> None:
        self._client = redis.Redis.from_url(url)
        self._commands: list[list[bytes]] = []
        self._stop = threading.Event()

    def __enter__(self) -> list[list[bytes]]:
        self._monitor = self._client.monitor()
        self._monitor.__enter__()
        self._marker = f"sbd-test-end-{time.monotonic_ns()}"
        self._thread = threading.Thread(target=self._collect, daemon=True)
        self._thread.start()
        return self._commands

    def _collect(self) -> None:
        for event in self._monitor.listen():
            command = event["command"]
            if self._marker in command:
                return
            # MONITOR shows commands a script runs as coming from "lua".
            if event.get("client_type") != "lua" and event.get("client_address") != "lua":
                self._commands.append([part.encode() for part in shlex.split(command)])

    def __exit__(self, *exc: object) -> None:
        self._client.echo(self._marker)
        self._thread.join(10)
        self._monitor.__exit__(*exc)


async def test_peers_of_a_killed_instance_are_reaped(
    redis_server: RedisServer, sbd_factory: SbdFactory
) -> None:
    env = {"SBD_REDIS_URL": redis_server.url, "SBD_PRESENCE_TTL": "1.5"}
    doomed, survivor = sbd_factory(env), sbd_factory(env)
    room = new_room()
    a = await Peer.join(survivor.ws_url, room, user="alice")
    ghosts = [await Peer.join(doomed.ws_url, room, user=f"ghost{i}") for i in range(2)]
    for _ in ghosts:
        await a.expect("user-joined")

    doomed.stop(signal.SIGKILL)
    killed_at = time.monotonic()
    left = {(await a.expect("user-left", timeout=10))["payload"]["peer_id"] for _ in ghosts}
    elapsed = time.monotonic() - killed_at
    assert left == {g.peer_id for g in ghosts}
    assert elapsed < 1.5 + 1.5, f"reaped after {elapsed:.1f}s"  # TTL + one heartbeat period
    headers = {"Authorization": f"Bearer {make_token('obs')}"}
    async with httpx.AsyncClient(base_url=survivor.base_url, headers=headers) as http:
        body = (await http.get(f"/api/v1/webrtc/rooms/{room}/participants")).json()
    assert [p["peer_id"] for p in body["participants"]] == [a.peer_id]


async def test_instances_with_different_presence_ttls_never_reap_each_other(
    redis_server: RedisServer, sbd_factory: SbdFactory
) -> None:
    fast = sbd_factory({"SBD_REDIS_URL": redis_server.url, "SBD_PRESENCE_TTL": "1"})
    slow = sbd_factory({"SBD_REDIS_URL": redis_server.url, "SBD_PRESENCE_TTL": "30"})
    room = new_room()
    a = await Peer.join(slow.ws_url, room, user="alice")
    b = await Peer.join(fast.ws_url, room, user="bob")
    await a.expect("user-joined")
    # The slow instance heartbeats every 10 s; the fast one would have called
    # it dead after 1 s had it judged by its own TTL.
    await b.assert_silent(3.5)
    await b.send(b.offer(a.peer_id))
    assert (await a.expect("offer"))["from"] == b.peer_id
