"""TURN credentials (issue 22 item 12): they never outlive the token they
were handed out for, and two user ids never share a TURN username."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import pytest

from second_brain_database.ops.turn_probe import probe
from tests.edge import Coturn
from tests.hostile.clients import Attacker, forge_token
from tests.servers import SbdServer

DAY = 86400


def _turn_username(attacker: Attacker, token: str) -> str:
    answer = attacker.get("/api/v1/webrtc/config", token)
    assert answer.status_code == 200, answer.text
    (turn,) = [s for s in answer.json()["iceServers"] if "credential" in s]
    username: str = turn["username"]
    return username


def test_a_short_token_buys_a_short_credential(attacker: Attacker) -> None:
    now = time.time()
    expiry, _ = _turn_username(attacker, forge_token(sub="eve", ttl=60)).split(":", 1)
    assert int(expiry) <= now + 61
    # A long-lived token still gets SBD_TURN_TTL (24 h by default), no more.
    expiry, _ = _turn_username(attacker, forge_token(sub="eve", ttl=7 * DAY)).split(":", 1)
    assert now + DAY - 5 <= int(expiry) <= now + DAY + 5


@pytest.mark.parametrize(
    "users", [("a:b", "a_b"), ("a%3Ab", "a:b"), ("a:b:c", "a_b_c"), ("x" * 255, "x" * 254 + "y")]
)
def test_user_ids_never_share_a_turn_username(attacker: Attacker, users: tuple[str, str]) -> None:
    parts = [_turn_username(attacker, forge_token(sub=user)).split(":", 1)[1] for user in users]
    assert parts[0] != parts[1]
    for user, part in zip(users, parts, strict=True):
        assert ":" not in part  # the expiry's ':' stays the only one
        assert len(part) > 400 or unquote(part) == user  # readable where it fits


@pytest.fixture(scope="module")
def coturn_and_sbd(artifacts_dir: Path) -> Iterator[tuple[Coturn, SbdServer]]:
    secret = "hostile-turn-secret-for-coturn"
    coturn = Coturn(secret).start()
    try:
        env = {"SBD_TURN_URLS": coturn.url, "SBD_TURN_SECRET": secret}
        sbd = SbdServer(env, log_dir=artifacts_dir).start()
        try:
            yield coturn, sbd
        finally:
            sbd.stop()
    finally:
        coturn.stop()


@pytest.mark.parametrize("user", ["a:b%2F", "Zoë O'Brien 🎉", "é" * 200])
async def test_coturn_accepts_every_encoded_user(
    coturn_and_sbd: tuple[Coturn, SbdServer], user: str
) -> None:
    """Plain, percent-encoded and digest (over 400 characters) forms alike."""
    coturn, sbd = coturn_and_sbd
    answer = Attacker(sbd).get("/api/v1/webrtc/config", forge_token(sub=user))
    (turn,) = [s for s in answer.json()["iceServers"] if "credential" in s]
    allocation = await asyncio.to_thread(probe, coturn.url, turn["username"], turn["credential"])
    assert allocation.relayed_host == "127.0.0.1"
