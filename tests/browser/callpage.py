"""Driving the demo call page (`GET /`) the way a user does, plus the few
reads of its state a test needs (tiles carry data-peer-id / data-state)."""

from __future__ import annotations

import subprocess
from typing import Any

from playwright.async_api import Page

from tests.servers import BIN_DIR, SbdServer

TIMEOUT_MS = 20_000
REMOTE_TILES = ".tile:not(.local)"
# The ICE username fragment of this page's side of its connection to a peer.
LOCAL_UFRAG = """id => window.sbd.client.peers.get(id).pc.currentLocalDescription.sdp
    .match(/a=ice-ufrag:(\\S+)/)[1]"""


def add_user(server: SbdServer, name: str, password: str) -> None:
    """`sbd users add NAME`, password on stdin, into that server's database."""
    subprocess.run(
        [str(BIN_DIR / "sbd"), "users", "add", name],
        input=f"{password}\n",
        env=server.env,
        check=True,
        capture_output=True,
        text=True,
    )


async def open_lobby(page: Page, server: SbdServer, room: str) -> None:
    await page.goto(f"{server.base_url}/?room={room}")
    await page.wait_for_selector("#join-form")


async def join_with_token(
    page: Page, server: SbdServer, token: str, room: str, *, media: bool = True
) -> str:
    """Paste a token, join; returns this page's peer id once the call is open.
    ``media=False`` unticks camera and microphone: a receive-only viewer."""
    await open_lobby(page, server, room)
    await page.click("#tab-token")
    await page.fill("#token", token)
    await page.set_checked("#with-media", media)
    await page.click("#join-btn")
    return await wait_open(page)


async def join_with_password(
    page: Page, server: SbdServer, username: str, password: str, room: str
) -> str:
    await open_lobby(page, server, room)
    await page.fill("#username", username)
    await page.fill("#password", password)
    await page.click("#join-btn")
    return await wait_open(page)


async def wait_open(page: Page) -> str:
    await page.wait_for_function(
        "() => window.sbd && window.sbd.client.status === 'open'", timeout=TIMEOUT_MS
    )
    peer_id: str = await page.evaluate("() => window.sbd.client.peerId")
    return peer_id


async def wait_connected(page: Page, peers: int) -> list[str]:
    """Wait until ``peers`` remote tiles show `connected`; returns their ids."""
    await page.wait_for_function(
        """n => [...document.querySelectorAll('.tile:not(.local)')]
                .filter(t => t.dataset.state === 'connected').length === n""",
        arg=peers,
        timeout=TIMEOUT_MS,
    )
    ids: list[str] = await page.eval_on_selector_all(
        REMOTE_TILES, "tiles => tiles.map(t => t.dataset.peerId)"
    )
    return ids


async def wait_remote_video_playing(page: Page, peers: int = 1) -> None:
    """Every one of ``peers`` remote <video>s has decoded frames and is playing."""
    await page.wait_for_function(
        """n => {
            const videos = [...document.querySelectorAll('.tile:not(.local) video')];
            return videos.length === n && videos.every(
                v => v.videoWidth > 0 && !v.paused && v.currentTime > 0);
        }""",
        arg=peers,
        timeout=TIMEOUT_MS,
    )


async def wait_video_of(page: Page, peer_id: str) -> None:
    """The <video> of that peer's tile has decoded frames and is playing."""
    await page.wait_for_function(
        """id => {
            const v = document.querySelector(`.tile[data-peer-id="${id}"] video`);
            return v && v.videoWidth > 0 && !v.paused && v.currentTime > 0;
        }""",
        arg=peer_id,
        timeout=TIMEOUT_MS,
    )


async def send_chat(page: Page, text: str) -> None:
    await page.fill("#chat-input", text)
    await page.press("#chat-input", "Enter")


async def wait_chat(page: Page, text: str) -> None:
    """A chat line from someone else (not this page's own echo) with ``text``."""
    await page.wait_for_function(
        """text => [...document.querySelectorAll('#chat-log li:not(.mine):not(.system) .text')]
                .some(el => el.textContent === text)""",
        arg=text,
        timeout=TIMEOUT_MS,
    )


# Candidate types of one peer connection, from getStats(): all gathered
# (local), all learnt from the other side (remote), the selected pair, and
# the TURN server and relayed port of its local candidate.
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
        selectedPort: selectedLocal?.port ?? null,
    };
}"""


async def candidates(page: Page, peer_id: str) -> dict[str, Any]:
    found: dict[str, Any] = await page.evaluate(CANDIDATES, peer_id)
    return found


async def go_online(page: Page, server: SbdServer, token: str) -> None:
    """Paste a token and press "Go online": the page's user socket is open
    and calls to its user ring it."""
    await open_lobby(page, server, "lobby")
    await page.click("#tab-token")
    await page.fill("#token", token)
    await page.click("#online-btn")
    await page.wait_for_function(
        "() => window.sbdCalls && window.sbdCalls.status === 'open'", timeout=TIMEOUT_MS
    )
