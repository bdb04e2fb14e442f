"""IP privacy in Chromium through the repo's real coturn: a user whose token
says ``"ice": "relay"`` gathers relay candidates only, the call connects
through the relay, and the other side never sees one of that user's
addresses. The other user, without the claim, gathers host candidates as
usual (so the claim is what makes the difference)."""

from __future__ import annotations

from tests.browser.callpage import (
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
