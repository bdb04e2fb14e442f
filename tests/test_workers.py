"""`sbd serve --workers N`: N processes on one port, one service through Redis."""

from __future__ import annotations

import redis

from tests.conftest import SbdFactory
from tests.peers import Peer, eventually
from tests.scrape import scrape, value
from tests.servers import RedisServer


async def test_two_workers_share_rooms_and_sum_their_metrics(
    redis_server: RedisServer, sbd_factory: SbdFactory
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    before = set(client.zrange("sbd:instances", 0, -1))
    server = sbd_factory({"SBD_REDIS_URL": redis_server.url}, args=("--workers", "2"))
    # Ready means one worker serves; wait for the second to heartbeat too.
    # Two processes, each an instance of its own in Redis.
    await eventually(lambda: len(set(client.zrange("sbd:instances", 0, -1)) - before) == 2)
    room = "workers-room"
    peers: list[Peer] = []
    for i in range(6):
        peer = await Peer.join(server.ws_url, room, user=f"user{i}")
        # Whichever worker accepted it, the newcomer sees everyone before it.
        assert [p["peer_id"] for p in peer.welcome["payload"]["participants"]] == [
            p.peer_id for p in peers
        ]
        for earlier in peers:
            assert (await earlier.expect("user-joined"))["payload"]["peer_id"] == peer.peer_id
        peers.append(peer)

    await peers[5].send({"type": "app", "payload": "to all"})
    for peer in peers[:5]:
        assert (await peer.expect("app"))["from"] == peers[5].peer_id

    assert len(client.hkeys(f"sbd:room:{{{room}}}:members")) == 6

    # Any worker answers /metrics with the sum over both.
    for _ in range(4):
        samples = scrape(server.base_url)
        assert value(samples, "sbd_websocket_connections") == 6
        assert value(samples, "sbd_websocket_connections_opened_total") == 6
    for peer in peers:
        await peer.send({"type": "leave"})
        await peer.expect_close()
