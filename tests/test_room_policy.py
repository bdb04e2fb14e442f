"""Restricted and locked rooms: the first host decides who may join."""

from __future__ import annotations

import itertools
from typing import Any

import httpx

from tests.peers import Peer, make_token
from tests.servers import SbdServer

_rooms = itertools.count()


def new_room() -> str:
    return f"policy-{next(_rooms)}"


async def put_policy(server: SbdServer, room: str, token: str, **body: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        return await http.put(
            f"/api/v1/webrtc/rooms/{room}/policy",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
        )


async def refused(server: SbdServer, room: str, token: str) -> str:
    peer = await Peer.connect(server.ws_url, room, token)
    code, reason = await peer.expect_close()
    assert code == 4003
    return reason


async def test_a_guest_list_admits_only_the_invited(server: SbdServer) -> None:
    room = new_room()
    hana = make_token("hana", role="host")
    response = await put_policy(server, room, hana, invited_users=["bob"])
    assert response.status_code == 200
    assert response.json() == {
        "room_id": room, "owner": "hana", "locked": False, "invited_users": ["bob", "hana"]
    }  # fmt: skip
    assert await refused(server, room, make_token("alice")) == "not invited to this room"
    await Peer.join(server.ws_url, room, make_token("bob"))
    await Peer.join(server.ws_url, room, hana)
    await Peer.join(server.ws_url, room, make_token("root", role="admin"))


async def test_only_the_owning_host_or_an_admin_may_change_it(server: SbdServer) -> None:
    room = new_room()
    assert (await put_policy(server, room, make_token("alice"), locked=True)).status_code == 403
    assert (await put_policy(server, room, make_token("hana", role="host"))).status_code == 200
    other_host = make_token("otto", role="host")
    assert (await put_policy(server, room, other_host, locked=True)).status_code == 403
    admin = make_token("root", role="admin")
    changed = await put_policy(server, room, admin, locked=True)
    assert changed.json()["owner"] == "hana"
    assert changed.json()["locked"] is True


async def test_a_locked_room_keeps_its_peers_and_refuses_new_ones(server: SbdServer) -> None:
    room = new_room()
    hana = make_token("hana", role="host")
    inside = await Peer.join(server.ws_url, room, make_token("bob"))
    assert (await put_policy(server, room, hana, locked=True)).status_code == 200
    assert await refused(server, room, make_token("carol")) == "room is locked"
    host = await Peer.join(server.ws_url, room, hana)  # the owner passes its own lock
    assert (await inside.expect("user-joined"))["payload"]["peer_id"] == host.peer_id
    await inside.send({"type": "app", "to": host.peer_id, "payload": "still here"})
    assert (await host.expect("app"))["payload"] == "still here"
    # A peer of a locked room may still resume.
    token = inside.welcome["payload"]["resume_token"]
    await inside.ws.close(4000)
    back = await Peer.join(server.ws_url, room, make_token("bob"), query=f"resume={token}")
    assert back.peer_id == inside.peer_id

    assert (await put_policy(server, room, hana, locked=False)).status_code == 200
    await Peer.join(server.ws_url, room, make_token("carol"))


async def test_policy_is_readable_by_room_members(server: SbdServer) -> None:
    room = new_room()
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        empty = await http.get(
            f"/api/v1/webrtc/rooms/{room}/policy",
            headers={"Authorization": f"Bearer {make_token('bob')}"},
        )
    assert empty.json() == {"room_id": room, "owner": None, "locked": False, "invited_users": None}
