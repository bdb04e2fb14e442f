"""Ringing a user from the call page, in Chromium, across two `sbd serve`
instances sharing one redis-server: every page of the callee rings, the one
that accepts joins the caller in the call's room with video, the others stop
ringing."""

from __future__ import annotations

import itertools
from pathlib import Path

from tests.browser.callpage import (
    go_online,
    wait_connected,
    wait_open,
    wait_remote_video_playing,
)
from tests.browser.conftest import NewPage
from tests.peers import make_token
from tests.servers import SbdServer

DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "img" / "incoming-call.png"
_users = itertools.count()


async def test_a_call_rings_every_page_of_the_user_and_the_accepted_one_connects(
    cluster: tuple[SbdServer, SbdServer], new_page: NewPage, artifacts_dir: Path
) -> None:
    one, two = cluster
    tag = next(_users)
    caller, callee = f"alice-{tag}", f"bob-{tag}"
    alice = await new_page("alice")
    laptop, phone = await new_page("bob-laptop"), await new_page("bob-phone")
    await go_online(alice, one, make_token(caller, name="Alice"))
    await go_online(laptop, two, make_token(callee, name="Bob"))
    await go_online(phone, one, make_token(callee, name="Bob"))

    await alice.fill("#callee", callee)
    await alice.click("#call-btn")
    for page in (laptop, phone):
        await page.wait_for_selector("#incoming:not([hidden])")
        assert await page.text_content("#incoming-from") == "Alice"
    await laptop.screenshot(path=str(artifacts_dir / "incoming-call.png"))
    if DOCS_SCREENSHOT.parent.is_dir():
        await laptop.screenshot(path=str(DOCS_SCREENSHOT))

    await laptop.click("#accept-call")
    # The phone stops ringing: the call was answered on the laptop.
    await phone.wait_for_selector("#incoming", state="hidden")
    assert "answered elsewhere" in (await phone.text_content("#calls-status") or "")

    # The laptop joined the call's room with its ticket, Alice with her token.
    bob_id, alice_id = await wait_open(laptop), await wait_open(alice)
    assert await alice.evaluate("() => window.sbd.client.room") == await laptop.evaluate(
        "() => window.sbd.client.room"
    )
    assert await wait_connected(alice, 1) == [bob_id]
    assert await wait_connected(laptop, 1) == [alice_id]
    await wait_remote_video_playing(alice)
    await wait_remote_video_playing(laptop)
