"""The admin API against two instances sharing Redis: rooms listed with SCAN,
details, kick, notice, close; admin role required; every action audited."""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

import httpx
import redis

from tests.conftest import SbdFactory
from tests.peers import Peer, make_token
from tests.servers import RedisServer, SbdServer

Cluster = tuple[SbdServer, SbdServer]
ADMIN = {"Authorization": f"Bearer {make_token('root', role='admin')}"}
_rooms = itertools.count()


def new_room() -> str:
    return f"admin-{next(_rooms)}"


def admin(server: SbdServer) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"{server.base_url}/api/v1/admin", headers=ADMIN)


def audit_lines(server: SbdServer) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("audit")]


async def all_rooms(http: httpx.AsyncClient, limit: int) -> tuple[dict[str, int], int]:
    rooms: dict[str, int] = {}
    cursor: str | None = "0"
    pages = 0
    while cursor is not None:
        page = (await http.get("/rooms", params={"cursor": cursor, "limit": limit})).json()
        rooms.update({r["room_id"]: r["participants"] for r in page["rooms"]})
        cursor = page["next_cursor"]
        pages += 1
    return rooms, pages


async def test_rooms_are_listed_page_by_page_with_scan_never_keys(
    cluster: Cluster, redis_server: RedisServer
) -> None:
    one, two = cluster
    names = [new_room() for _ in range(5)]
    peers = [await Peer.join((one, two)[i % 2].ws_url, name) for i, name in enumerate(names)]
    peers.append(await Peer.join(two.ws_url, names[0], user="bob"))
    stats = redis.Redis.from_url(redis_server.url)
    before = stats.info("commandstats")
    async with admin(one) as http:
        rooms, pages = await all_rooms(http, limit=2)
    after = stats.info("commandstats")
    assert {name: rooms.get(name) for name in names} == {
        names[0]: 2,
        **{name: 1 for name in names[1:]},
    }
    assert pages >= 2
    calls = {
        name: after.get(f"cmdstat_{name}", {}).get("calls", 0)
        - before.get(f"cmdstat_{name}", {}).get("calls", 0)
        for name in ("scan", "keys")
    }
    assert calls["scan"] >= pages and calls["keys"] == 0
    for peer in peers:
        await peer.close()


async def test_memory_broker_pages_too(sbd_factory: SbdFactory) -> None:
    server = sbd_factory()
    names = sorted(new_room() for _ in range(3))
    peers = [await Peer.join(server.ws_url, name) for name in names]
    async with admin(server) as http:
        first = (await http.get("/rooms", params={"limit": 2})).json()
        second = (await http.get("/rooms", params={"cursor": first["next_cursor"]})).json()
    assert [r["room_id"] for r in first["rooms"]] == names[:2]
    assert (second["rooms"], second["next_cursor"]) == (
        [{"room_id": names[2], "participants": 1}],
        None,
    )
    for peer in peers:
        await peer.close()


async def test_details_kick_across_instances_and_audit(cluster: Cluster) -> None:
    one, two = cluster
    room = new_room()
    alice = await Peer.join(one.ws_url, room, user="alice")
    bob = await Peer.join(two.ws_url, room, user="bob")
    await alice.expect("user-joined")
    await bob.send({"type": "media-state", "payload": {"audio": True}})
    await alice.expect("media-state")

    async with admin(one) as http:
        details = (await http.get(f"/rooms/{room}")).json()
        assert details["room_id"] == room
        assert {(p["user_id"], json.dumps(p["media"])) for p in details["participants"]} == {
            ("alice", "{}"),
            ("bob", '{"audio": true}'),
        }
        assert (await http.get("/rooms/no-such-room")).status_code == 404

        # bob is on the other instance: the kick travels through Redis.
        response = await http.delete(f"/rooms/{room}/peers/{bob.peer_id}")
        assert response.status_code == 204
        assert await bob.expect_close() == (4003, "removed from the room by a host")
        assert (await alice.expect("user-left"))["payload"]["peer_id"] == bob.peer_id
        assert (await http.delete(f"/rooms/{room}/peers/{bob.peer_id}")).status_code == 404

    await asyncio.sleep(0.2)
    kicks = [line for line in audit_lines(one) if line.get("target_peer_id") == bob.peer_id]
    assert [(k["action"], k["actor"], k["room_id"], k["outcome"]) for k in kicks] == [
        ("kick", "root", room, "done"),
        ("kick", "root", room, "not_found"),
    ]
    await alice.close()


async def test_notice_reaches_every_peer_then_close_room(cluster: Cluster) -> None:
    one, two = cluster
    room = new_room()
    peers = [await Peer.join(server.ws_url, room) for server in (one, two, two)]
    for i, peer in enumerate(peers):
        for _ in range(2 - i):
            await peer.expect("user-joined")
    async with admin(two) as http:
        response = await http.post(
            f"/rooms/{room}/notices", json={"message": "maintenance at 18:00", "level": "warning"}
        )
        assert response.status_code == 202
        assert response.json() == {"room_id": room, "participants": 3}
        for peer in peers:
            assert await peer.expect("notice") == {
                "type": "notice",
                "payload": {"message": "maintenance at 18:00", "level": "warning"},
            }
        closed = (await http.delete(f"/rooms/{room}")).json()
        assert sorted(closed["kicked"]) == sorted(p.peer_id for p in peers)
        for peer in peers:
            assert (await peer.expect_close())[0] == 4003
        await asyncio.sleep(0.3)
        assert (await http.get(f"/rooms/{room}")).status_code == 404
    actions = [(line["action"], line["room_id"]) for line in audit_lines(two)]
    assert ("notice", room) in actions and ("close_room", room) in actions


async def test_admin_role_is_required(server: SbdServer) -> None:
    async with httpx.AsyncClient(base_url=f"{server.base_url}/api/v1/admin") as http:
        assert (await http.get("/rooms")).status_code == 401
        for role in (None, "host"):
            claims = {"role": role} if role else {}
            headers = {"Authorization": f"Bearer {make_token('eve', **claims)}"}
            assert (await http.get("/rooms", headers=headers)).status_code == 403
            assert (await http.delete("/rooms/x/peers/y", headers=headers)).status_code == 403
        bad = await http.get("/rooms", headers=ADMIN, params={"limit": 0})
        assert bad.status_code == 422


async def test_admin_api_is_in_the_openapi_document(server: SbdServer) -> None:
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        paths = (await http.get("/openapi.json")).json()["paths"]
    expected = {
        ("/api/v1/admin/rooms", "get"),
        ("/api/v1/admin/rooms/{room_id}", "get"),
        ("/api/v1/admin/rooms/{room_id}", "delete"),
        ("/api/v1/admin/rooms/{room_id}/peers/{peer_id}", "delete"),
        ("/api/v1/admin/rooms/{room_id}/notices", "post"),
    }
    for path, method in expected:
        assert paths[path][method]["tags"] == ["admin"], (path, method)
        assert "403" in paths[path][method]["responses"]
