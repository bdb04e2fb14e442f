"""Abuse limits outside the session core, against real servers: the per-IP
handshake limit, the per-user connection cap across instances, SDP and ICE
candidate size bounds, and no permessage-deflate."""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from second_brain_database.limits.connections import MemoryConnectionCap, RedisConnectionCap
from second_brain_database.limits.handshakes import client_key
from second_brain_database.webrtc.schemas import MAX_CANDIDATE_CHARS, MAX_SDP_CHARS
from tests.peers import Peer, make_token
from tests.servers import RedisServer, SbdServer, two_instances

HANDSHAKE_BURST = 4
USER_CAP = 2
_counter = itertools.count(1)


@pytest.fixture(scope="module")
def limited(
    redis_server: RedisServer, artifacts_dir: Path
) -> Iterator[tuple[SbdServer, SbdServer]]:
    """Two instances sharing Redis, with tight limits."""
    env = {
        "SBD_REDIS_URL": redis_server.url,
        "SBD_HANDSHAKE_RATE_PER_S": "0.2",
        "SBD_HANDSHAKE_BURST": str(HANDSHAKE_BURST),
        "SBD_MAX_CONNECTIONS_PER_USER": str(USER_CAP),
    }
    with two_instances(env, artifacts_dir) as instances:
        yield instances


def client_ip() -> str:
    """A fresh client address per test: uvicorn trusts X-Forwarded-For from
    127.0.0.1 (its default ``forwarded_allow_ips``), as from a local proxy."""
    n = next(_counter)
    return f"198.51.100.{n}"


def via(ip: str) -> dict[str, Any]:
    return {"additional_headers": {"X-Forwarded-For": ip}}


async def test_handshakes_are_limited_per_client_address(
    limited: tuple[SbdServer, SbdServer],
) -> None:
    server = limited[0]
    ip = client_ip()
    for n in range(HANDSHAKE_BURST):
        peer = await Peer.join(server.ws_url, "hs-room", user=f"hs-{n}", **via(ip))
        await peer.close()
    # The limit is checked before the token: a bad one costs no signature check.
    refused = await Peer.connect(server.ws_url, "hs-room", "not-a-jwt", **via(ip))
    assert await refused.expect_close() == (4029, "too many connection attempts")
    # Another client is unaffected.
    other = await Peer.join(server.ws_url, "hs-room", user="hs-other", **via(client_ip()))
    await other.close()


def test_ipv6_clients_are_keyed_by_their_64() -> None:
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::2")
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert client_key("192.0.2.7") != client_key("192.0.2.8")


async def test_connections_per_user_are_capped_across_instances(
    limited: tuple[SbdServer, SbdServer],
) -> None:
    first, second = limited
    user = f"capped-{next(_counter)}"
    a = await Peer.join(first.ws_url, "cap-room", user=user, **via(client_ip()))
    await Peer.join(second.ws_url, "cap-room-2", user=user, **via(client_ip()))
    for server in (first, second):
        over = await Peer.connect(server.ws_url, "cap-room", make_token(user), **via(client_ip()))
        assert await over.expect_close() == (4029, "too many connections for this user")
    # Someone else is not affected, and a closed connection frees its slot.
    await Peer.join(first.ws_url, "cap-room", user=f"{user}-friend", **via(client_ip()))
    await a.send({"type": "leave"})
    await a.expect_close()
    again = await Peer.join(second.ws_url, "cap-room", user=user, **via(client_ip()))
    assert again.welcome["payload"]["user_id"] == user


async def test_leases_of_a_dead_instance_lapse(redis_server: RedisServer) -> None:
    redis = Redis.from_url(redis_server.url, socket_timeout=5)
    user = f"lapse-{os.getpid()}-{next(_counter)}"
    # 2 s leases, renewed every 2/3 s: slack for a loaded CI machine.
    dead = RedisConnectionCap(redis, 3, instance_id="dead", ttl_s=2)
    alive = RedisConnectionCap(redis, 3, instance_id="alive", ttl_s=2)
    assert await dead.acquire(user) and await dead.acquire(user)
    assert await alive.acquire(user)
    await alive.start()  # renews its own lease (and so keeps the key), never dead's
    assert await alive.acquire(user) is None
    await asyncio.sleep(2.3)  # "dead" never renews: its two leases lapse
    assert await alive.acquire(user) and await alive.acquire(user)
    assert await dead.acquire(user) is None  # alive's three are still held
    await alive.aclose()
    await redis.aclose()


async def test_the_in_process_cap_counts_and_releases() -> None:
    cap = MemoryConnectionCap(1)
    lease = await cap.acquire("u")
    assert lease is not None and await cap.acquire("u") is None
    assert await cap.acquire("v") is not None
    await cap.release(lease)
    assert await cap.acquire("u") is not None
    assert await MemoryConnectionCap(0).acquire("u") is not None  # 0: no cap


async def test_sdp_and_candidate_sizes_are_bounded(limited: tuple[SbdServer, SbdServer]) -> None:
    server = limited[0]  # default SBD_MAX_MESSAGE_BYTES (65536) > MAX_SDP_CHARS
    a = await Peer.join(server.ws_url, "sdp-room", user="sdp-a", **via(client_ip()))
    b = await Peer.join(server.ws_url, "sdp-room", user="sdp-b", **via(client_ip()))
    await a.expect("user-joined")
    await a.send(a.offer(b.peer_id, sdp="v" * (MAX_SDP_CHARS + 1), id="big-sdp"))
    error = await a.expect("error")
    assert error["payload"]["code"] == "invalid_message"
    assert error["payload"]["ref"] == "big-sdp" and "sdp" in error["payload"]["message"]
    candidate = {"candidate": "c" * (MAX_CANDIDATE_CHARS + 1), "sdpMid": "0"}
    await a.send({"type": "ice-candidate", "to": b.peer_id, "payload": candidate, "id": "c"})
    assert (await a.expect("error"))["payload"]["ref"] == "c"
    await a.send({"type": "ping"})
    await a.expect("pong")  # still open
    await a.send(a.offer(b.peer_id, sdp="v" * MAX_SDP_CHARS))
    assert len((await b.expect("offer"))["payload"]["sdp"]) == MAX_SDP_CHARS


def raw_upgrade(server: SbdServer, extra_headers: str) -> str:
    """The server's answer to a hand-written upgrade request, headers only."""
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /ws/webrtc/raw-room?token={make_token('raw')} HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{server.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra_headers}\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(request.encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    return answer.split(b"\r\n\r\n", 1)[0].decode("latin-1")


async def test_permessage_deflate_is_never_negotiated(server: SbdServer) -> None:
    # Compression makes a tiny frame expand into a huge one in server memory,
    # and leaks through length (CRIME-style): the server must decline it.
    offer = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    answer = await asyncio.to_thread(raw_upgrade, server, offer)
    assert answer.startswith("HTTP/1.1 101")
    assert "sec-websocket-extensions" not in answer.lower()
    peer = await Peer.join(server.ws_url, "deflate-room", compression="deflate")
    assert peer.ws.protocol.extensions == []
