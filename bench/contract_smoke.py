"""A short conformance check of a running server against PROTOCOL.md.

Not the contract test suite (tests/): a quick gate for the ASGI-server
comparison, so that a faster server that breaks the wire contract is seen to.
Returns a list of failures (empty when all checks pass).
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import websockets
from websockets.exceptions import ConnectionClosed

TIMEOUT = 5.0


async def _recv(ws: Any) -> dict[str, Any]:
    return dict(orjson.loads(await asyncio.wait_for(ws.recv(), TIMEOUT)))


async def _close_code(ws: Any) -> int | None:
    try:
        while True:
            await asyncio.wait_for(ws.recv(), TIMEOUT)
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd else None


async def _check(base: str, token: str) -> list[str]:
    bad: list[str] = []

    def expect(cond: bool, what: str) -> None:
        if not cond:
            bad.append(what)

    async with websockets.connect(f"{base}/ws/webrtc/smoke?token=not-a-jwt") as ws:
        expect(await _close_code(ws) == 4003, "invalid token closes with 4003 after accept")
    async with websockets.connect(f"{base}/ws/webrtc/bad%20room?token={token}") as ws:
        expect(await _close_code(ws) == 4400, "invalid room id closes with 4400")
    async with websockets.connect(f"{base}/ws/webrtc/smoke?token={token}", max_size=2**20) as a:
        wa = await _recv(a)
        expect(wa.get("type") == "welcome", "welcome is the first frame")
        async with websockets.connect(f"{base}/ws/webrtc/smoke?token={token}") as b:
            wb = await _recv(b)
            a_id, b_id = wa["payload"]["peer_id"], wb["payload"]["peer_id"]
            expect(
                [p["peer_id"] for p in wb["payload"]["participants"]] == [a_id],
                "welcome lists the peers already there",
            )
            joined = await _recv(a)
            expect(
                joined.get("type") == "user-joined" and joined["payload"]["peer_id"] == b_id,
                "user-joined reaches the others",
            )
            await a.send(
                orjson.dumps(
                    {
                        "type": "offer",
                        "to": b_id,
                        "from": "forged",
                        "payload": {"type": "offer", "sdp": "v=0"},
                    }
                ).decode()
            )
            got = await _recv(b)
            expect(
                got.get("type") == "offer"
                and got.get("from") == a_id
                and got.get("to") == b_id
                and got.get("payload", {}).get("sdp") == "v=0",
                "offer relayed with a server-stamped from",
            )
            await a.send("{not json")
            err = await _recv(a)
            expect(
                err.get("type") == "error" and err["payload"]["code"] == "invalid_message",
                "malformed JSON gets an invalid_message error",
            )
            await a.send(b"\x00binary")
            err = await _recv(a)
            expect(err.get("type") == "error", "a binary frame gets an error")
            await a.send(
                orjson.dumps(
                    {
                        "type": "offer",
                        "to": "nobody",
                        "id": "r1",
                        "payload": {"type": "offer", "sdp": "v=0"},
                    }
                ).decode()
            )
            err = await _recv(a)
            expect(
                err.get("payload", {}).get("code") == "unknown_peer"
                and err["payload"].get("ref") == "r1",
                "unknown_peer error echoes the id",
            )
            await a.send('{"type": "ping"}')
            expect((await _recv(a)).get("type") == "pong", "ping gets pong, connection still open")
            await b.send('{"type": "leave"}')
            expect(await _close_code(b) == 1000, "leave closes with 1000")
            left = await _recv(a)
            expect(left.get("type") == "user-left", "user-left reaches the others")
            await a.send("x" * 70_000)
            expect(await _close_code(a) == 1009, "a frame over 64 KiB closes with 1009")
    return bad


def check(base: str, token: str) -> list[str]:
    try:
        return asyncio.run(asyncio.wait_for(_check(base, token), 30))
    except Exception as exc:  # a server that hangs or drops the connection fails too
        return [f"smoke aborted: {type(exc).__name__}: {exc}"]
