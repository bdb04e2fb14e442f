"""The demo call page in Chromium against real `sbd serve` instances that share
one redis-server: video, chat, media-state, mesh, glare, reconnect, errors."""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
from pathlib import Path

from tests.browser.callpage import (
    LOCAL_UFRAG,
    TIMEOUT_MS,
    add_user,
    join_with_password,
    join_with_token,
    open_lobby,
    send_chat,
    wait_chat,
    wait_connected,
    wait_remote_video_playing,
    wait_video_of,
)
from tests.browser.conftest import NewPage
from tests.conftest import SbdFactory
from tests.peers import make_token
from tests.servers import SbdServer

Cluster = tuple[SbdServer, SbdServer]
DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "img" / "call-page.png"
_rooms = itertools.count()


def new_room() -> str:
    return f"browser-{next(_rooms)}"


async def test_two_instances_video_chat_and_media_state(
    cluster: Cluster, new_page: NewPage, artifacts_dir: Path
) -> None:
    one, two = cluster
    room = "weekly-sync"  # shows in the screenshot in docs/
    add_user(one, "alice", "alice-password")
    alice, bob = await new_page("alice"), await new_page("bob")

    # Alice signs in with a password on one instance; Bob pastes a token on the other.
    alice_id = await join_with_password(alice, one, "alice", "alice-password", room)
    bob_id = await join_with_token(bob, two, make_token("bob", name="Bob"), room)

    assert await wait_connected(alice, 1) == [bob_id]
    assert await wait_connected(bob, 1) == [alice_id]
    await wait_remote_video_playing(alice)
    await wait_remote_video_playing(bob)

    await send_chat(alice, "hello from alice")
    await wait_chat(bob, "hello from alice")
    await send_chat(bob, "hi alice, bob here")
    await wait_chat(alice, "hi alice, bob here")

    # Bob mutes: Alice's tile of Bob shows it (media-state through the server).
    bob_tile = f'.tile[data-peer-id="{bob_id}"]'
    assert await alice.is_hidden(f"{bob_tile} .muted-mic")
    await bob.click("#mic-btn")
    await alice.wait_for_selector(f"{bob_tile} .muted-mic", state="visible")
    assert await bob.get_attribute("#mic-btn", "aria-pressed") == "false"
    await alice.screenshot(path=artifacts_dir / "call-page.png")
    if os.environ.get("SBD_UPDATE_DOCS_SCREENSHOT") == "1":  # keep the tree clean otherwise
        shutil.copyfile(artifacts_dir / "call-page.png", DOCS_SCREENSHOT)

    await bob.click("#cam-btn")  # camera off: Alice shows Bob's avatar instead
    await alice.wait_for_selector(f"{bob_tile}.video-off")
    await bob.click("#cam-btn")
    await alice.wait_for_selector(f"{bob_tile}:not(.video-off)")

    # Leaving is seen at once by the other side (the page sends `leave`).
    await bob.click("#leave-btn")
    await alice.wait_for_selector(bob_tile, state="detached", timeout=5_000)

    # The SDK connected with single-use tickets: no token in any WebSocket URL.
    for instance in (one, two):
        log = instance.log().splitlines()
        handshakes = [line for line in log if f"/ws/webrtc/{room}?" in line]
        assert handshakes
        assert all("?ticket=" in line and "token=" not in line for line in handshakes)


async def test_three_pages_mesh(cluster: Cluster, new_page: NewPage) -> None:
    one, two = cluster
    room = new_room()
    pages = [await new_page(name) for name in ("ann", "ben", "cat")]
    ids = []
    for page, server, name in zip(pages, (one, two, one), ("ann", "ben", "cat"), strict=True):
        ids.append(await join_with_token(page, server, make_token(name), room))

    for page, own in zip(pages, ids, strict=True):
        connected = await wait_connected(page, 2)
        assert sorted(connected) == sorted(i for i in ids if i != own)
    for page in pages:
        await wait_remote_video_playing(page, 2)
    await send_chat(pages[2], "mesh works")
    await wait_chat(pages[0], "mesh works")
    await wait_chat(pages[1], "mesh works")


