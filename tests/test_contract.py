"""The WebSocket contract (PROTOCOL.md), row by row, against a real server.

Every test runs three times through the ``server`` fixture: on the embedded
broker and on Redis behind ``sbd serve``'s native WebSocket path, and on the
embedded broker behind the plain ASGI path (the router mounted elsewhere),
so both backends and both paths keep the same semantics.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
from pydantic import TypeAdapter

from second_brain_database.webrtc.ids import new_peer_id
from second_brain_database.webrtc.schemas import ServerMessage
from tests.conftest import RESUME_TTL, start_shared_server
from tests.peers import Peer, make_token
from tests.servers import SbdServer

_rooms = itertools.count()


@pytest.fixture(scope="session", params=["memory", "redis", "asgi"])
def server(request: pytest.FixtureRequest, artifacts_dir: Path) -> Iterator[SbdServer]:
    yield from start_shared_server(request, artifacts_dir)


server_frame: TypeAdapter[ServerMessage] = TypeAdapter(ServerMessage)


def new_room() -> str:
    return f"room-{next(_rooms)}"


async def pair(server: SbdServer, room: str | None = None) -> tuple[Peer, Peer]:
    room = room or new_room()
    a = await Peer.join(server.ws_url, room, user="alice")
    b = await Peer.join(server.ws_url, room, user="bob")
    await a.expect("user-joined")
    return a, b


# --- joining ---------------------------------------------------------------


async def test_welcome_is_first_and_lists_the_others(server: SbdServer) -> None:
    room = new_room()
    a = await Peer.join(server.ws_url, room, user="alice", token=make_token("alice", name="Alice"))
    assert a.welcome["payload"]["participants"] == []
    assert a.welcome["payload"]["room_id"] == room
    assert a.welcome["payload"]["user_id"] == "alice"
    assert a.welcome["payload"]["resume_token"]
    server_frame.validate_python(a.welcome)

    b = await Peer.join(server.ws_url, room, user="bob")
    assert b.welcome["payload"]["participants"] == [
        {"peer_id": a.peer_id, "user_id": "alice", "name": "Alice", "media": {}}
    ]
    joined = await a.expect("user-joined")
    assert joined["payload"] == {"peer_id": b.peer_id, "user_id": "bob", "name": "bob"}
    await b.assert_silent()  # no user-joined about itself


async def test_same_user_twice_gets_two_peer_ids(server: SbdServer) -> None:
    room = new_room()
    first = await Peer.join(server.ws_url, room, user="alice")
    second = await Peer.join(server.ws_url, room, user="alice")
    assert first.peer_id != second.peer_id
    assert [p["peer_id"] for p in second.welcome["payload"]["participants"]] == [first.peer_id]
    # Never mistaken for a command-line option when an operator copies one.
    assert all(p.isalnum() and p.islower() for p in (first.peer_id, second.peer_id))
    assert all(new_peer_id().isalnum() for _ in range(5000))


# --- relay -------------------------------------------------------------------


async def test_targeted_relay_is_stamped_and_goes_to_one_peer(server: SbdServer) -> None:
    room = new_room()
    a, b = await pair(server, room)
    c = await Peer.join(server.ws_url, room, user="carol")
    await a.expect("user-joined")
    await b.expect("user-joined")

    forged = a.offer(b.peer_id, sdp="v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n")
    forged.update({"from": "someone-else", "from_user": "mallory"})
    await a.send(forged)
    got = await b.expect("offer")
    assert got == {
        "type": "offer",
        "from": a.peer_id,
        "from_user": "alice",
        "to": b.peer_id,
        "payload": {"type": "offer", "sdp": "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n"},
    }
    server_frame.validate_python(got)
    await c.assert_silent()
    await a.assert_silent()


@pytest.mark.parametrize(
    ("kind", "payload"),
    [
        ("answer", {"type": "answer", "sdp": "v=0\r\n"}),
        (
            "ice-candidate",
            {
                "candidate": "candidate:1 1 udp 1 10.0.0.1 9 typ host",
                "sdpMid": "0",
                "sdpMLineIndex": 0,
            },
        ),
        ("ice-candidate", {"candidate": "", "sdpMid": "0", "sdpMLineIndex": 0}),
        ("app", {"chat": "héllo 👋", "n": [1, 2.5, None, True]}),
    ],
)
async def test_each_relayed_type_arrives_unchanged(
    server: SbdServer, kind: str, payload: dict[str, object]
) -> None:
    a, b = await pair(server)
    await a.send({"type": kind, "to": b.peer_id, "payload": payload})
    got = await b.expect(kind)
    assert got["payload"] == payload
    assert (got["from"], got["from_user"]) == (a.peer_id, "alice")


async def test_broadcast_reaches_everyone_but_the_sender(server: SbdServer) -> None:
    room = new_room()
    a, b = await pair(server, room)
    c = await Peer.join(server.ws_url, room, user="carol")
    await a.expect("user-joined")
    await b.expect("user-joined")
    await a.send({"type": "app", "payload": {"hello": "all"}})
    for receiver in (b, c):
        got = await receiver.expect("app")
        assert got["to"] is None
        assert got["from"] == a.peer_id
        assert got["payload"] == {"hello": "all"}
    await a.assert_silent()


async def test_messages_from_one_sender_arrive_in_order(server: SbdServer) -> None:
    a, b = await pair(server)

    async def send_all() -> None:  # under the default burst of 400
        for i in range(300):
            await a.send({"type": "app", "to": b.peer_id, "payload": {"seq": i}})

    sending = asyncio.create_task(send_all())
    received = [(await b.expect("app"))["payload"]["seq"] for _ in range(300)]
    await sending
    assert received == list(range(300))


async def test_unknown_peer_is_an_error_with_the_ref(server: SbdServer) -> None:
    a, _ = await pair(server)
    await a.send(a.offer("no-such-peer", id="m-1"))
    error = await a.expect("error")
    assert error["payload"]["code"] == "unknown_peer"
    assert error["payload"]["ref"] == "m-1"


async def test_media_state_is_relayed_and_recorded(server: SbdServer) -> None:
    room = new_room()
    a, b = await pair(server, room)
    await a.send({"type": "media-state", "payload": {"audio": False, "video": True}})
    got = await b.expect("media-state")
    assert got["payload"] == {"audio": False, "video": True}
    c = await Peer.join(server.ws_url, room, user="carol")
    media = {p["peer_id"]: p["media"] for p in c.welcome["payload"]["participants"]}
    assert media == {a.peer_id: {"audio": False, "video": True}, b.peer_id: {}}


# --- invalid input: an error frame, and the connection carries on --------------

INVALID_FRAMES = [
    pytest.param("not json", "not valid JSON", id="malformed-json"),
    pytest.param("[1, 2]", "JSON object", id="not-an-object"),
    pytest.param('{"payload": {}}', "message type", id="no-type"),
    pytest.param('{"type": "dance"}', "message type", id="unknown-type"),
    pytest.param('{"type": "welcome", "payload": {}}', "server only", id="server-only-welcome"),
    pytest.param('{"type": "user-left", "payload": {}}', "server only", id="server-only-left"),
    pytest.param(
        '{"type": "offer", "payload": {"type": "offer", "sdp": ""}}', "sdp", id="empty-sdp"
    ),
    pytest.param(
        '{"type": "offer", "payload": {"type": "answer", "sdp": "v=0"}}',
        "type",
        id="offer-with-answer-payload",
    ),
    pytest.param(
        '{"type": "ice-candidate", "payload": {"candidate": 5}}',
        "candidate",
        id="candidate-not-a-string",
    ),
    pytest.param(
        '{"type": "ice-candidate", "payload": {"candidate": "", "sdpMLineIndex": -1}}',
        "sdpMLineIndex",
        id="negative-mline",
    ),
    pytest.param(
        '{"type": "media-state", "payload": {"audio": "loud"}}', "audio", id="media-not-bool"
    ),
    pytest.param(
        '{"type": "offer", "to": "a\\nb", "payload": {"type": "offer", "sdp": "v"}}',
        "to:",
        id="peer-id-with-newline",
    ),
    pytest.param('{"type": "kick", "payload": {}}', "peer_id", id="kick-without-peer"),
]


@pytest.mark.parametrize(("frame", "mentions"), INVALID_FRAMES)
async def test_invalid_frames_get_an_error_and_the_session_goes_on(
    server: SbdServer, frame: str, mentions: str
) -> None:
    a, b = await pair(server)
    await a.send(frame)
    error = await a.expect("error")
    assert error["payload"]["code"] == "invalid_message"
    assert mentions.lower() in error["payload"]["message"].lower()
    server_frame.validate_python(error)
    await b.assert_silent(0.1)
    await a.send(a.offer(b.peer_id))
    assert (await b.expect("offer"))["from"] == a.peer_id


async def test_binary_frame_is_an_error(server: SbdServer) -> None:
    a, _ = await pair(server)
    await a.send(b'{"type": "ping"}')
    assert (await a.expect("error"))["payload"]["code"] == "invalid_message"
    await a.send({"type": "ping"})
    await a.expect("pong")


async def test_error_echoes_the_id_as_ref(server: SbdServer) -> None:
    a, _ = await pair(server)
    await a.send('{"type": "offer", "id": "abc", "payload": {"type": "offer", "sdp": ""}}')
    assert (await a.expect("error"))["payload"]["ref"] == "abc"


async def test_ping_gets_pong(server: SbdServer) -> None:
    a, _ = await pair(server)
    await a.send({"type": "ping", "id": "p"})
    assert await a.expect("pong") == {"type": "pong"}


# --- leaving -----------------------------------------------------------------


async def test_leave_closes_with_1000_and_others_see_user_left(server: SbdServer) -> None:
    a, b = await pair(server)
    await b.send({"type": "leave"})
    assert (await b.expect_close())[0] == 1000
    left = await a.expect("user-left")
    assert left["payload"] == {"peer_id": b.peer_id, "user_id": "bob"}


async def test_kick_needs_a_host_and_closes_the_target_with_4003(server: SbdServer) -> None:
    room = new_room()
    a, b = await pair(server, room)
    await b.send({"type": "kick", "id": "k", "payload": {"peer_id": a.peer_id}})
    refused = await b.expect("error")
    assert refused["payload"] == {
        "code": "forbidden",
        "message": "only a host may kick",
        "ref": "k",
    }

    host = await Peer.join(server.ws_url, room, make_token("hana", role="host"))
    await a.expect("user-joined")
    await b.expect("user-joined")
    await host.send({"type": "kick", "payload": {"peer_id": b.peer_id}})
    assert (await b.expect_close())[0] == 4003
    assert (await a.expect("user-left"))["payload"]["peer_id"] == b.peer_id


# --- admission and close codes ------------------------------------------------


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(None, id="missing"),
        pytest.param("not-a-jwt", id="garbage"),
        pytest.param(
            make_token("alice", secret="another-secret-of-at-least-32-bytes!"), id="bad-signature"
        ),
        pytest.param(make_token("alice", ttl=-60), id="expired"),
        pytest.param(
            jwt.encode(
                {"sub": "alice"}, "test-secret-that-is-long-enough-for-hs256!", algorithm="HS256"
            ),
            id="no-exp",
        ),
        pytest.param(
            jwt.encode({"sub": "alice", "exp": 4102444800}, None, algorithm="none"), id="alg-none"
        ),
        pytest.param(make_token("alice", rooms=["another-room"]), id="room-not-in-claim"),
    ],
)
async def test_bad_tokens_are_closed_with_4003_after_accept(
    server: SbdServer, token: str | None
) -> None:
    peer = await Peer.connect(server.ws_url, new_room(), token)
    code, reason = await peer.expect_close()
    assert code == 4003
    assert reason


async def test_rooms_claim_admits_listed_and_wildcard(server: SbdServer) -> None:
    room = new_room()
    await Peer.join(server.ws_url, room, make_token("alice", rooms=[room]))
    await Peer.join(server.ws_url, room, make_token("bob", rooms=["*"]))


@pytest.mark.parametrize("room", ["bad%20room", "a" * 129, "semi%3Bcolon", "%C3%A9t%C3%A9"])
async def test_invalid_room_id_is_closed_with_4400(server: SbdServer, room: str) -> None:
    peer = await Peer.connect(server.ws_url, room, make_token())
    assert (await peer.expect_close())[0] == 4400


async def test_full_room_is_closed_with_4008(server: SbdServer) -> None:
    room = new_room()
    peers = [await Peer.join(server.ws_url, room, user=f"u{i}") for i in range(4)]  # capacity 4
    extra = await Peer.connect(server.ws_url, room, make_token("late"))
    assert (await extra.expect_close())[0] == 4008
    await peers[0].send({"type": "leave"})
    await peers[0].expect_close()
    await Peer.join(server.ws_url, room, user="later")  # a place came free


async def test_oversized_frame_is_closed_with_1009(server: SbdServer) -> None:
    a, b = await pair(server)  # SBD_MAX_MESSAGE_BYTES=16384 on this server
    await a.send({"type": "app", "to": b.peer_id, "payload": "x" * 17000})
    assert (await a.expect_close())[0] == 1009
    await b.assert_silent()  # a may still resume
    left = await b.expect("user-left", timeout=RESUME_TTL + 3)
    assert left["payload"]["peer_id"] == a.peer_id


async def test_frame_just_under_the_limit_is_relayed(server: SbdServer) -> None:
    a, b = await pair(server)
    await a.send({"type": "app", "to": b.peer_id, "payload": "é" * 8000})  # 16,000+ bytes
    assert len((await b.expect("app"))["payload"]) == 8000


async def test_token_expiry_closes_with_4003_unless_refreshed(server: SbdServer) -> None:
    room = new_room()
    short = await Peer.join(server.ws_url, room, make_token("alice", ttl=2))
    refreshed = await Peer.join(server.ws_url, room, make_token("bob", ttl=2))
    await refreshed.send({"type": "refresh", "payload": {"token": make_token("bob", ttl=60)}})
    await refreshed.send(
        {"type": "refresh", "id": "r", "payload": {"token": make_token("mallory", ttl=60)}}
    )
    assert (await refreshed.expect("error"))["payload"]["code"] == "forbidden"
    assert (await short.expect_close(timeout=15))[0] == 4003  # leeway 10 s + ttl 2 s
    await refreshed.send({"type": "ping"})
    await refreshed.expect("user-left")
    await refreshed.expect("pong")


async def test_peers_keep_talking_while_a_neighbour_misbehaves(server: SbdServer) -> None:
    room = new_room()
    a, b = await pair(server, room)
    bad = await Peer.join(server.ws_url, room, user="mallory")
    await a.expect("user-joined")
    await b.expect("user-joined")
    for frame in ["{", "[]", '{"type": 1}', "\x00" * 10, '{"type": "welcome"}']:
        await bad.send(frame)
        await a.send({"type": "app", "to": b.peer_id, "payload": frame})
        assert (await b.expect("app"))["payload"] == frame
        assert (await bad.expect("error"))["payload"]["code"] == "invalid_message"


async def test_a_dropped_peer_is_announced_gone_after_the_resume_window(
    server: SbdServer,
) -> None:
    a, b = await pair(server)
    b.ws.transport.abort()  # the TCP connection drops: no close frame, no leave
    dropped_at = time.monotonic()
    left = await a.expect("user-left", timeout=RESUME_TTL + 5)
    waited = time.monotonic() - dropped_at
    assert left["payload"]["peer_id"] == b.peer_id
    assert RESUME_TTL - 0.2 < waited < RESUME_TTL + 3, waited
