"""/metrics after real traffic: two fresh `sbd serve` instances sharing a
redis-server, raw protocol peers, and the exact values each instance reports."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import SbdFactory
from tests.peers import Peer, eventually, make_token
from tests.scrape import Samples, delta, scrape, value
from tests.servers import RedisServer, SbdServer

_rooms = itertools.count()
DASHBOARD = Path(__file__).resolve().parent.parent / "deploy" / "grafana-dashboard.json"


def new_room() -> str:
    return f"metrics-{next(_rooms)}"


def total(samples: Samples, name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


@pytest.fixture(scope="module")
def pair(redis_server: RedisServer, artifacts_dir: Path) -> Iterator[tuple[SbdServer, SbdServer]]:
    """Two instances of this module's own: the first test checks exact values."""
    env = {"SBD_REDIS_URL": redis_server.url}
    one = SbdServer(env, log_dir=artifacts_dir).start()
    two = SbdServer(env, log_dir=artifacts_dir).start()
    yield one, two
    one.stop()
    two.stop()


async def test_metrics_count_real_traffic_on_each_instance(
    pair: tuple[SbdServer, SbdServer],
) -> None:
    one, two = pair
    room = new_room()

    rejected = await Peer.connect(one.ws_url, room, "not-a-jwt")
    assert (await rejected.expect_close())[0] == 4003

    alice = await Peer.join(one.ws_url, room, user="alice")
    bob = await Peer.join(two.ws_url, room, user="bob")
    carol = await Peer.join(one.ws_url, room, make_token("carol", role="host"))
    for _ in range(2):
        await alice.expect("user-joined")
    await bob.expect("user-joined")

    await bob.send(bob.offer(alice.peer_id))  # across instances
    await alice.expect("offer")
    await alice.send({"type": "app", "payload": {"chat": "hi"}})
    await bob.expect("app")
    await carol.expect("app")
    await carol.send({"type": "ping"})
    await carol.expect("pong")

    m1, m2 = scrape(one.base_url), scrape(two.base_url)
    assert value(m1, "sbd_websocket_connections") == 2
    assert value(m2, "sbd_websocket_connections") == 1
    assert value(m1, "sbd_websocket_connections_opened_total") == 2
    assert value(m1, "sbd_rooms_local") == value(m2, "sbd_rooms_local") == 1
    assert total(m1, "sbd_auth_failures_total") == 1
    assert total(m2, "sbd_auth_failures_total") == 0
    # Joins: alice saw a room of 1, carol of 3 (on one); bob of 2 (on two).
    assert (value(m1, "sbd_room_peers_count"), value(m1, "sbd_room_peers_sum")) == (2, 4)
    assert (value(m2, "sbd_room_peers_count"), value(m2, "sbd_room_peers_sum")) == (1, 2)
    assert value(m1, "sbd_room_peers_bucket", le="1.0") == 1
    # In, by type, where the client sent it.
    assert value(m2, "sbd_messages_received_total", type="offer") == 1
    assert value(m1, "sbd_messages_received_total", type="app") == 1
    assert value(m1, "sbd_messages_received_total", type="ping") == 1
    # Out, by type, where the receiver is connected.
    sent = {
        kind: value(m1, "sbd_messages_sent_total", type=kind)
        for kind in ("welcome", "user-joined", "offer", "app", "pong", "error")
    }
    assert sent == {"welcome": 2, "user-joined": 2, "offer": 1, "app": 1, "pong": 1, "error": 0}
    assert value(m2, "sbd_messages_sent_total", type="app") == 1
    assert value(m2, "sbd_messages_sent_total", type="user-joined") == 1

    # Closes by code: a leave (1000) on two, a host's kick (4003) on one.
    await bob.send({"type": "leave"})
    assert (await bob.expect_close())[0] == 1000
    await alice.expect("user-left")
    await carol.send({"type": "kick", "payload": {"peer_id": alice.peer_id}})
    assert (await alice.expect_close())[0] == 4003
    await carol.close()
    await asyncio.sleep(0.3)
    m1, m2 = scrape(one.base_url), scrape(two.base_url)
    assert value(m2, "sbd_websocket_connections_closed_total", code="1000") == 1
    assert value(m1, "sbd_websocket_connections_closed_total", code="4003") == 1
    assert value(m1, "sbd_websocket_connections") == value(m2, "sbd_websocket_connections") == 0
    assert value(m1, "sbd_rooms_local") == 0