async def test_receive_only_viewers_see_the_camera(cluster: Cluster, new_page: NewPage) -> None:
    one, two = cluster
    room = new_room()
    early, camera, late = [await new_page(n) for n in ("early", "camera", "late")]
    # A viewer without camera answers the camera's offer; another one offers
    # to it (asking to receive); both get the picture.
    early_id = await join_with_token(early, one, make_token("early"), room, media=False)
    camera_id = await join_with_token(camera, two, make_token("camera"), room)
    late_id = await join_with_token(late, one, make_token("late"), room, media=False)
    assert sorted(await wait_connected(camera, 2)) == sorted([early_id, late_id])
    for viewer in (early, late):
        await wait_connected(viewer, 2)
        await wait_video_of(viewer, camera_id)
    # The viewers said so in media-state: the camera page shows their avatars.
    for viewer_id in (early_id, late_id):
        await camera.wait_for_selector(f'.tile.video-off[data-peer-id="{viewer_id}"]')


async def test_glare_both_sides_offer_at_once(cluster: Cluster, new_page: NewPage) -> None:
    one, two = cluster
    room = new_room()
    a, b = await new_page("a"), await new_page("b")
    a_id = await join_with_token(a, one, make_token("a"), room)
    b_id = await join_with_token(b, two, make_token("b"), room)
    await wait_connected(a, 1)
    await wait_connected(b, 1)
    pairs = ((a, b_id), (b, a_id))

    # Both restart ICE at the same moment: each sends an offer before the
    # other's arrives, which is glare. Perfect negotiation must resolve it.
    ufrags = {page: await page.evaluate(LOCAL_UFRAG, remote) for page, remote in pairs}
    restart = "() => window.sbd.client.restartIce()"
    await asyncio.gather(a.evaluate(restart), b.evaluate(restart))

    # The peer with the smaller id is polite: it rolls back its own offer;
    # the other ignores the colliding one.
    stats = "id => window.sbd.client.peers.get(id).stats"
    (polite, polite_id), (impolite, impolite_id) = sorted(
        ((a, a_id), (b, b_id)), key=lambda p: p[1]
    )
    await impolite.wait_for_function(f"id => ({stats})(id).ignoredOffers >= 1", arg=polite_id)
    await polite.wait_for_function(f"id => ({stats})(id).rollbacks >= 1", arg=impolite_id)
    for page, remote in pairs:
        # The signaling settles (no offer left hanging) with new ICE credentials.
        await page.wait_for_function(
            "id => window.sbd.client.peers.get(id).pc.signalingState === 'stable'", arg=remote
        )
        assert await page.evaluate(LOCAL_UFRAG, remote) != ufrags[page]
    await wait_connected(a, 1)
    await wait_connected(b, 1)
    await send_chat(a, "after glare")
    await wait_chat(b, "after glare")


