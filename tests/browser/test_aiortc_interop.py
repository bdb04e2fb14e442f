"""A browser (the demo page, Chromium) and an aiortc peer (the Python client)
call each other through two instances: media both ways, chat both ways."""

from __future__ import annotations

import asyncio

import pytest
from aiortc import MediaStreamTrack
from aiortc.mediastreams import VideoStreamTrack
from av import VideoFrame

from second_brain_database.webrtc.client import SignalingClient
from second_brain_database.webrtc.client.aiortc_peer import AiortcMesh
from tests.browser.callpage import (
    join_with_token,
    send_chat,
    wait_chat,
    wait_connected,
    wait_remote_video_playing,
)
from tests.browser.conftest import NewPage
from tests.peers import make_token
from tests.servers import SbdServer

Cluster = tuple[SbdServer, SbdServer]


async def first_video_frame(mesh: AiortcMesh) -> VideoFrame:
    """The first decoded frame of the first remote video track."""
    while True:
        _, track = await mesh.remote_tracks.get()
        if track.kind == "video":
            frame = await track.recv()
            assert isinstance(frame, VideoFrame)
            return frame


def camera() -> list[MediaStreamTrack]:
    return [VideoStreamTrack()]  # aiortc's test pattern: green 640x480 frames


@pytest.mark.parametrize("browser_first", [True, False], ids=["browser-first", "aiortc-first"])
async def test_browser_and_aiortc_call_each_other(
    cluster: Cluster, new_page: NewPage, browser_first: bool
) -> None:
    one, two = cluster
    room = f"interop-{'b' if browser_first else 'a'}"
    page = await new_page("human")
    robot = AiortcMesh(SignalingClient(two.base_url, room, make_token("robot")), tracks=camera)
    try:
        # Whoever joins second offers: both directions of the convention.
        if browser_first:
            human_id = await join_with_token(page, one, make_token("human"), room)
            await robot.start()
        else:
            await robot.start()
            human_id = await join_with_token(page, one, make_token("human"), room)

        [human] = await robot.wait_connected()
        assert human.peer_id == human_id
        assert await wait_connected(page, 1) == [robot.client.peer_id]

        await wait_remote_video_playing(page)  # aiortc's frames, decoded by Chromium
        frame = await asyncio.wait_for(first_video_frame(robot), 10)  # Chromium's fake camera
        assert frame.width > 0 and frame.height > 0

        await send_chat(page, "hello robot")
        peer_id, data = await asyncio.wait_for(robot.messages.get(), 5)
        assert (peer_id, data) == (human_id, '{"kind":"chat","text":"hello robot"}')
        robot.send('{"kind":"chat","text":"beep boop"}')
        await wait_chat(page, "beep boop")
    finally:
        await robot.close()
