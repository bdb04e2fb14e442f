"""REST endpoints, the login flow, the CLI and operational surfaces, over real HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from tests.conftest import SbdFactory
from tests.peers import Peer, make_token
from tests.servers import BIN_DIR, TEST_SECRET, SbdServer


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_config_needs_a_token_and_is_not_cached(server: SbdServer) -> None:
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        assert (await http.get("/api/v1/webrtc/config")).status_code == 401
        bad = await http.get("/api/v1/webrtc/config", headers=bearer("nope"))
        assert bad.status_code == 401
        ok = await http.get("/api/v1/webrtc/config", headers=bearer(make_token()))
    assert ok.status_code == 200
    assert ok.headers["cache-control"] == "no-store"
    assert ok.json() == {
        "iceServers": [{"urls": ["stun:stun.example.test:3478"]}],
        "iceTransportPolicy": "all",
    }


async def test_config_carries_ephemeral_turn_credentials(sbd_factory: SbdFactory) -> None:
    server = sbd_factory(
        {"SBD_TURN_URLS": "turn:127.0.0.1:3478", "SBD_TURN_SECRET": "north", "SBD_TURN_TTL": "600"}
    )
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        body = (await http.get("/api/v1/webrtc/config", headers=bearer(make_token("bob")))).json()
    turn = body["iceServers"][1]
    expiry, user = turn["username"].split(":")
    assert user == "bob"
    import base64
    import hashlib
    import hmac
    import time

    assert 590 < int(expiry) - time.time() <= 600
    expected = hmac.new(b"north", turn["username"].encode(), hashlib.sha1).digest()
    assert base64.b64decode(turn["credential"]) == expected


async def test_participants_endpoint_honours_the_rooms_claim(server: SbdServer) -> None:
    room = "listed-room"
    peer = await Peer.join(server.ws_url, room, user="alice")
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        listed = await http.get(
            f"/api/v1/webrtc/rooms/{room}/participants", headers=bearer(make_token(rooms=[room]))
        )
        other = await http.get(
            f"/api/v1/webrtc/rooms/{room}/participants", headers=bearer(make_token(rooms=["x"]))
        )
        empty = await http.get(
            "/api/v1/webrtc/rooms/nobody-here/participants", headers=bearer(make_token())
        )
        anonymous = await http.get(f"/api/v1/webrtc/rooms/{room}/participants")
    assert listed.json()["participants"][0]["peer_id"] == peer.peer_id
    assert other.status_code == 403
    assert empty.json() == {"room_id": "nobody-here", "participants": []}
    assert anonymous.status_code == 401


async def test_login_flow_with_a_user_added_by_the_cli(sbd_factory: SbdFactory) -> None:
    server = sbd_factory()
    added = await asyncio.to_thread(
        subprocess.run,
        [str(BIN_DIR / "sbd"), "users", "add", "carol", "--display-name", "Carol"],
        input="a long password\n",
        env=server.env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "carol" in added.stdout
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        wrong = await http.post(
            "/api/v1/auth/token", data={"username": "carol", "password": "not it at all"}
        )
        assert wrong.status_code == 401
        login = await http.post(
            "/api/v1/auth/token", data={"username": "carol", "password": "a long password"}
        )
    assert login.status_code == 200
    body = login.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] > 0
    peer = await Peer.join(server.ws_url, "login-room", body["access_token"])
    assert peer.welcome["payload"]["user_id"] == "carol"
    assert body["access_token"] not in server.log()


def test_cli_token_is_accepted_and_workers_need_redis(tmp_path: Path) -> None:
    env = {"SBD_JWT_SECRET": TEST_SECRET, "PATH": "/usr/bin:/bin"}
    printed = subprocess.run(
        [str(BIN_DIR / "sbd"), "token", "dave", "--ttl", "60", "--room", "r1"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    import jwt

    claims = jwt.decode(printed, TEST_SECRET, algorithms=["HS256"])
    assert (claims["sub"], claims["rooms"], claims["exp"] - claims["iat"]) == ("dave", ["r1"], 60)
    refused = subprocess.run(
        [str(BIN_DIR / "sbd"), "serve", "--workers", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert refused.returncode == 2
    assert "SBD_REDIS_URL" in refused.stderr


async def test_health_and_metrics(server: SbdServer) -> None:
    await Peer.join(server.ws_url, "metrics-room")
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        assert (await http.get("/health/live")).status_code == 200
        assert (await http.get("/health/ready")).json() == {"status": "ok"}
        text = (await http.get("/metrics")).text
    assert "sbd_websocket_connections_opened_total" in text
    assert (
        'sbd_messages_received_total{type="ping"}' in text or "sbd_websocket_connections " in text
    )


async def test_no_token_in_any_log_line(server: SbdServer) -> None:
    token = make_token("logcheck")
    await Peer.join(server.ws_url, "log-room", token)
    await Peer.connect(server.ws_url, "log-room", token + "tampered")
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        await http.get("/api/v1/webrtc/config", headers=bearer(token))
    log = server.log()
    assert "log-room?token=[redacted]" in log
    assert token not in log
    assert token.split(".")[1] not in log


async def test_origin_allowlist_closes_with_1008(sbd_factory: SbdFactory) -> None:
    server = sbd_factory({"SBD_ALLOWED_ORIGINS": "https://app.example.org,https://b.example.org"})
    allowed = await Peer.join(
        server.ws_url,
        "o",
        origin="https://b.example.org",  # type: ignore[arg-type]
    )
    assert allowed.peer_id
    refused = await Peer.connect(server.ws_url, "o", make_token(), origin="https://evil.example")
    assert (await refused.expect_close())[0] == 1008


async def test_origin_allowlist_admits_a_client_that_sends_no_origin(
    sbd_factory: SbdFactory,
) -> None:
    """Not a browser (a native or Python client): no page can ride on it."""
    server = sbd_factory({"SBD_ALLOWED_ORIGINS": "https://app.example.org"})
    native = await Peer.join(server.ws_url, "no-origin")
    assert native.welcome["payload"]["room_id"] == "no-origin"
    refused = await Peer.connect(server.ws_url, "no-origin", make_token(), origin="null")  # type: ignore[arg-type]
    assert await refused.expect_close() == (1008, "origin not allowed")


async def test_a_token_past_exp_within_the_leeway_is_refused_at_the_handshake(
    sbd_factory: SbdFactory,
) -> None:
    """No ``welcome`` followed at once by 4003: 4003 before any frame (docs/security.md)."""
    server = sbd_factory()
    expired = make_token("alice", ttl=-3)  # the default leeway is 10 s
    peer = await Peer.connect(server.ws_url, "late", expired)
    with pytest.raises(ConnectionClosed) as closed:
        await peer.recv()  # the first thing to arrive is the close, not a welcome
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4003, "token expired")
    # The leeway still covers clock skew where nothing outlives the request.
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        answer = await http.get("/api/v1/webrtc/config", headers=bearer(expired))
    assert answer.status_code == 200


async def test_rate_limit_errors_then_closes_with_4029(sbd_factory: SbdFactory) -> None:
    server = sbd_factory({"SBD_RATE_LIMIT_PER_S": "1", "SBD_RATE_LIMIT_BURST": "5"})
    room = "rl"
    flooder = await Peer.join(server.ws_url, room, user="flood")
    calm = await Peer.join(server.ws_url, room, user="calm")
    await flooder.expect("user-joined")
    for _ in range(5):
        await flooder.send({"type": "ping"})
        await flooder.expect("pong")
    await flooder.send({"type": "ping"})
    assert (await flooder.expect("error"))["payload"]["code"] == "rate_limited"
    for _ in range(40):
        await flooder.send({"type": "ping"})
    codes = []
    with contextlib.suppress(ConnectionClosed):
        while True:
            codes.append((await flooder.expect("error"))["payload"]["code"])
    assert set(codes) == {"rate_limited"}
    assert flooder.ws.close_code == 4029
    assert (await calm.expect("user-left"))["payload"]["peer_id"] == flooder.peer_id
    await calm.send({"type": "ping"})
    await calm.expect("pong")


def test_module_runs_as_a_script() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "second_brain_database.cli", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "serve" in out and "token" in out and "users" in out


async def test_a_connection_that_sends_nothing_useful_is_closed_idle(
    sbd_factory: SbdFactory,
) -> None:
    server = sbd_factory({"SBD_IDLE_TIMEOUT": "1.5"})
    talker = await Peer.join(server.ws_url, "idle", user="talker")
    silent = await Peer.join(server.ws_url, "idle", user="silent")
    await talker.expect("user-joined")
    await silent.send("not a message")  # garbage does not count as activity
    await silent.expect("error")
    others = []
    for _ in range(5):  # 2.5 s: pings keep the talker alive past the timeout
        await talker.send({"type": "ping"})
        while (message := await talker.recv())["type"] != "pong":
            others.append(message)
        await asyncio.sleep(0.5)
    assert (await silent.expect_close())[0] == 4408
    assert [m["type"] for m in others] == ["user-left"]
    assert others[0]["payload"]["peer_id"] == silent.peer_id


async def test_password_guessing_is_throttled(sbd_factory: SbdFactory) -> None:
    server = sbd_factory({"SBD_LOGIN_ATTEMPTS_PER_MINUTE": "5"})
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        statuses = [
            (await http.post(
                "/api/v1/auth/token", data={"username": "victim", "password": f"guess-{i}"}
            )).status_code
            for i in range(8)
        ]  # fmt: skip
        other_user = await http.post(
            "/api/v1/auth/token", data={"username": "someone", "password": "whatever1"}
        )
    assert statuses[:5] == [401] * 5
    assert set(statuses[5:]) == {429}
    # Same address: its bucket is empty too.
    assert other_user.status_code == 429
