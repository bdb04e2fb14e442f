"""Webhooks end to end (issue 14.1): real `sbd serve` processes, a real
receiver under uvicorn that verifies every signature with the
``standardwebhooks`` package, real Redis."""

from __future__ import annotations

import asyncio
import itertools
import signal
from collections.abc import Iterator

import httpx
import pytest
from redis.cluster import RedisCluster

from tests.peers import Device, Peer, eventually, make_token
from tests.scrape import scrape, value
from tests.servers import TEST_SECRET, RedisClusterServers, RedisServer, free_port
from tests.test_cli_ops import lines_of, sbd
from tests.test_cluster import rooms_on_every_shard
from tests.webhook_receiver import SECRET, Receiver, running_receiver, webhook_env

pytestmark = pytest.mark.timeout(120)

_rooms = itertools.count()
FAST = {
    "SBD_RESUME_TTL": "1",
    "SBD_PRESENCE_TTL": "1",
    # The rate-limited peer is closed after a few dozen pings.
    "SBD_RATE_LIMIT_PER_S": "5",
    "SBD_RATE_LIMIT_BURST": "20",
}


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    """A redis-server of this module's own: instances of other modules (on the
    session's shared one) run with webhooks off, and would expire or reap this
    module's peers without writing their events (every instance of a
    deployment must have the same webhook settings, docs/webhooks.md)."""
    server = RedisServer().start()
    yield server
    server.stop()


def new_room() -> str:
    return f"hooks-{next(_rooms)}"


async def left(receiver: Receiver, room: str, peer_id: str, timeout: float = 10) -> None:
    await eventually(
        lambda: any(t == "participant.left" and p == peer_id for t, p, _ in receiver.of_room(room)),
        timeout,
    )


async def every_reason(host_url: str, others_url: str, receiver: Receiver, room: str) -> list:
    """Peers leave the room in every way but ``reaped``; returns the room's
    events as they must arrive."""
    host = await Peer.join(host_url, room, make_token("host", role="host"))
    expected = [("room.started", "", ""), ("participant.joined", host.peer_id, "")]

    async def peer(user: str, reason: str, gone: object, token: str | None = None) -> None:
        p = await Peer.join(others_url, room, token or make_token(user))
        expected.append(("participant.joined", p.peer_id, ""))
        await gone(p)  # type: ignore[operator]
        expected.append(("participant.left", p.peer_id, reason))
        await left(receiver, room, p.peer_id)

    async def leave(p: Peer) -> None:
        await p.send({"type": "leave"})

    async def kick(p: Peer) -> None:
        await host.send({"type": "kick", "payload": {"peer_id": p.peer_id}})

    async def expire(p: Peer) -> None:
        await p.expect_close(timeout=5)

    async def drop(p: Peer) -> None:
        await p.ws.close(4000, "network change")

    async def drop_then_kick(p: Peer) -> None:
        await drop(p)
        await asyncio.sleep(0.2)  # the peer is away: the kick removes it at once
        await kick(p)

    async def flood(p: Peer) -> None:
        for _ in range(100):
            await p.send({"type": "ping"})
        assert (await p.expect_close())[0] == 4029

    await peer("leaver", "leave", leave)
    await peer("kicked", "kicked", kick)
    await peer("expiring", "expired", expire, make_token("expiring", ttl=2))
    await peer("dropper", "timeout", drop)
    await peer("away", "kicked", drop_then_kick)
    await peer("flooder", "closed", flood)
    await host.send({"type": "leave"})
    expected += [("participant.left", host.peer_id, "leave"), ("room.finished", "", "")]
    return expected


def assert_clean(receiver: Receiver) -> None:
    assert receiver.forged == []
    assert receiver.overlapped == []


async def test_every_event_and_reason_on_the_embedded_broker(sbd_factory) -> None:
    async with running_receiver() as receiver:
        server = sbd_factory(webhook_env(receiver, **FAST))
        room = new_room()
        expected = await every_reason(server.ws_url, server.ws_url, receiver, room)
        await eventually(lambda: len(receiver.of_room(room)) == len(expected), 10)
        assert receiver.of_room(room) == expected
        ids = [a.id for a in receiver.arrivals]
        assert len(ids) == len(set(ids)), "an acknowledged event was sent again"
        assert_clean(receiver)


