"""Client messages that are well-formed JSON but must be refused, or carried
exactly (issue 17 items 7 and 8): each answered as the contract says, with
the connection and the room carrying on."""

from __future__ import annotations

import pytest

from tests.hostile.clients import Attacker, depart


@pytest.mark.parametrize("value", [1, 0, "true", "false", 1.0, None, [], {}])
async def test_media_state_takes_only_booleans(attacker: Attacker, value: object) -> None:
    room = attacker.room()
    watcher = await attacker.join(room, sub="watcher")
    peer = await attacker.join(room, sub="sender")
    await watcher.expect("user-joined")
    await peer.send({"type": "media-state", "id": "m1", "payload": {"video": value}})
    if value is None:  # null is "not said": a valid media-state
        relayed = await watcher.expect("media-state")
        assert relayed["payload"] == {}
    else:
        error = await peer.expect("error")
        assert error["payload"]["code"] == "invalid_message"
        assert error["payload"]["ref"] == "m1"
        await watcher.assert_silent()
    # The connection carries on, and a valid state still goes through.
    await peer.send({"type": "media-state", "payload": {"video": True}})
    relayed = await watcher.expect("media-state")
    assert relayed["payload"] == {"video": True}
    await depart(peer)
    await depart(watcher)
