"""Client messages that are well-formed JSON but must be refused, or carried
exactly (issue 17 items 7 and 8): each answered as the contract says, with
the connection and the room carrying on."""

from __future__ import annotations

import orjson
import pytest

from second_brain_database.webrtc.schemas import AppMessage, parse_client_frame, relay_payload
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


# The payload text as a client sends it; it must arrive byte for byte.
EXACT_PAYLOADS = {
    "2^64": "18446744073709551616",
    "beyond 2^53": "9007199254740993",
    "huge integers": "[123456789012345678901234567890, -18446744073709551617]",
    "minus zero": "[-0, -0.0, 0e0, -0E+0]",
    "long decimals": "[0.1000000000000000055511151231257827021181583404541015625, 1.10]",
    "out of double range": '{"big": 1e400, "small": -1E-400, "neg": -1e400}',
    "non-BMP characters": '"😀 \\ud83d\\ude00 𝄞"',
    "escaped lone surrogates": '["\\ud83d", "\\udc00x"]',
    "escapes and spaces": '{ "a" : [ 1 , "\\u00e9\\/\\n\\"" ] ,\n "b":null }',
    "allowed nesting": "[" * 512 + "]" * 512,
    "scalars": "true",
}


@pytest.mark.parametrize("exact", EXACT_PAYLOADS.values(), ids=EXACT_PAYLOADS.keys())
@pytest.mark.parametrize("targeted", [False, True], ids=["broadcast", "targeted"])
async def test_app_payloads_arrive_byte_for_byte(
    attacker: Attacker, exact: str, targeted: bool
) -> None:
    room = attacker.room()
    receiver = await attacker.join(room, sub="receiver")
    sender = await attacker.join(room, sub="sender")
    await receiver.expect("user-joined")
    to = f'"{receiver.peer_id}"' if targeted else "null"
    await sender.send(f'{{"type":"app","id":"a1","to":{to},"payload":{exact}}}')
    relayed = await receiver.ws.recv()
    assert isinstance(relayed, str)
    assert relayed.startswith('{"type":"app","from":"')
    assert relayed.endswith(f'"to":{to},"payload":{exact}}}')
    await sender.assert_silent(0.1)  # no error for the sender
    await depart(sender)
    await depart(receiver)


async def test_nesting_past_the_limit_is_an_error_and_the_room_carries_on(
    attacker: Attacker,
) -> None:
    room = attacker.room()
    receiver = await attacker.join(room, sub="receiver")
    sender = await attacker.join(room, sub="sender")
    await receiver.expect("user-joined")
    await sender.send('{"type":"app","id":"deep","payload":' + "[" * 513 + "]" * 513 + "}")
    error = await sender.expect("error")
    assert error["payload"] == {
        "code": "invalid_message",
        "message": "payload is nested too deeply",
        "ref": "deep",
    }
    await receiver.assert_silent(0.1)
    await sender.send({"type": "app", "payload": {"still": "here"}})
    assert (await receiver.expect("app"))["payload"] == {"still": "here"}
    await depart(sender)
    await depart(receiver)


@pytest.mark.parametrize(
    "frame",
    [
        '{"type":"app","payload":NaN}',
        '{"type":"app","payload":[1,]}',
        '{"type":"app","payload":1e400,}',
        '{"type":"offer","to":null,"payload":1e400}',
        '{"type":"app","id":"\\ud83d","payload":1e400}',
        '{"type":"app","payload":"\\ud83d"} x',
    ],
)
async def test_what_only_looks_like_an_app_frame_is_invalid_json(
    attacker: Attacker, frame: str
) -> None:
    peer = await attacker.join(attacker.room(), sub="sender")
    await peer.send(frame)
    error = await peer.expect("error")
    assert error["payload"]["code"] == "invalid_message"
    assert error["payload"]["message"] == "frame is not valid JSON"
    await peer.send({"type": "ping"})
    await peer.expect("pong")
    await depart(peer)


@pytest.mark.parametrize(
    ("frame", "exact"),
    [
        # A later key that merely ends in `\"payload"` must not pass for the payload.
        ('{"type":"app","payload":1.10,"x\\"payload":1.1}', "1.10"),
        ('{"type":"app","payload":[1.0],"payload":{"a":1}}', '{"a":1}'),  # the last wins
        ('{"type":"app","pay\\u006coad":-0}', "-0"),
        ('{"payload":{"a":1} ,"type":"app" }', '{"a":1}'),
        ('{"type":"app"}', "null"),
    ],
)
def test_the_exact_payload_is_the_top_level_one(frame: str, exact: str) -> None:
    message = parse_client_frame(frame)
    assert isinstance(message, AppMessage)
    assert orjson.dumps(relay_payload(message)) == exact.encode()
