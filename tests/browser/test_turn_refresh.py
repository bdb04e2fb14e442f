"""TURN credentials that do not run out mid-call, in Chromium through the
repo's coturn: the config answer says when its credentials expire
(`expiresIn`), the SDK fetches fresh ones before then and hands them to its
peer connections. After the first credentials expired (coturn refuses them),
a peer that joins gets relayed calls with everyone (their new peer
connections allocate with the fresh credentials; without the refresh they
gather nothing), and an ICE restart settles on the new ICE generation.
Every user is relay-only (`"ice": "relay"`), so every path goes through
coturn. (Chromium keeps a live TURN allocation through an ICE restart: the
credentials matter for every new allocation.)"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from playwright.async_api import Page

from tests.browser.callpage import (
    LOCAL_UFRAG,
    TIMEOUT_MS,
    candidates,
    join_with_token,
    send_chat,
    wait_chat,
    wait_connected,
)
from tests.browser.conftest import TURN_SECRET, NewPage
from tests.conftest import SbdFactory
from tests.edge import Coturn
from tests.peers import make_token

TURN_TTL_S = 8  # seconds: room for a slow join, short enough to wait out
PC_TURN_USERNAME = """id => window.sbd.client.peers.get(id).pc.getConfiguration()
    .iceServers.find((s) => s.credential).username"""
# Relay candidates a new relay-only RTCPeerConnection gathers with `config`,
# and how many candidate errors (refused allocations) it met.
GATHER_RELAYS = """async (config) => {
    const pc = new RTCPeerConnection({ ...config, iceTransportPolicy: "relay" });
    const found = [];
    let errors = 0;
    pc.onicecandidateerror = () => { errors += 1; };
    pc.onicecandidate = ({ candidate }) => {
        if (candidate?.type === "relay") found.push(candidate.type);
    };
    const complete = new Promise((resolve) => {
        pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && resolve();
    });
    pc.createDataChannel("probe");
    await pc.setLocalDescription(await pc.createOffer());
    await complete;
    pc.close();
    return { relays: found.length, errors };
}"""


async def gather_relays(page: Page, config: dict[str, Any]) -> dict[str, int]:
    found: dict[str, int] = await page.evaluate(GATHER_RELAYS, config)
    return found


async def test_calls_after_the_turn_credentials_expired(
    sbd_factory: SbdFactory, coturn: Coturn, new_page: NewPage
) -> None:
    server = sbd_factory(
        {
            "SBD_TURN_URLS": coturn.url,
            "SBD_TURN_SECRET": TURN_SECRET,
            "SBD_TURN_TTL": str(TURN_TTL_S),
        }
    )
    room = "long-call"
    a, b = await new_page("a"), await new_page("b")
    a_id = await join_with_token(a, server, make_token("ann", ice="relay"), room)
    b_id = await join_with_token(b, server, make_token("ben", ice="relay"), room)
    assert await wait_connected(a, 1) == [b_id]
    assert await wait_connected(b, 1) == [a_id]
    first_config: dict[str, Any] = await a.evaluate("() => window.sbd.client.rtcConfig")
    assert first_config["expiresIn"] == TURN_TTL_S
    first_username = first_config["iceServers"][-1]["username"]
    assert (await candidates(a, b_id))["selected"] == ["relay", "relay"]

    # Past the first credentials' expiry (the username's timestamp), coturn
    # refuses them...
    expiry = int(first_username.split(":")[0])
    await asyncio.sleep(max(0.0, expiry - time.time()) + 1.5)
    refused = await gather_relays(a, first_config)
    assert refused["relays"] == 0 and refused["errors"] > 0, refused
    # ...while the SDKs hold fresh ones that it accepts, and gave them to
    # their peer connections.
    for page, remote in ((a, b_id), (b, a_id)):
        fresh_config: dict[str, Any] = await page.evaluate("() => window.sbd.client.rtcConfig")
        fresh = fresh_config["iceServers"][-1]["username"]
        assert int(fresh.split(":")[0]) > time.time(), fresh
        assert (await gather_relays(page, fresh_config))["relays"] > 0
        in_pc = await page.evaluate(PC_TURN_USERNAME, remote)
        assert int(in_pc.split(":")[0]) > expiry, in_pc

    # A newcomer: a and b make new peer connections for it, relay-only.
    c = await new_page("c")
    c_id = await join_with_token(c, server, make_token("cat", ice="relay"), room)
    assert sorted(await wait_connected(c, 2)) == sorted([a_id, b_id])
    for page in (a, b):
        await wait_connected(page, 2)
        assert (await candidates(page, c_id))["selected"] == ["relay", "relay"]
    await send_chat(c, "joined after the expiry")
    await wait_chat(a, "joined after the expiry")
    await wait_chat(b, "joined after the expiry")

    # An ICE restart between the first two settles on the new ICE generation:
    # the selected pair's local candidate carries the new ufrag.
    ufrag = await a.evaluate(LOCAL_UFRAG, b_id)
    await a.evaluate("id => window.sbd.client.restartIce(id)", b_id)
    await a.wait_for_function(
        f"""async (id) => {{
            const pc = window.sbd.client.peers.get(id).pc;
            const ufrag = ({LOCAL_UFRAG})(id);
            if (ufrag === {ufrag!r} || pc.signalingState !== "stable") return false;
            const stats = [...(await pc.getStats()).values()];
            const transport = stats.find((s) => s.type === "transport");
            const pair = stats.find((s) => s.id === transport?.selectedCandidatePairId);
            const local = stats.find((s) => s.id === pair?.localCandidateId);
            return local?.candidateType === "relay" && local.usernameFragment === ufrag;
        }}""",
        arg=b_id,
        timeout=TIMEOUT_MS,
        polling=250,
    )
    assert (await candidates(a, b_id))["selectedUrl"] == coturn.url
    await send_chat(b, "still here after the restart")
    await wait_chat(a, "still here after the restart")
