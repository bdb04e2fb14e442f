"""Session resume: a dropped peer comes back, keeps its id, and misses nothing.

The single-instance tests run on both WebSocket paths, native and plain ASGI
(the ``server`` fixture below): what a session had not sent when its
connection went is kept by its socket, and each path keeps it its own way.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RESUME_TTL, start_shared_server
from tests.peers import Peer, make_token
from tests.servers import SbdServer

_rooms = itertools.count()
Cluster = tuple[SbdServer, SbdServer]


@pytest.fixture(scope="session", params=["memory", "redis", "asgi"])
def server(request: pytest.FixtureRequest, artifacts_dir: Path) -> Iterator[SbdServer]:
    yield from start_shared_server(request, artifacts_dir)


def new_room() -> str:
    return f"resume-{next(_rooms)}"


async def drop(peer: Peer) -> str:
    """The peer's connection ends without ``leave``; returns its resume token."""
    token: str = peer.welcome["payload"]["resume_token"]
    await peer.ws.close(4000, "network change")
    return token


async def resume(url: str, room: str, resume_token: str, user: str = "bob") -> Peer:
    return await Peer.join(url, room, make_token(user), query=f"resume={resume_token}")


async def send_gap_traffic(a: Peer, b_peer_id: str) -> list[dict[str, Any]]:
    """What A sends while B is away: targeted, broadcast and media-state."""
    sent = [
        a.offer(b_peer_id, sdp="v=0 gap-offer", id="o1"),
        {
            "type": "ice-candidate",
            "to": b_peer_id,
            "payload": {"candidate": "candidate:1 1 udp 1 10.0.0.1 9 typ host", "sdpMid": "0"},
        },
        {"type": "app", "payload": {"chat": "did you get this?"}},
        {"type": "media-state", "payload": {"audio": False}},
        {"type": "ice-candidate", "to": b_peer_id, "payload": {"candidate": "", "sdpMid": "0"}},
    ]
    for message in sent:
        await a.send(message)
    # A sender's frames are handled in order: the pong means all of the above
    # were relayed (or mailed) before the test resumes anyone.
    await a.send({"type": "ping"})
    await a.expect("pong")
    return sent


async def check_replay(b: Peer, a: Peer, sent: list[dict[str, Any]]) -> None:
    for message in sent:
        got = await b.recv()
        assert (got["type"], got["from"], got["payload"]) == (
            message["type"],
            a.peer_id,
            message["payload"],
        ), got
    await b.assert_silent()  # exactly once


@pytest.mark.parametrize("where", ["same", "other"])
async def test_resume_keeps_the_peer_and_replays_the_gap_in_order(
    cluster: Cluster, where: str
) -> None:
    one, two = cluster
    room = new_room()
    a = await Peer.join(one.ws_url, room, user="alice")
    b = await Peer.join(one.ws_url, room, user="bob")
    await a.expect("user-joined")
    token = await drop(b)
    sent = await send_gap_traffic(a, b.peer_id)

    back = await resume((one if where == "same" else two).ws_url, room, token)
    assert back.peer_id == b.peer_id
    assert back.welcome["payload"]["resume_token"] not in ("", token)
    assert back.welcome["payload"]["participants"] == [
        {"peer_id": a.peer_id, "user_id": "alice", "name": "alice", "media": {"audio": False}}
    ]
    await check_replay(back, a, sent)
    await a.assert_silent()  # no user-left, no user-joined, no error for the gap messages

    await a.send(a.offer(back.peer_id, sdp="live"))
    assert (await back.expect("offer"))["payload"]["sdp"] == "live"
    await back.send({"type": "app", "to": a.peer_id, "payload": "I am back"})
    assert (await a.expect("app"))["from"] == b.peer_id


async def test_resume_on_the_embedded_broker(server: SbdServer) -> None:
    room = new_room()
    a = await Peer.join(server.ws_url, room, user="alice")
    b = await Peer.join(server.ws_url, room, user="bob")
    await a.expect("user-joined")
    token = await drop(b)
    sent = await send_gap_traffic(a, b.peer_id)
    back = await resume(server.ws_url, room, token)
    assert back.peer_id == b.peer_id
    await check_replay(back, a, sent)
    await a.assert_silent()


async def test_a_resume_token_works_once(server: SbdServer) -> None:
    room = new_room()
    b = await Peer.join(server.ws_url, room, user="bob")
    token = await drop(b)
    back = await resume(server.ws_url, room, token)
    await back.ws.close(4000)
    reused = await Peer.connect(server.ws_url, room, make_token("bob"), query=f"resume={token}")
    assert (await reused.expect_close())[0] == 4003


