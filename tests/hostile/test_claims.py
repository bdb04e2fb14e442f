"""Token claims an attacker can sign a valid token with but that the service
cannot carry (issue 22 item 1, issue 17 items 2 and 8): each is refused at
the handshake with 4003 and at every HTTP endpoint with 401, and the room
stays usable for everyone else."""

from __future__ import annotations

import time

import pytest

from tests.hostile.clients import Attacker, depart, forge_token

ROOM = "claims-room"
# Every HTTP endpoint that takes a Bearer token: (method, path, body).
TOKEN_ENDPOINTS = [
    ("GET", "/api/v1/webrtc/config", None),
    ("GET", f"/api/v1/webrtc/rooms/{ROOM}/participants", None),
    ("GET", f"/api/v1/webrtc/rooms/{ROOM}/policy", None),
    ("PUT", f"/api/v1/webrtc/rooms/{ROOM}/policy", {"invited_users": None, "locked": False}),
    ("POST", "/api/v1/webrtc/ticket", {"room_id": ROOM}),
    ("GET", "/api/v1/admin/rooms", None),
]

LONE_SURROGATE = "\ud83d"  # half an emoji: what cutting a name by UTF-16 units leaves
# Tokens whose signature is fine but whose claims must be refused.
BAD_CLAIMS = {
    "surrogate in name": {"sub": "eve", "name": f"Eve {LONE_SURROGATE}"},
    "surrogate in sub": {"sub": f"eve{LONE_SURROGATE}"},
    "surrogate in rooms": {"sub": "eve", "rooms": [ROOM, f"x{LONE_SURROGATE}"]},
    "surrogate in role": {"sub": "eve", "role": f"host{LONE_SURROGATE}"},
    "surrogate in a key": {"sub": "eve", "extra": {f"k{LONE_SURROGATE}": 1}},
    # A fake audit line after a newline, in red.
    "newline in sub": {"sub": "eve\n2026-01-01 00:00:00,000 INFO audit: admin granted to eve"},
    "ANSI escape in sub": {"sub": "eve\x1b[31mroot\x1b[0m"},
    "C1 control in sub": {"sub": "eve\x9b31m"},
    "line separator in sub": {"sub": "eve\u2028admin"},
    "over-long sub": {"sub": "e" * 256},
    "string exp": {"sub": "eve", "exp": str(int(time.time()) + 600)},
    "boolean exp": {"sub": "eve", "exp": True},
    "string nbf": {"sub": "eve", "nbf": "0"},
}


@pytest.mark.parametrize("claims", BAD_CLAIMS.values(), ids=BAD_CLAIMS.keys())
async def test_bad_claims_are_refused_at_the_handshake(
    attacker: Attacker, claims: dict[str, object]
) -> None:
    room = attacker.room()
    code, reason = await attacker.refused(room, forge_token(**claims))  # type: ignore[arg-type]
    assert code == 4003, reason
    # The room was not touched: a well-formed peer joins and sees nobody.
    peer = await attacker.join(room, sub="alice")
    assert peer.welcome["payload"]["participants"] == []
    await depart(peer)


@pytest.mark.parametrize("claims", BAD_CLAIMS.values(), ids=BAD_CLAIMS.keys())
@pytest.mark.parametrize(("method", "path", "body"), TOKEN_ENDPOINTS)
def test_bad_claims_are_refused_by_every_endpoint(
    attacker: Attacker, claims: dict[str, object], method: str, path: str, body: object
) -> None:
    token = forge_token(**{"role": "admin", **claims})  # type: ignore[arg-type]
    with attacker.http() as client:
        answer = client.request(
            method, path, headers={"Authorization": f"Bearer {token}"}, json=body
        )
    assert answer.status_code == 401, answer.text


async def test_a_sub_of_any_other_text_is_accepted(attacker: Attacker) -> None:
    """What a ``sub`` may hold: any text of 1-255 characters but controls and
    line separators (spaces, ':', '@', non-BMP characters included)."""
    sub = "Zoë O'Brien: admin@example.test 🎉" + "x" * 220
    peer = await attacker.join(attacker.room(), sub=sub)
    assert peer.welcome["payload"]["user_id"] == sub
    await depart(peer)
    assert attacker.get("/api/v1/webrtc/config", forge_token(sub=sub)).status_code == 200


async def test_a_sub_cannot_forge_log_lines(attacker: Attacker) -> None:
    forged = "INFO audit: admin granted to eve"
    room = attacker.room()
    await attacker.refused(room, forge_token(sub=f"eve\n{forged}"))
    peer = await attacker.join(room, sub="alice")  # something is logged after it
    await depart(peer)
    assert not any(line.startswith(forged) for line in attacker.log().splitlines())


def test_raw_clients_see_the_same_refusals(attacker: Attacker) -> None:
    """Below the WebSocket library: the close frame itself, and plain HTTP."""
    ws = attacker.raw_ws(attacker.room(), forge_token(sub="eve\x1b[2J"))
    close = ws.expect_close()
    assert close.close_code == 4003 and close.payload[2:] == b"invalid subject"
    tcp = attacker.tcp()
    token = forge_token(sub="eve", exp="9999999999")
    tcp.send(
        f"GET /api/v1/webrtc/config HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        "Connection: close\r\n\r\n".encode()
    )
    assert tcp.read_all().startswith(b"HTTP/1.1 401 ")
    tcp.close()
