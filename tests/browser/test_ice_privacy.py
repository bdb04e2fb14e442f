"""IP privacy in Chromium through the repo's real coturn: a user whose token
says ``"ice": "relay"`` gathers relay candidates only, the call connects
through the relay, and the other side never sees one of that user's
addresses. The other user, without the claim, gathers host candidates as
usual (so the claim is what makes the difference)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from playwright.async_api import Page

from tests.browser.callpage import join_with_token, send_chat, wait_chat, wait_connected
from tests.browser.conftest import NewPage
from tests.conftest import SbdFactory
from tests.edge import Coturn
from tests.peers import make_token

TURN_SECRET = "turn-secret-shared-by-sbd-and-coturn"

# Candidate types of one peer connection, from getStats(): all gathered
# (local), all learnt from the other side (remote), and the selected pair.
CANDIDATES = """async (peerId) => {
    const pc = window.sbd.client.peers.get(peerId).pc;
    const stats = [...(await pc.getStats()).values()];
    const types = (kind) => stats.filter((s) => s.type === kind).map((s) => s.candidateType);
    const transport = stats.find((s) => s.type === "transport");
    const pair = stats.find((s) => s.id === transport?.selectedCandidatePairId);
    const typeOf = (id) => stats.find((s) => s.id === id)?.candidateType ?? null;
    const selectedLocal = stats.find((s) => s.id === pair?.localCandidateId);
    return {
        policy: pc.getConfiguration().iceTransportPolicy,
        local: types("local-candidate"),
        remote: types("remote-candidate"),
        selected: pair ? [typeOf(pair.localCandidateId), typeOf(pair.remoteCandidateId)] : null,
        selectedUrl: selectedLocal?.url ?? null,
    };
}"""


@pytest.fixture(scope="module")
def coturn() -> Iterator[Coturn]:
    server = Coturn(TURN_SECRET).start()
    yield server
    server.stop()


async def candidates(page: Page, peer_id: str) -> dict[str, Any]:
    found: dict[str, Any] = await page.evaluate(CANDIDATES, peer_id)
    return found


async def test_relay_claim_hides_the_users_addresses(
    sbd_factory: SbdFactory, coturn: Coturn, new_page: NewPage
) -> None:
    server = sbd_factory({"SBD_TURN_URLS": coturn.url, "SBD_TURN_SECRET": TURN_SECRET})
    room = "private-call"
    private, other = await new_page("private"), await new_page("other")
    private_id = await join_with_token(private, server, make_token("pat", ice="relay"), room)
    other_id = await join_with_token(other, server, make_token("oli"), room)
    assert await wait_connected(private, 1) == [other_id]
    assert await wait_connected(other, 1) == [private_id]
    await send_chat(private, "through the relay")
    await wait_chat(other, "through the relay")

    mine = await candidates(private, other_id)
    theirs = await candidates(other, private_id)
    assert mine["policy"] == "relay" and theirs["policy"] == "all"
    # The private side gathered relay candidates only, and used one.
    assert mine["local"] and set(mine["local"]) == {"relay"}, mine
    assert mine["selected"] is not None and mine["selected"][0] == "relay", mine
    # The other side learnt no address of it but the relay's...
    assert theirs["remote"] and set(theirs["remote"]) <= {"relay"}, theirs
    # ...while gathering its own host candidates as usual.
    assert "host" in theirs["local"], theirs
    # The relay is the repo's coturn, with the credentials the config endpoint handed out.
    assert mine["selectedUrl"] == coturn.url, mine