async def test_every_event_and_reason_on_two_instances(
    sbd_factory, redis_server: RedisServer
) -> None:
    async with running_receiver() as receiver:
        env = webhook_env(receiver, SBD_REDIS_URL=redis_server.url, **FAST)
        a, b = sbd_factory(env), sbd_factory(env)
        room = new_room()
        expected = await every_reason(a.ws_url, b.ws_url, receiver, room)
        await eventually(lambda: len(receiver.of_room(room)) == len(expected), 10)
        await asyncio.sleep(0.5)  # a second delivery by the other instance would show now
        assert receiver.of_room(room) == expected
        ids = [a.id for a in receiver.arrivals]
        assert len(ids) == len(set(ids)), "an event was delivered by both instances"
        assert_clean(receiver)


@pytest.mark.parametrize("broker", ["memory", "redis"])
async def test_a_failing_receiver_gets_retries_with_the_same_id_in_order(
    sbd_factory, redis_server: RedisServer, broker: str
) -> None:
    async with running_receiver() as receiver:
        receiver.fail_next = 3
        extra = {"SBD_REDIS_URL": redis_server.url} if broker == "redis" else {}
        server = sbd_factory(webhook_env(receiver, **extra))
        room = new_room()
        alice = await Peer.join(server.ws_url, room, user="alice")
        await alice.send({"type": "leave"})
        await eventually(lambda: len(receiver.of_room(room)) == 4, 15)
        assert [t for t, _, _ in receiver.of_room(room)] == [
            "room.started",
            "participant.joined",
            "participant.left",
            "room.finished",
        ]
        attempts = [a.id for a in receiver.arrivals if a.event["data"]["room_id"] == room]
        first = attempts[0]
        # Three 500s, then the same event (same webhook-id) again, then the rest once each.
        assert attempts[:4] == [first] * 4
        assert [a.answered for a in receiver.arrivals[:4]] == [500, 500, 500, 200]
        assert len(attempts) == 7
        gaps = [b.at - a.at for a, b in itertools.pairwise(receiver.arrivals[:4])]
        assert gaps[0] < 2.0, "the first retry comes within 2 s"
        assert gaps[1] > gaps[0] * 1.5, "retries back off"
        assert_clean(receiver)


async def test_events_survive_a_sigkill_of_the_instance_delivering_them(
    sbd_factory, redis_server: RedisServer
) -> None:
    """The instance that serves the room and holds its delivery dies right
    after a join and a leave: another instance takes the undelivered events
    over (XAUTOCLAIM) and each arrives, in order."""
    async with running_receiver() as receiver:
        receiver.hold_s = 1.5  # the first event is mid-flight when the instance dies
        env = webhook_env(receiver, SBD_REDIS_URL=redis_server.url, SBD_PRESENCE_TTL="1")
        doomed = sbd_factory(env)
        room = new_room()
        stays = await Peer.join(doomed.ws_url, room, user="stays")
        goes = await Peer.join(doomed.ws_url, room, user="goes")
        await goes.send({"type": "leave"})
        await goes.expect_close()
        await eventually(lambda: len(receiver.arrivals) >= 1, 5)
        survivor = sbd_factory(env)
        doomed.stop(signal.SIGKILL)
        receiver.hold_s = 0
        expected = [
            ("room.started", "", ""),
            ("participant.joined", stays.peer_id, ""),
            ("participant.joined", goes.peer_id, ""),
            ("participant.left", goes.peer_id, "leave"),
            ("participant.left", stays.peer_id, "reaped"),
            ("room.finished", "", ""),
        ]
        await eventually(lambda: len(receiver.of_room(room)) == len(expected), 20)
        assert receiver.of_room(room) == expected
        assert survivor.is_ready()
        assert_clean(receiver)


