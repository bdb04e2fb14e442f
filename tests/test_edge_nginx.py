"""deploy/nginx.conf in front of two `sbd serve` instances sharing Redis: TLS,
WebSocket upgrade, balancing, client address, request ids, resume."""

from __future__ import annotations

import asyncio
import itertools
import json
import ssl
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import SbdFactory
from tests.edge import Nginx
from tests.peers import Peer, make_token
from tests.scrape import delta, scrape
from tests.servers import SbdServer

Cluster = tuple[SbdServer, SbdServer]
_rooms = itertools.count()
# Clients from another loopback address than nginx's own upstream side
# (127.0.0.1), so the instance can only know it from X-Forwarded-For.
CLIENT_ADDR = "127.0.0.5"


def new_room() -> str:
    return f"edge-{next(_rooms)}"


@pytest.fixture(scope="module")
def nginx(cluster: Cluster) -> Iterator[Nginx]:
    proxy = Nginx([cluster[0].port, cluster[1].port]).start()
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def tls(nginx: Nginx) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(nginx.cert))


def http_client(nginx: Nginx, tls: ssl.SSLContext, source: str = CLIENT_ADDR) -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(verify=tls, local_address=source)
    return httpx.AsyncClient(base_url=nginx.https_url, transport=transport, timeout=5)


async def join(nginx: Nginx, tls: ssl.SSLContext, room: str, user: str, **kw: Any) -> Peer:
    return await Peer.join(
        nginx.wss_url, room, user=user, ssl=tls, local_addr=(CLIENT_ADDR, 0), **kw
    )


def log_lines(*servers: SbdServer) -> list[dict[str, Any]]:
    lines = []
    for server in servers:
        for line in server.log().splitlines():
            if line.startswith("{"):
                lines.append(json.loads(line))
    return lines


def test_shipped_config_passes_nginx_t(nginx: Nginx) -> None:
    result = nginx.test_config()
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


async def test_join_and_relay_through_nginx_on_both_instances(
    nginx: Nginx, tls: ssl.SSLContext, cluster: Cluster
) -> None:
    one, two = cluster
    before = [scrape(one.base_url), scrape(two.base_url)]
    room = new_room()
    peers = [await join(nginx, tls, room, f"user{i}") for i in range(4)]
    for i, peer in enumerate(peers):
        for _ in range(3 - i):
            await peer.expect("user-joined")
    await peers[3].send(peers[3].offer(peers[0].peer_id, sdp="v=0 via nginx"))
    offer = await peers[0].expect("offer")
    assert (offer["from"], offer["payload"]["sdp"]) == (peers[3].peer_id, "v=0 via nginx")
    await peers[0].send({"type": "app", "payload": "all"})
    for peer in peers[1:]:
        assert (await peer.expect("app"))["from"] == peers[0].peer_id

    # least_conn spread the four long-lived sockets over both instances.
    after = [scrape(one.base_url), scrape(two.base_url)]
    opened = [
        delta(b, a, "sbd_websocket_connections_opened_total")
        for b, a in zip(before, after, strict=True)
    ]
    assert opened == [2, 2]
    for peer in peers:
        await peer.send({"type": "leave"})
        assert (await peer.expect_close())[0] == 1000


async def test_client_address_and_request_id_reach_the_instance(
    nginx: Nginx, tls: ssl.SSLContext, cluster: Cluster
) -> None:
    async with http_client(nginx, tls) as http:
        # A forged X-Forwarded-For is replaced by nginx, not trusted.
        response = await http.get("/health/live", headers={"X-Forwarded-For": "198.51.100.7"})
    assert response.status_code == 200
    request_id = response.headers["x-request-id"]
    assert len(request_id) == 32  # nginx's $request_id, passed through

    await asyncio.sleep(0.2)
    [line] = [
        entry
        for entry in log_lines(*cluster)
        if entry.get("request_id") == request_id and entry["logger"] == "uvicorn.access"
    ]
    assert line["client"].startswith(f"{CLIENT_ADDR}:")
    assert line["path"] == "/health/live"
    [proxied] = [
        json.loads(entry)
        for entry in nginx.access_log().splitlines()
        if json.loads(entry)["request_id"] == request_id
    ]
    assert (proxied["client"], proxied["status"]) == (CLIENT_ADDR, 200)


