"""Redis Sentinel (``SBD_REDIS_SENTINELS``): a primary, a replica and three
Sentinels, real processes, with a password (``SBD_REDIS_PASSWORD``); two
``sbd serve`` in Sentinel mode relay across each other, tickets work, and
``sbd check`` names the Sentinels, the primary and the replica."""

from __future__ import annotations

import itertools
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from second_brain_database.config import Settings
from tests.conftest import RESUME_TTL, SHARED_SERVER_ENV
from tests.peers import Device, Peer, make_token
from tests.servers import (
    BIN_DIR,
    TEST_SECRET,
    RedisServer,
    SbdServer,
    SentinelCluster,
    two_instances,
)

PASSWORD = "sentinel-test-password"
_rooms = itertools.count()


def new_room() -> str:
    return f"sentinel-room-{next(_rooms)}"


@pytest.fixture(scope="module")
def sentinels() -> Iterator[SentinelCluster]:
    cluster = SentinelCluster(password=PASSWORD).start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def instances(
    sentinels: SentinelCluster, artifacts_dir: Path
) -> Iterator[tuple[SbdServer, SbdServer]]:
    env = {**SHARED_SERVER_ENV, **sentinels.env, "SBD_RESUME_TTL": str(RESUME_TTL)}
    with two_instances(env, artifacts_dir) as pair:
        yield pair


def primary_client(sentinels: SentinelCluster) -> redis.Redis:
    return redis.Redis(port=sentinels.primary_port(), password=PASSWORD)


async def test_relay_across_instances_through_the_named_primary(
    sentinels: SentinelCluster, instances: tuple[SbdServer, SbdServer]
) -> None:
    one, two = instances
    room = new_room()
    a = await Peer.join(one.ws_url, room, user="alice")
    b = await Peer.join(two.ws_url, room, user="bob")
    assert [p["peer_id"] for p in b.welcome["payload"]["participants"]] == [a.peer_id]
    await a.expect("user-joined")
    await a.send(a.offer(b.peer_id, sdp="v=0 via sentinel"))
    assert (await b.expect("offer"))["payload"]["sdp"] == "v=0 via sentinel"
    await b.send({"type": "app", "payload": "back"})
    assert (await a.expect("app"))["payload"] == "back"
    # The state is on the primary the Sentinels name, and replicated.
    primary = primary_client(sentinels)
    assert primary.zcard("sbd:instances") == 2
    assert primary.exists(f"sbd:room:{{{room}}}:members")
    assert primary.info("replication")["connected_slaves"] == 1


async def test_a_ticket_from_one_instance_opens_the_other_once(
    instances: tuple[SbdServer, SbdServer],
) -> None:
    one, two = instances
    room = new_room()
    async with httpx.AsyncClient(base_url=one.base_url) as http:
        answer = await http.post(
            "/api/v1/webrtc/ticket",
            json={"room_id": room},
            headers={"Authorization": f"Bearer {make_token('carol')}"},
        )
    assert answer.status_code == 200, answer.text
    query = f"ticket={answer.json()['ticket']}"
    peer = await Peer.connect(two.ws_url, room, None, query=query)
    assert (await peer.expect("welcome"))["payload"]["user_id"] == "carol"
    again = await Peer.connect(one.ws_url, room, None, query=query)
    assert await again.expect_close() == (4003, "invalid ticket")


def sbd_check(env: dict[str, str]) -> list[str]:
    base = {k: v for k, v in SbdServer().env.items() if not k.startswith("SBD_")}
    result = subprocess.run(
        [str(BIN_DIR / "sbd"), "check", "--no-probe-turn"],
        env={**base, "SBD_JWT_SECRET": TEST_SECRET, **env},
        capture_output=True, text=True, timeout=30, check=False, cwd="/",
    )  # fmt: skip
    return [line for line in result.stdout.splitlines() if line.split()[1:2] == ["redis"]]


def test_check_names_the_sentinels_the_primary_and_the_replicas(
    sentinels: SentinelCluster,
) -> None:
    lines = sbd_check(sentinels.env)
    reached = ", ".join(s.address for s in sentinels.sentinels)
    primary = f"127.0.0.1:{sentinels.primary_port()}"
    replica = next(
        f"127.0.0.1:{port}"
        for port in (sentinels.primary.port, sentinels.replica.port)
        if f"127.0.0.1:{port}" != primary
    )
    assert lines[0] == f"ok    redis     3 of 3 Sentinels reached ({reached})"
    assert lines[1] == f"ok    redis     primary of mymaster: {primary}"
    assert lines[2] == f"ok    redis     replicas of mymaster: {replica}"
    assert lines[3].startswith("ok    redis     primary of mymaster: PONG in ")
    assert PASSWORD not in "\n".join(lines)


def test_check_fails_on_a_wrong_password_or_an_unknown_master(
    sentinels: SentinelCluster,
) -> None:
    wrong = sbd_check({**sentinels.env, "SBD_REDIS_PASSWORD": "not-it"})
    assert wrong[-1].startswith("FAIL  redis     primary of mymaster: unreachable (")
    unknown = sbd_check({**sentinels.env, "SBD_REDIS_SENTINEL_MASTER": "nosuch"})
    assert unknown[-1].startswith("FAIL  redis     no primary named 'nosuch'")


def test_the_password_applies_to_a_standalone_redis() -> None:
    server = RedisServer(password=PASSWORD).start()
    try:
        url = f"redis://127.0.0.1:{server.port}/0"
        [ok] = sbd_check({"SBD_REDIS_URL": url, "SBD_REDIS_PASSWORD": PASSWORD})
        assert ok.startswith(f"ok    redis     {url}: PONG in ")
        [refused] = sbd_check({"SBD_REDIS_URL": url})
        assert refused.startswith("FAIL  redis     ") and "unreachable" in refused
    finally:
        server.stop()


def test_one_password_setting_at_a_time() -> None:
    with pytest.raises(ValueError, match="set one"):
        Settings(redis_url="redis://:a@127.0.0.1:6379/0", redis_password="b")
    with pytest.raises(ValueError, match="host:port"):
        Settings(redis_sentinels="127.0.0.1")


async def test_a_call_rings_and_is_answered_across_instances_through_sentinel(
    sentinels: SentinelCluster, instances: tuple[SbdServer, SbdServer]
) -> None:
    one, two = instances
    caller = await Device.ready(one.ws_url, "sentinel-alice")
    phone = await Device.ready(two.ws_url, "sentinel-bob")
    call_id = await caller.call("sentinel-bob", new_room())
    assert (await phone.expect("incoming-call"))["payload"]["call_id"] == call_id
    # The call is on the primary the Sentinels name.
    assert primary_client(sentinels).hget(f"sbd:call:{{{call_id}}}", "state") == b"ringing"
    await phone.answer(call_id)
    assert (await phone.expect_state("accepted"))["payload"]["ticket"]
    await caller.expect_state("accepted")