async def test_sbd_webhooks_shows_failures_and_redelivers_them(
    sbd_factory, redis_server: RedisServer
) -> None:
    async with running_receiver() as receiver:
        receiver.fail_next = 1_000_000
        env = webhook_env(receiver, SBD_REDIS_URL=redis_server.url, SBD_WEBHOOK_RETRY_FOR_S="0.8")
        server = sbd_factory(env)
        cli_env = {"SBD_JWT_SECRET": TEST_SECRET, "SBD_ADMIN_URL": server.base_url}
        room = new_room()
        alice = await Peer.join(server.ws_url, room, user="alice")
        await alice.send({"type": "leave"})
        label = receiver.url.split("?")[0]

        def given_up() -> float:
            return value(scrape(server.base_url), "sbd_webhook_given_up_total", url=label)

        await eventually(lambda: given_up() == 4, 15)
        failed_ids = list(dict.fromkeys(a.id for a in receiver.arrivals))
        assert len(failed_ids) == 4

        shown = await asyncio.to_thread(sbd, "webhooks", env=cli_env)
        assert shown.returncode == 0, shown.stderr
        lines = shown.stdout.splitlines()
        assert lines[0].split() == ["URL", "PENDING", "FAILED"]
        assert lines[1].split() == [label, "0", "4"]
        assert "HTTP 500" in shown.stdout and failed_ids[-1] in shown.stdout
        metrics_text = (await asyncio.to_thread(httpx.get, f"{server.base_url}/metrics")).text
        assert "receiver-secret" not in metrics_text and room not in metrics_text
        failed_attempts = value(
            scrape(server.base_url), "sbd_webhook_failed_attempts_total", url=label
        )
        assert failed_attempts >= 8  # each event was retried before it was given up on

        receiver.fail_next = 0
        again = await asyncio.to_thread(sbd, "webhooks", "redeliver", env=cli_env)
        assert again.returncode == 0, again.stderr
        assert again.stdout.strip() == "queued 4 failed events again"
        await eventually(lambda: len(receiver.of_room(room)) == 4, 10)
        assert [e for e in receiver.delivered()] == [
            a.event for a in receiver.arrivals if a.answered == 200
        ]
        assert [a.id for a in receiver.arrivals if a.answered == 200] == failed_ids
        assert value(scrape(server.base_url), "sbd_webhook_delivered_total", url=label) == 4
        after = await asyncio.to_thread(sbd, "webhooks", env=cli_env)
        assert after.stdout.splitlines()[1].split() == [label, "0", "0"]
        assert_clean(receiver)


async def test_sbd_check_asks_each_webhook_url(redis_server: RedisServer) -> None:
    async with running_receiver() as receiver:
        dead = f"http://127.0.0.1:{free_port()}/gone"
        env = {
            "SBD_JWT_SECRET": TEST_SECRET,
            "SBD_WEBHOOK_URLS": f"{receiver.url},{dead}",
            "SBD_WEBHOOK_SECRET": SECRET,
        }
        result = await asyncio.to_thread(sbd, "check", "--no-probe-turn", env=env)
        found = lines_of(result)["webhooks"]
        assert found[0] == f"ok {receiver.url.split('?')[0]}: answers (HTTP 405)"
        assert found[1].startswith(f"FAIL {dead}: no answer (ConnectError")
        assert result.returncode == 1


def test_serve_refuses_webhook_urls_without_a_good_secret() -> None:
    port = str(free_port())
    result = sbd("serve", "--port", port, env={"SBD_WEBHOOK_URLS": "http://x.test/"})
    assert result.returncode == 2
    assert "SBD_WEBHOOK_URLS is set but SBD_WEBHOOK_SECRET is not" in result.stderr
    short = "whsec_c2hvcnQgc2VjcmV0"  # 12 bytes
    env = {"SBD_WEBHOOK_URLS": "http://x.test/", "SBD_WEBHOOK_SECRET": short}
    result = sbd("serve", "--port", port, env=env)
    assert result.returncode == 2
    assert "SBD_WEBHOOK_SECRET: Value error, SBD_WEBHOOK_SECRET decodes to 12" in result.stderr
    assert "c2hvcnQgc2VjcmV0" not in result.stderr  # never the secret itself


@pytest.mark.parametrize("broker", ["memory", "redis"])
async def test_a_receiver_that_was_down_gets_everything_in_order(
    sbd_factory, redis_server: RedisServer, broker: str
) -> None:
    """Nothing listens on the URL while two rooms come and go; when the
    receiver comes up, every event of each room arrives, in order."""
    receiver = Receiver(free_port())
    extra = {"SBD_REDIS_URL": redis_server.url} if broker == "redis" else {}
    server = sbd_factory(webhook_env(receiver, **extra))
    rooms = [new_room(), new_room()]
    expected = {}
    for room in rooms:
        alice = await Peer.join(server.ws_url, room, user="alice")
        bob = await Peer.join(server.ws_url, room, user="bob")
        await bob.send({"type": "leave"})
        await bob.expect_close()  # two sockets: the leaves must not race
        await alice.send({"type": "leave"})
        expected[room] = [
            ("room.started", "", ""),
            ("participant.joined", alice.peer_id, ""),
            ("participant.joined", bob.peer_id, ""),
            ("participant.left", bob.peer_id, "leave"),
            ("participant.left", alice.peer_id, "leave"),
            ("room.finished", "", ""),
        ]
    await asyncio.sleep(2)  # several refused attempts, backing off
    async with running_receiver(receiver):
        await eventually(lambda: all(len(receiver.of_room(r)) == 6 for r in rooms), 10)
        assert {room: receiver.of_room(room) for room in rooms} == expected
        ids = [a.id for a in receiver.arrivals]
        assert len(ids) == len(set(ids)) == 12
        assert_clean(receiver)


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[RedisClusterServers]:
    cluster = RedisClusterServers().start()
    yield cluster
    cluster.stop()


