"""Real TURN: coturn from deploy/turnserver.conf with use-auth-secret, and two
aiortc peers forced to relay-only that connect through it with exactly the
credentials GET /api/v1/webrtc/config handed out. A tampered or expired
credential gets no allocation."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
)

from second_brain_database.ops.turn_probe import TurnProbeError, probe
from second_brain_database.webrtc.client import SignalingClient
from second_brain_database.webrtc.client.aiortc_peer import AiortcMesh, AiortcPeer
from second_brain_database.webrtc.turn import turn_credential
from tests.edge import Coturn
from tests.peers import make_token
from tests.servers import SbdServer

TURN_SECRET = "turn-secret-shared-by-sbd-and-coturn"
_rooms = itertools.count()


@pytest.fixture(scope="module")
def coturn() -> Iterator[Coturn]:
    server = Coturn(TURN_SECRET).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def sbd(coturn: Coturn, artifacts_dir: Path) -> Iterator[SbdServer]:
    env = {"SBD_TURN_URLS": coturn.url, "SBD_TURN_SECRET": TURN_SECRET}
    server = SbdServer(env, log_dir=artifacts_dir).start()
    yield server
    server.stop()


async def ice_config(server: SbdServer, token: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        response = await http.get(
            "/api/v1/webrtc/config", headers={"Authorization": f"Bearer {token}"}
        )
    response.raise_for_status()
    config: dict[str, Any] = response.json()
    return config


def turn_entry(config: dict[str, Any]) -> dict[str, Any]:
    [entry] = [s for s in config["iceServers"] if "credential" in s]
    return entry


def relay_only(config: dict[str, Any]) -> RTCConfiguration:
    """The server's RTCConfiguration as aiortc takes it, with relay candidates only."""
    return RTCConfiguration(
        iceServers=[
            RTCIceServer(urls=s["urls"], username=s.get("username"), credential=s.get("credential"))
            for s in config["iceServers"]
        ],
        iceTransportPolicy=RTCIceTransportPolicy.RELAY,
    )


def nominated_types(peer: AiortcPeer) -> tuple[str, str]:
    """(local, remote) candidate types of the pair ICE selected."""
    sctp = peer.pc.sctp
    assert sctp is not None
    connection = sctp.transport.transport._connection
    [pair] = connection._nominated.values()
    return pair.local_candidate.type, pair.remote_candidate.type


async def test_relay_only_peers_connect_through_coturn(sbd: SbdServer, coturn: Coturn) -> None:
    room = f"turn-{next(_rooms)}"
    meshes = []
    for user in ("alice", "bob"):
        token = make_token(user)
        config = await ice_config(sbd, token)
        assert turn_entry(config)["urls"] == [coturn.url]
        meshes.append(
            AiortcMesh(SignalingClient(sbd.base_url, room, token), configuration=relay_only(config))
        )
    alice, bob = meshes
    await alice.start()
    await bob.start()
    try:
        [alice_side] = await alice.wait_connected(timeout=20)
        [bob_side] = await bob.wait_connected(timeout=20)
        for side in (alice_side, bob_side):
            sdp = side.pc.localDescription.sdp
            candidates = [line for line in sdp.splitlines() if line.startswith("a=candidate")]
            assert candidates and all(" typ relay" in line for line in candidates), sdp
            assert nominated_types(side) == ("relay", "relay")
        assert alice.send("through coturn") == 1
        assert await asyncio.wait_for(bob.messages.get(), 10) == (
            alice.client.peer_id,
            "through coturn",
        )
    finally:
        await alice.close()
        await bob.close()


async def gathered_relays(config: dict[str, Any]) -> list[str]:
    pc = RTCPeerConnection(relay_only(config))
    try:
        pc.createDataChannel("probe")
        await pc.setLocalDescription(await pc.createOffer())  # gathers candidates
        sdp = pc.localDescription.sdp
    finally:
        await pc.close()
    return [line for line in sdp.splitlines() if " typ relay" in line]


async def test_the_issued_credential_allocates(sbd: SbdServer, coturn: Coturn) -> None:
    turn = turn_entry(await ice_config(sbd, make_token("carol")))
    assert len(await gathered_relays(await ice_config(sbd, make_token("carol")))) == 1
    allocation = await asyncio.to_thread(probe, coturn.url, turn["username"], turn["credential"])
    assert (allocation.relayed_host, allocation.realm) == ("127.0.0.1", Coturn.REALM)


async def test_tampered_credential_gets_no_allocation(sbd: SbdServer, coturn: Coturn) -> None:
    config = await ice_config(sbd, make_token("mallory"))
    turn = turn_entry(config)
    # Claim another user (or a later expiry) under the same HMAC: refused.
    expiry, _ = turn["username"].split(":", 1)
    turn["username"] = f"{int(expiry) + 3600}:mallory"
    assert await gathered_relays(config) == []
    with pytest.raises(TurnProbeError) as refused:
        await asyncio.to_thread(probe, coturn.url, turn["username"], turn["credential"])
    assert refused.value.code == 401
    # A forged HMAC for the genuine username: refused too.
    turn = turn_entry(config := await ice_config(sbd, make_token("mallory")))
    turn["credential"] = turn_credential("not-the-secret", turn["username"])
    assert await gathered_relays(config) == []


async def test_expired_credential_gets_no_allocation(coturn: Coturn) -> None:
    # Correctly signed with the shared secret, but its expiry has passed.
    username = f"{int(time.time()) - 60}:alice"
    config = {
        "iceServers": [
            {
                "urls": [coturn.url],
                "username": username,
                "credential": turn_credential(TURN_SECRET, username),
            }
        ]
    }
    assert await gathered_relays(config) == []
    with pytest.raises(TurnProbeError) as refused:
        await asyncio.to_thread(probe, coturn.url, username, turn_credential(TURN_SECRET, username))
    assert refused.value.code == 401