@pytest.mark.parametrize(
    ("user", "mangle"),
    [
        ("mallory", lambda t: t),  # another user's resume token
        ("bob", lambda t: t[:-2] + "xx"),  # wrong secret
        ("bob", lambda t: "no-dot-at-all"),
        ("bob", lambda t: "unknownpeer.secret"),
    ],
)
async def test_bad_resume_tokens_are_closed_with_4003(
    server: SbdServer, user: str, mangle: Any
) -> None:
    room = new_room()
    b = await Peer.join(server.ws_url, room, user="bob")
    token = await drop(b)
    bad = await Peer.connect(server.ws_url, room, make_token(user), query=f"resume={mangle(token)}")
    assert (await bad.expect_close())[0] == 4003
    # The real owner can still come back.
    assert (await resume(server.ws_url, room, token)).peer_id == b.peer_id


async def test_after_the_window_the_room_sees_user_left_and_resume_fails(
    server: SbdServer,
) -> None:
    room = new_room()
    a = await Peer.join(server.ws_url, room, user="alice")
    b = await Peer.join(server.ws_url, room, user="bob")
    await a.expect("user-joined")
    token = await drop(b)
    left = await a.expect("user-left", timeout=RESUME_TTL + 5)
    assert left["payload"] == {"peer_id": b.peer_id, "user_id": "bob"}
    late = await Peer.connect(server.ws_url, room, make_token("bob"), query=f"resume={token}")
    assert (await late.expect_close())[0] == 4003


async def test_leave_is_final(server: SbdServer) -> None:
    room = new_room()
    b = await Peer.join(server.ws_url, room, user="bob")
    token = b.welcome["payload"]["resume_token"]
    await b.send({"type": "leave"})
    await b.expect_close()
    again = await Peer.connect(server.ws_url, room, make_token("bob"), query=f"resume={token}")
    assert (await again.expect_close())[0] == 4003


async def test_resume_while_the_old_connection_lingers_replaces_it(cluster: Cluster) -> None:
    one, two = cluster
    room = new_room()
    a = await Peer.join(one.ws_url, room, user="alice")
    b = await Peer.join(one.ws_url, room, user="bob")
    await a.expect("user-joined")
    token = b.welcome["payload"]["resume_token"]
    # The client thinks its connection died, but the server still holds it.
    back = await resume(two.ws_url, room, token)
    assert back.peer_id == b.peer_id
    assert (await b.expect_close())[0] == 4409
    await a.send(a.offer(b.peer_id, sdp="after takeover"))
    assert (await back.expect("offer"))["payload"]["sdp"] == "after takeover"
    await a.assert_silent()


async def test_kicking_a_peer_that_is_away_removes_it_for_good(server: SbdServer) -> None:
    room = new_room()
    host = await Peer.join(server.ws_url, room, make_token("hana", role="host"))
    b = await Peer.join(server.ws_url, room, user="bob")
    await host.expect("user-joined")
    token = await drop(b)
    await host.send({"type": "kick", "payload": {"peer_id": b.peer_id}})
    assert (await host.expect("user-left"))["payload"]["peer_id"] == b.peer_id
    again = await Peer.connect(server.ws_url, room, make_token("bob"), query=f"resume={token}")
    assert (await again.expect_close())[0] == 4003


async def _resume_attempt_leaves_the_victim_alone(victim_url: str, attacker_url: str) -> None:
    room = new_room()
    a = await Peer.join(victim_url, room, user="alice")
    b = await Peer.join(victim_url, room, user="bob")
    await a.expect("user-joined")
    forged = f"{b.peer_id}.not-the-secret"
    for user in ("mallory", "bob"):  # another member, and the victim's own user
        attack = await Peer.connect(attacker_url, room, make_token(user), query=f"resume={forged}")
        assert (await attack.expect_close())[0] == 4003
    # The victim was never disturbed: still connected and reachable.
    await a.send(a.offer(b.peer_id, sdp="still here"))
    assert (await b.expect("offer"))["payload"]["sdp"] == "still here"
    await b.send(b.offer(a.peer_id, sdp="and answering"))
    assert (await a.expect("offer"))["payload"]["sdp"] == "and answering"
    await b.assert_silent()
    await a.assert_silent()


async def test_a_forged_resume_token_does_not_knock_out_the_peer(server: SbdServer) -> None:
    await _resume_attempt_leaves_the_victim_alone(server.ws_url, server.ws_url)


async def test_a_forged_resume_on_another_instance_does_not_knock_out_the_peer(
    cluster: Cluster,
) -> None:
    one, two = cluster
    await _resume_attempt_leaves_the_victim_alone(one.ws_url, two.ws_url)