async def test_relay_latency_is_measured_from_ingress_on_another_instance(
    pair: tuple[SbdServer, SbdServer],
) -> None:
    one, two = pair
    room = new_room()
    alice = await Peer.join(one.ws_url, room, user="alice")
    bob = await Peer.join(two.ws_url, room, user="bob")
    await alice.expect("user-joined")
    for i in range(20):
        await bob.send({"type": "app", "to": alice.peer_id, "payload": i})
    for _ in range(20):
        await alice.expect("app")
    m1 = scrape(one.base_url)
    # Stamped at ingress on two, observed at delivery on one; on one host,
    # through a local Redis, well under a second each.
    assert value(m1, "sbd_relay_latency_seconds_count") >= 20
    assert 0 < value(m1, "sbd_relay_latency_seconds_sum") < 20
    assert value(m1, "sbd_relay_latency_seconds_bucket", le="1.0") >= 20


async def test_slow_consumer_is_disconnected_and_counted(
    sbd_factory: SbdFactory,
) -> None:
    server = sbd_factory(
        {
            "SBD_SEND_QUEUE_SIZE": "8",
            "SBD_RATE_LIMIT_PER_S": "100000",
            "SBD_RATE_LIMIT_BURST": "100000",
        }
    )
    room = new_room()
    # max_queue=1: the client library stops reading the socket after one
    # buffered frame, so TCP fills up and the server's queue overflows.
    sleeper = await Peer.join(server.ws_url, room, user="sleeper", max_queue=1)
    flooder = await Peer.join(server.ws_url, room, user="flooder")
    blob = "x" * 30_000
    for i in range(2000):
        await flooder.send({"type": "app", "to": sleeper.peer_id, "payload": blob})
        if i % 100 == 99 and value(scrape(server.base_url), "sbd_slow_consumer_disconnects_total"):
            break
    assert value(scrape(server.base_url), "sbd_slow_consumer_disconnects_total") == 1
    # The close frame cannot reach a client that does not read: let it go.
    sleeper.ws.transport.abort()
    await flooder.close()
    await eventually(
        lambda: value(scrape(server.base_url), "sbd_websocket_connections") == 0, timeout=10
    )
    samples = scrape(server.base_url)
    assert value(samples, "sbd_slow_consumer_disconnects_total") == 1
    assert value(samples, "sbd_websocket_connections_closed_total", code="1013") == 1


async def test_admin_denials_count_as_auth_failures(pair: tuple[SbdServer, SbdServer]) -> None:
    server = pair[1]
    headers = {"Authorization": f"Bearer {make_token('mallory')}"}
    before = scrape(server.base_url)
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        assert (await http.get("/api/v1/admin/rooms", headers=headers)).status_code == 403
    after = scrape(server.base_url)
    assert delta(before, after, "sbd_auth_failures_total", reason="admin role required") == 1


def test_dashboard_queries_only_metrics_the_service_exports(
    pair: tuple[SbdServer, SbdServer],
) -> None:
    """The Grafana dashboard in deploy/ cannot drift from the metric names."""
    text = httpx.get(f"{pair[0].base_url}/metrics").text
    # Families are listed (# HELP/# TYPE) even before a labelled one has a sample.
    exported = {
        family.name + suffix
        for family in text_string_to_metric_families(text)
        for suffix in ("", "_total", "_bucket", "_sum", "_count")
    }
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if "expr" in target
    ]
    assert len(exprs) >= 14
    used = {name for expr in exprs for name in re.findall(r"\bsbd_[a-z_]+", expr)}
    missing = sorted(used - exported)
    assert not missing, f"dashboard queries unknown metrics: {missing}"
    for needed in (
        "sbd_websocket_connections",
        "sbd_relay_latency_seconds_bucket",
        "sbd_redis_reconnects_total",
        "sbd_auth_failures_total",
        "sbd_call_setup_seconds_bucket",
        "sbd_call_setups_total",
    ):
        assert needed in used