async def test_webhooks_on_a_redis_cluster(sbd_factory, redis_cluster: RedisClusterServers) -> None:
    """Rooms on every shard: each script writes to its room's stream in the
    room's slot; each event arrives once, in order, from two instances."""
    async with running_receiver() as receiver:
        env = webhook_env(receiver, SBD_REDIS_URL=redis_cluster.url)
        a, b = sbd_factory(env), sbd_factory(env)
        rooms = rooms_on_every_shard(RedisCluster.from_url(redis_cluster.url))
        expected = {}
        for room in rooms:
            alice = await Peer.join(a.ws_url, room, user="alice")
            bob = await Peer.join(b.ws_url, room, user="bob")
            await alice.send({"type": "leave"})
            await bob.expect("user-left")
            await bob.send({"type": "leave"})
            expected[room] = [
                ("room.started", "", ""),
                ("participant.joined", alice.peer_id, ""),
                ("participant.joined", bob.peer_id, ""),
                ("participant.left", alice.peer_id, "leave"),
                ("participant.left", bob.peer_id, "leave"),
                ("room.finished", "", ""),
            ]
        await eventually(lambda: all(len(receiver.of_room(r)) == 6 for r in rooms), 10)
        await asyncio.sleep(0.5)  # a second delivery by the other instance would show now
        assert {room: receiver.of_room(room) for room in rooms} == expected
        ids = [arrival.id for arrival in receiver.arrivals]
        assert len(ids) == len(set(ids)) == 6 * len(rooms)
        assert_clean(receiver)


def call_events(receiver: Receiver, call_id: str) -> list[dict[str, object]]:
    return [e for e in receiver.delivered() if e["data"].get("call_id") == call_id]


@pytest.mark.parametrize("broker", ["memory", "redis"])
async def test_calls_report_ringing_then_ended_with_the_result(
    sbd_factory, redis_server: RedisServer, broker: str
) -> None:
    """call.ringing, then call.ended with its result, in order per call; with
    Redis the caller and the callee on two instances."""
    extra = {"SBD_REDIS_URL": redis_server.url} if broker == "redis" else {}
    async with running_receiver() as receiver:
        env = webhook_env(receiver, SBD_CALL_RING_TIMEOUT="1", SBD_PRESENCE_TTL="1", **extra)
        first = sbd_factory(env)
        second = sbd_factory(env) if broker == "redis" else first
        tag = next(_rooms)
        alice, bob = f"alice-{tag}", f"bob-{tag}"
        caller = await Device.ready(first.ws_url, alice)
        phone = await Device.ready(second.ws_url, bob)
        results = {}
        for result in ("accepted", "declined", "cancelled", "missed"):
            call_id = await caller.call(bob, f"call-{tag}", ref=result)
            await phone.expect("incoming-call")
            if result in ("accepted", "declined"):
                await phone.answer(call_id, accept=result == "accepted")
            elif result == "cancelled":
                await caller.send({"type": "call-cancel", "payload": {"call_id": call_id}})
            await caller.expect_state(result, timeout=5)
            await phone.expect_state(result, timeout=5)
            results[call_id] = result
        for call_id, result in results.items():
            await eventually(lambda c=call_id: len(call_events(receiver, c)) == 2, 10)
            ringing, ended = call_events(receiver, call_id)
            common = {
                "call_id": call_id,
                "from_user": alice,
                "to_user": bob,
                "room_id": f"call-{tag}",
            }
            assert ringing["type"] == "call.ringing"
            assert ringing["data"] == {**common, "devices": 1}
            assert ended["type"] == "call.ended"
            assert ended["data"] == {**common, "result": result}
        assert_clean(receiver)
        if broker == "memory":  # one instance counted every call
            scraped = scrape(first.base_url)
            assert value(scraped, "sbd_calls_started_total") == 4
            for result in results.values():
                assert value(scraped, "sbd_calls_ended_total", result=result) == 1
            assert value(scraped, "sbd_call_ring_seconds_count") == 4