async def test_signaling_drop_resumes_the_session(cluster: Cluster, new_page: NewPage) -> None:
    one, two = cluster
    room = new_room()
    a, b = await new_page("a"), await new_page("b")
    a_id = await join_with_token(a, one, make_token("a"), room)
    b_id = await join_with_token(b, two, make_token("b"), room)
    await wait_connected(a, 1)
    record = """() => {
        window.seen = [];
        for (const type of ['app', 'peer-left', 'peer-joined', 'open'])
            window.sbd.client.on(
                type, (d) => window.seen.push([type, d.payload ?? d.resumed ?? null]));
    }"""
    await a.evaluate(record)
    await b.evaluate(record)

    # The network drops B's WebSocket (not a leave); B says something while
    # it is down, and so does A. The SDK reconnects with resume=: same peer
    # id, same peer connection, both messages delivered, nobody left.
    await b.evaluate(
        """() => { window.sbd.client._ws.close(4000, 'simulated drop');
                   window.sbd.client.sendApp({ from: 'b', while: 'away' }); }"""
    )
    await b.wait_for_function("() => window.sbd.client.status === 'reconnecting'")
    await a.evaluate("() => window.sbd.client.sendApp({ from: 'a', while: 'b was away' })")
    await b.wait_for_function("() => window.sbd.client.status === 'open'", timeout=10_000)

    assert await b.evaluate("() => window.sbd.client.peerId") == b_id
    await b.wait_for_function("() => window.seen.some(([t]) => t === 'app')")
    await a.wait_for_function("() => window.seen.some(([t]) => t === 'app')")
    assert await b.evaluate("() => window.seen") == [
        ["open", True],
        ["app", {"from": "a", "while": "b was away"}],
    ]
    assert await a.evaluate("() => window.seen") == [["app", {"from": "b", "while": "away"}]]
    assert await wait_connected(a, 1) == [b_id]
    assert await wait_connected(b, 1) == [a_id]
    await send_chat(b, "back again")
    await wait_chat(a, "back again")


async def test_close_codes_reach_the_user(sbd_factory: SbdFactory, new_page: NewPage) -> None:
    server = sbd_factory({"SBD_MAX_PEERS_PER_ROOM": "1"})
    page = await new_page("intruder")
    await open_lobby(page, server, "tiny")
    await page.click("#tab-token")
    error = page.locator("#join-error")

    async def join_fails(token: str, why: str) -> None:
        await page.fill("#token", token)
        await page.click("#join-btn")
        await page.wait_for_function(
            "why => document.querySelector('#join-error').textContent.includes(why)", arg=why
        )
        assert await error.is_visible() and await page.is_visible("#lobby")

    # Signed with another key: refused at the ICE config fetch (HTTP 401).
    await join_fails(make_token("mallory", secret="x" * 40), "refused by the server")
    # Valid, but for another room: the socket closes with 4003.
    await join_fails(make_token("mallory", rooms=["elsewhere"]), "not valid for this room")
    assert await page.evaluate("() => window.sbd.client.status") == "closed"

    # The room holds one peer: the second is closed with 4008, not retried.
    first = await new_page("first")
    await join_with_token(first, server, make_token("first"), "tiny")
    await join_fails(make_token("second"), "The room is full.")
    code = await page.evaluate("() => window.sbd.client.status")
    assert code == "closed"


async def test_server_restart_reconnects_the_call(
    sbd_factory: SbdFactory, new_page: NewPage
) -> None:
    server = sbd_factory()
    a, b = await new_page("a"), await new_page("b")
    await join_with_token(a, server, make_token("a"), "restart")
    await join_with_token(b, server, make_token("b"), "restart")
    await wait_connected(a, 1)
    await a.evaluate(
        """() => { window.errors = [];
                   window.sbd.client.on('error', ({ error }) => window.errors.push(
                       { code: error.code, closeCode: error.closeCode, fatal: error.fatal })); }"""
    )

    # The server goes away (1001/1012) and comes back on the same port without
    # the sessions: the SDK retries with backoff, its resume is refused
    # (4003), it joins afresh and the two pages call each other again.
    server.stop()
    await a.wait_for_function("() => window.sbd.client.status === 'reconnecting'")
    server.start()
    for page in (a, b):
        await page.wait_for_function(
            "() => window.sbd.client.status === 'open'", timeout=TIMEOUT_MS
        )
    ids = [await page.evaluate("() => window.sbd.client.peerId") for page in (a, b)]
    assert await wait_connected(a, 1) == [ids[1]]
    assert await wait_connected(b, 1) == [ids[0]]
    await send_chat(a, "we are back")
    await wait_chat(b, "we are back")
    errors = await a.evaluate("() => window.errors")
    assert errors[0]["code"] == "server_restart" and errors[0]["closeCode"] in (1001, 1012)
    assert all(not e["fatal"] for e in errors)
