"""IP privacy: a token with the claim ``"ice": "relay"`` gets an
RTCConfiguration with ``iceTransportPolicy: "relay"``, so its browser gathers
TURN relay candidates only and peers never learn its addresses. The call
through coturn is tests/browser/test_ice_privacy.py."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.conftest import SbdFactory
from tests.peers import make_token
from tests.servers import BIN_DIR, TEST_SECRET, SbdServer

TURN_ENV = {"SBD_TURN_URLS": "turn:127.0.0.1:3478", "SBD_TURN_SECRET": "north"}


async def config_for(server: SbdServer, token: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        return await http.get("/api/v1/webrtc/config", headers={"Authorization": f"Bearer {token}"})


@pytest.fixture
def turn_server(sbd_factory: SbdFactory) -> SbdServer:
    return sbd_factory(TURN_ENV)


@pytest.mark.parametrize(
    ("claims", "policy"), [({}, "all"), ({"ice": "all"}, "all"), ({"ice": "relay"}, "relay")]
)
async def test_ice_claim_sets_the_transport_policy(
    turn_server: SbdServer, claims: dict[str, Any], policy: str
) -> None:
    response = await config_for(turn_server, make_token("carol", **claims))
    assert response.status_code == 200
    body = response.json()
    assert body["iceTransportPolicy"] == policy
    # The relay itself is handed out either way, credentials included.
    [turn] = [s for s in body["iceServers"] if "credential" in s]
    assert turn["urls"] == ["turn:127.0.0.1:3478"] and turn["username"].endswith(":carol")


@pytest.mark.parametrize("value", ["Relay", "relay-only", "none", True, ["relay"]])
async def test_a_misspelt_ice_claim_refuses_the_token(turn_server: SbdServer, value: Any) -> None:
    """Fail closed: a claim meant to hide addresses never quietly exposes them."""
    response = await config_for(turn_server, make_token("carol", ice=value))
    assert response.status_code == 401


async def test_sbd_token_ice_relay(turn_server: SbdServer) -> None:
    sbd = await asyncio.create_subprocess_exec(
        str(BIN_DIR / "sbd"),
        *("token", "erin", "--ice", "relay"),
        env={"SBD_JWT_SECRET": TEST_SECRET, "PATH": "/usr/bin:/bin"},
        stdout=asyncio.subprocess.PIPE,
    )
    printed, _ = await sbd.communicate()
    assert sbd.returncode == 0
    response = await config_for(turn_server, printed.decode().strip())
    assert response.json()["iceTransportPolicy"] == "relay"