async def test_session_logs_carry_the_proxy_request_id_and_no_token(
    nginx: Nginx, tls: ssl.SSLContext, cluster: Cluster
) -> None:
    room = new_room()
    token = make_token("dora")
    peer = await Peer.join(nginx.wss_url, room, token, ssl=tls, local_addr=(CLIENT_ADDR, 0))
    await peer.send({"type": "leave"})
    await peer.expect_close()
    await asyncio.sleep(0.3)
    [ended] = [
        entry
        for entry in log_lines(*cluster)
        if entry.get("room_id") == room and entry["msg"] == "signaling session ended"
    ]
    assert (ended["peer_id"], ended["user_id"]) == (peer.peer_id, "dora")
    access = [json.loads(line) for line in nginx.access_log().splitlines()]
    [upgrade] = [entry for entry in access if entry["request_id"] == ended["request_id"]]
    assert (upgrade["path"], upgrade["status"]) == (f"/ws/webrtc/{room}", 101)
    assert token not in nginx.access_log()
    for server in cluster:
        assert token not in server.log()


async def test_forwarded_proto_makes_the_asyncapi_document_say_wss(
    nginx: Nginx, tls: ssl.SSLContext
) -> None:
    async with http_client(nginx, tls) as http:
        document = (await http.get("/asyncapi.json")).json()
    assert document["servers"]["signaling"] == {
        "url": f"127.0.0.1:{nginx.https_port}",
        "protocol": "wss",
    }


async def test_plain_http_redirects_to_https(nginx: Nginx) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"http://127.0.0.1:{nginx.http_port}/api/v1/webrtc/config")
    assert response.status_code == 308
    assert response.headers["location"].startswith("https://127.0.0.1")


async def test_metrics_hidden_and_admin_api_only_from_this_host(
    nginx: Nginx, tls: ssl.SSLContext
) -> None:
    headers = {"Authorization": f"Bearer {make_token('root', role='admin')}"}
    async with http_client(nginx, tls) as remote:
        assert (await remote.get("/metrics")).status_code == 404
        assert (await remote.get("/api/v1/admin/rooms", headers=headers)).status_code == 403
    async with http_client(nginx, tls, source="127.0.0.1") as local:
        response = await local.get("/api/v1/admin/rooms", headers=headers)
    assert response.status_code == 200
    assert "rooms" in response.json()


async def test_resume_through_nginx_keeps_the_peer_and_its_messages(
    nginx: Nginx, tls: ssl.SSLContext
) -> None:
    room = new_room()
    alice = await join(nginx, tls, room, "alice")
    bob = await join(nginx, tls, room, "bob")
    await alice.expect("user-joined")
    resume_token = bob.welcome["payload"]["resume_token"]

    bob.ws.transport.abort()  # the network drops: no close frame, no leave
    await asyncio.sleep(0.5)
    await alice.send({"type": "app", "to": bob.peer_id, "payload": "while you were away"})

    back = await Peer.join(
        nginx.wss_url,
        room,
        user="bob",
        query=f"resume={resume_token}",
        ssl=tls,
        local_addr=(CLIENT_ADDR, 0),
    )
    assert back.peer_id == bob.peer_id
    missed = await back.expect("app")
    assert (missed["from"], missed["payload"]) == (alice.peer_id, "while you were away")
    await alice.assert_silent(0.5)  # no user-left, no user-joined
    for peer in (alice, back):
        await peer.send({"type": "leave"})
        await peer.expect_close()


async def test_forwarded_headers_are_trusted_only_from_allowed_proxies(
    sbd_factory: SbdFactory,
) -> None:
    # The default (127.0.0.1, nginx's address here) is trusted: see the tests above.
    wary = sbd_factory(args=("--forwarded-allow-ips", "127.0.0.9"))
    deaf = sbd_factory(args=("--no-proxy-headers",))
    headers = {"X-Forwarded-For": "198.51.100.7", "X-Forwarded-Proto": "https"}
    clients = {}
    for server in (wary, deaf):
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            response = await http.get("/asyncapi.json", headers=headers)
        clients[server.port] = response.json()["servers"]["signaling"]["protocol"]
        request_id = response.headers["x-request-id"]
        await asyncio.sleep(0.2)
        [line] = [e for e in log_lines(server) if e.get("request_id") == request_id]
        clients[server.port] = (line["client"].split(":")[0], clients[server.port])
    assert clients[wary.port] == ("127.0.0.1", "ws")
    assert clients[deaf.port] == ("127.0.0.1", "ws")
