"""The config answer says when its TURN credentials expire (`expiresIn`,
seconds), so clients fetch fresh ones in time; the SDK's use of it is
tests/browser/test_turn_refresh.py."""

from __future__ import annotations

import time
from typing import Any

import httpx

from tests.conftest import SbdFactory
from tests.peers import make_token


async def config(
    sbd_factory: SbdFactory, env: dict[str, str], token_ttl: float = 600
) -> dict[str, Any]:
    server = sbd_factory(env)
    token = make_token("dan", ttl=token_ttl)
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        response = await http.get(
            "/api/v1/webrtc/config", headers={"Authorization": f"Bearer {token}"}
        )
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


async def test_expires_in_is_the_turn_credentials_lifetime(sbd_factory: SbdFactory) -> None:
    env = {"SBD_TURN_URLS": "turn:127.0.0.1:3478", "SBD_TURN_SECRET": "north"}
    body = await config(sbd_factory, {**env, "SBD_TURN_TTL": "90"})
    assert body["expiresIn"] == 90
    [turn] = [s for s in body["iceServers"] if "credential" in s]
    expiry = int(turn["username"].split(":")[0])
    assert 80 < expiry - time.time() <= 90  # the same moment the username carries


async def test_expires_in_follows_a_token_that_expires_first(sbd_factory: SbdFactory) -> None:
    env = {"SBD_TURN_URLS": "turn:127.0.0.1:3478", "SBD_TURN_SECRET": "north"}
    body = await config(sbd_factory, {**env, "SBD_TURN_TTL": "3600"}, token_ttl=60)
    # The credentials end with the token, and the answer says so.
    assert 50 < body["expiresIn"] <= 60
    [turn] = [s for s in body["iceServers"] if "credential" in s]
    expiry = int(turn["username"].split(":")[0])
    assert abs(expiry - time.time() - body["expiresIn"]) <= 2


async def test_no_expiry_without_turn_credentials(sbd_factory: SbdFactory) -> None:
    assert "expiresIn" not in await config(sbd_factory, {})
    # TURN URLs without a secret hand out no credentials either.
    assert "expiresIn" not in await config(sbd_factory, {"SBD_TURN_URLS": "turn:127.0.0.1:3478"})
