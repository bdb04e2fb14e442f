"""Calls (docs/protocol.md, "Calls: ringing a user"): user sockets, ringing,
the first answer winning, cancel, timeout, and every refusal, against real
`sbd serve` processes: one instance with the embedded broker, and two
instances sharing a real redis-server with the caller and the callee's
devices on different instances."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import SHARED_SERVER_ENV, SbdFactory
from tests.peers import Device, Peer, make_token
from tests.servers import RedisServer, SbdServer, two_instances

RING_TIMEOUT = 3.0
ENV = {**SHARED_SERVER_ENV, "SBD_CALL_RING_TIMEOUT": str(RING_TIMEOUT), "SBD_PRESENCE_TTL": "2"}


@dataclass
class Sides:
    """Where the caller and the callee's two devices connect."""

    caller: str
    callee_a: str
    callee_b: str


@pytest.fixture(scope="module")
def memory_server(artifacts_dir: Path) -> Iterator[SbdServer]:
    server = SbdServer(ENV, log_dir=artifacts_dir).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def asgi_server(artifacts_dir: Path) -> Iterator[SbdServer]:
    """Sessions on the plain ASGI path, as under any other ASGI server."""
    server = SbdServer(ENV, log_dir=artifacts_dir, args=("--ws", "websockets-sansio")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def redis_pair(
    redis_server: RedisServer, artifacts_dir: Path
) -> Iterator[tuple[SbdServer, SbdServer]]:
    with two_instances({**ENV, "SBD_REDIS_URL": redis_server.url}, artifacts_dir) as pair:
        yield pair


@pytest.fixture(params=["memory", "asgi", "redis-two-instances"])
def sides(request: pytest.FixtureRequest) -> Sides:
    if request.param in ("memory", "asgi"):
        url = request.getfixturevalue(f"{request.param}_server").ws_url
        return Sides(url, url, url)
    first, second = request.getfixturevalue("redis_pair")
    # The caller on one instance, the callee's devices on the other and on it.
    return Sides(first.ws_url, second.ws_url, first.ws_url)


def users() -> tuple[str, str]:
    """A fresh caller and callee per test: no call of another test rings them."""
    tag = uuid.uuid4().hex[:8]
    return f"alice-{tag}", f"bob-{tag}"


async def test_ready_is_the_first_frame(sides: Sides) -> None:
    _, bob = users()
    device = await Device.ready(sides.callee_a, bob)
    payload = device.welcome["payload"]
    assert payload["user_id"] == bob and payload["connection_id"]
    assert payload["server"]["version"] and "calls" in payload["server"]["features"]
    await device.send({"type": "ping"})
    await device.expect("pong")
    await device.send({"type": "leave"})
    assert (await device.expect_close())[0] == 1000


async def test_accept_rings_every_device_and_the_first_answer_wins(sides: Sides) -> None:
    alice, bob = users()
    # Bob's token lists no room: the ticket of the call is his way in.
    bob_token = make_token(bob, rooms=["elsewhere"])
    phone = await Device.ready(sides.callee_a, token=bob_token)
    laptop = await Device.ready(sides.callee_b, token=bob_token)
    caller = await Device.ready(sides.caller, alice)
    await caller.send(
        {
            "type": "call",
            "id": "c1",
            "payload": {"to_user": bob, "room_id": "call-42", "data": {"video": True}},
        }
    )
    ringing = await caller.expect_state("ringing")
    assert ringing["ref"] == "c1" and ringing["payload"]["devices"] == 2
    call_id = ringing["payload"]["call_id"]
    for device in (phone, laptop):
        incoming = await device.expect("incoming-call")
        assert incoming["from_user"] == alice
        assert incoming["payload"] == {
            "call_id": call_id,
            "room_id": "call-42",
            "name": alice,
            "data": {"video": True},
        }
    await phone.answer(call_id)
    accepted = (await phone.expect_state("accepted"))["payload"]
    assert accepted["room_id"] == "call-42" and accepted["ticket"]
    await laptop.expect_state("answered-elsewhere")
    assert (await caller.expect_state("accepted"))["payload"]["call_id"] == call_id
    # The ticket opens the call's room once, though Bob's token does not list it.
    peer = await Peer.connect(sides.callee_a, "call-42", None, query=f"ticket={accepted['ticket']}")
    assert (await peer.expect("welcome"))["payload"]["user_id"] == bob
    again = await Peer.connect(
        sides.callee_a, "call-42", None, query=f"ticket={accepted['ticket']}"
    )
    assert (await again.expect_close())[0] == 4003
    # The call is over: a late answer is unknown_call, and everyone carries on.
    await laptop.answer(call_id, ref="late")
    error = await laptop.expect("error")
    assert error["payload"]["code"] == "unknown_call" and error["payload"]["ref"] == "late"
    for device in (phone, laptop, caller):
        await device.send({"type": "ping"})
        await device.expect("pong")
    await peer.close()


async def test_decline(sides: Sides) -> None:
    alice, bob = users()
    phone = await Device.ready(sides.callee_a, bob)
    laptop = await Device.ready(sides.callee_b, bob)
    caller = await Device.ready(sides.caller, alice)
    call_id = await caller.call(bob, "room-d")
    await phone.expect("incoming-call")
    await laptop.expect("incoming-call")
    await laptop.answer(call_id, accept=False)
    assert "ticket" not in (await laptop.expect_state("declined"))["payload"]
    await phone.expect_state("answered-elsewhere")
    await caller.expect_state("declined")


async def test_cancel_reaches_every_device_and_ends_the_call(sides: Sides) -> None:
    alice, bob = users()
    phone = await Device.ready(sides.callee_a, bob)
    laptop = await Device.ready(sides.callee_b, bob)
    caller = await Device.ready(sides.caller, alice)
    call_id = await caller.call(bob, "room-c")
    await phone.expect("incoming-call")
    await laptop.expect("incoming-call")
    # Only the calling connection may cancel: the callee may not.
    await phone.send({"type": "call-cancel", "id": "x", "payload": {"call_id": call_id}})
    assert (await phone.expect("error"))["payload"]["code"] == "unknown_call"
    await caller.send({"type": "call-cancel", "payload": {"call_id": call_id}})
    await caller.expect_state("cancelled")
    await phone.expect_state("cancelled")
    await laptop.expect_state("cancelled")
    await phone.answer(call_id)
    assert (await phone.expect("error"))["payload"]["code"] == "unknown_call"
    await caller.send({"type": "call-cancel", "payload": {"call_id": call_id}})
    assert (await caller.expect("error"))["payload"]["code"] == "unknown_call"


async def test_no_answer_is_missed_on_both_sides(sides: Sides) -> None:
    alice, bob = users()
    phone = await Device.ready(sides.callee_a, bob)
    caller = await Device.ready(sides.caller, alice)
    await caller.call(bob, "room-m")
    await phone.expect("incoming-call")
    await phone.expect_state("missed", timeout=RING_TIMEOUT + 3)
    await caller.expect_state("missed", timeout=2)


async def test_a_device_that_connects_while_rung_gets_the_call_after_ready(
    sides: Sides,
) -> None:
    alice, bob = users()
    caller = await Device.ready(sides.caller, alice)
    ringing = await caller.call(bob, "room-w", data={"n": 1})
    # Nobody was there to ring (a phone asleep, woken by a push).
    woken = await Device.ready(sides.callee_b, bob)
    incoming = await woken.expect("incoming-call")
    assert incoming["payload"]["call_id"] == ringing
    await woken.assert_silent(0.3)  # once, not twice
    await woken.answer(ringing)
    await woken.expect_state("accepted")
    await caller.expect_state("accepted")


async def test_devices_counts_zero_when_nobody_listens(sides: Sides) -> None:
    alice, bob = users()
    caller = await Device.ready(sides.caller, alice)
    await caller.send({"type": "call", "id": "z", "payload": {"to_user": bob, "room_id": "r"}})
    assert (await caller.expect_state("ringing"))["payload"]["devices"] == 0


async def test_the_callers_connection_ending_cancels(sides: Sides) -> None:
    alice, bob = users()
    phone = await Device.ready(sides.callee_a, bob)
    caller = await Device.ready(sides.caller, alice)
    await caller.call(bob, "room-x")
    await phone.expect("incoming-call")
    await caller.close()
    await phone.expect_state("cancelled")


async def test_a_room_socket_calls_cancels_and_hears_the_answer(sides: Sides) -> None:
    alice, bob = users()
    phone = await Device.ready(sides.callee_a, bob)
    in_room = await Peer.join(sides.caller, f"lobby-{alice}", make_token(alice))
    await in_room.send(
        {"type": "call", "id": "r1", "payload": {"to_user": bob, "room_id": "room-r"}}
    )
    first = (await in_room.expect("call-state"))["payload"]["call_id"]
    await phone.expect("incoming-call")
    await in_room.send({"type": "call-cancel", "payload": {"call_id": first}})
    assert (await in_room.expect("call-state"))["payload"]["state"] == "cancelled"
    await phone.expect_state("cancelled")
    # A room socket does not answer calls.
    await in_room.send(
        {"type": "call-answer", "id": "a", "payload": {"call_id": first, "accept": True}}
    )
    assert (await in_room.expect("error"))["payload"]["code"] == "invalid_message"
    await in_room.send(
        {"type": "call", "id": "r2", "payload": {"to_user": bob, "room_id": "room-r"}}
    )
    second = (await in_room.expect("call-state"))["payload"]["call_id"]
    await phone.expect("incoming-call")
    await phone.answer(second)
    await phone.expect_state("accepted")
    accepted = await in_room.expect("call-state")
    assert accepted["payload"] == {"call_id": second, "state": "accepted"}
    # Leaving the room for good cancels what it still has ringing.
    await in_room.send(
        {"type": "call", "id": "r3", "payload": {"to_user": bob, "room_id": "room-r"}}
    )
    await in_room.expect("call-state")
    await phone.expect("incoming-call")
    await in_room.send({"type": "leave"})
    await phone.expect_state("cancelled")


@pytest.mark.parametrize(
    ("claims", "payload", "code"),
    [
        ({}, {"to_user": "SELF", "room_id": "r"}, "invalid_message"),
        ({"calls": ["carol"]}, {"to_user": "BOB", "room_id": "r"}, "forbidden"),
        ({"rooms": ["only-this"]}, {"to_user": "BOB", "room_id": "r"}, "forbidden"),
        ({}, {"to_user": "BOB", "room_id": "r", "data": "x" * 1100}, "invalid_message"),
        ({}, {"to_user": "BOB", "room_id": "bad room"}, "invalid_message"),
        ({}, {"to_user": "", "room_id": "r"}, "invalid_message"),
        ({}, {"to_user": "BOB", "room_id": "r", "extra": 1}, "invalid_message"),
    ],
    ids=["self", "calls-claim", "room-not-allowed", "data-too-big", "bad-room", "no-user", "extra"],
)
async def test_refused_calls_get_their_error_and_the_socket_carries_on(
    sides: Sides, claims: dict[str, object], payload: dict[str, object], code: str
) -> None:
    alice, bob = users()
    phone = await Device.ready(sides.callee_a, bob)
    caller = await Device.ready(sides.caller, token=make_token(alice, **claims))  # type: ignore[arg-type]
    named = {
        k: {"SELF": alice, "BOB": bob}.get(v, v) if isinstance(v, str) else v
        for k, v in payload.items()
    }
    await caller.send({"type": "call", "id": "bad", "payload": named})
    error = await caller.expect("error")
    assert error["payload"]["code"] == code and error["payload"]["ref"] == "bad", error
    await phone.assert_silent(0.3)  # nothing rang
    await caller.send({"type": "ping"})
    await caller.expect("pong")


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "call-answer", "payload": {"call_id": "nope", "accept": True}},
        {"type": "call-answer", "payload": {"call_id": "x" * 128, "accept": False}},
        {"type": "call-cancel", "payload": {"call_id": "{}\n\u0000"}},
    ],
)
async def test_unknown_calls(sides: Sides, frame: dict[str, object]) -> None:
    _, bob = users()
    device = await Device.ready(sides.callee_a, bob)
    await device.send({**frame, "id": "u"})
    error = await device.expect("error")
    assert error["payload"] == {
        "code": "unknown_call",
        "message": error["payload"]["message"],
        "ref": "u",
    }
    await device.send({"type": "ping"})
    await device.expect("pong")


async def test_only_the_callee_answers(sides: Sides) -> None:
    alice, bob = users()
    caller = await Device.ready(sides.caller, alice)
    other_caller_device = await Device.ready(sides.callee_a, alice)
    call_id = await caller.call(bob, "room-o")
    await other_caller_device.answer(call_id)
    assert (await other_caller_device.expect("error"))["payload"]["code"] == "unknown_call"
    mallory = await Device.ready(sides.callee_b, f"mallory-{bob}")
    await mallory.answer(call_id)
    assert (await mallory.expect("error"))["payload"]["code"] == "unknown_call"


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "offer", "to": "x", "payload": {"type": "offer", "sdp": "v=0"}},
        {"type": "kick", "payload": {"peer_id": "x"}},
        {"type": "incoming-call"},
        {"type": "call-answer", "payload": {"call_id": "c", "accept": "yes"}},
        {"type": "nope"},
    ],
)
async def test_user_socket_refuses_what_it_does_not_take(
    sides: Sides, frame: dict[str, object]
) -> None:
    _, bob = users()
    device = await Device.ready(sides.callee_a, bob)
    await device.send(frame)
    assert (await device.expect("error"))["payload"]["code"] == "invalid_message"
    await device.send(b"\x00binary")
    assert (await device.expect("error"))["payload"]["code"] == "invalid_message"
    await device.send({"type": "ping"})
    await device.expect("pong")


async def test_user_socket_token_rules(sides: Sides) -> None:
    for token in (None, "garbage", make_token("bob", ttl=-60)):
        device = await Device.open(sides.callee_a, token)
        assert (await device.expect_close())[0] == 4003


async def test_a_caller_has_at_most_the_stated_calls_ringing(sides: Sides) -> None:
    alice, _ = users()
    caller = await Device.ready(sides.caller, alice)
    for n in range(5):  # SBD_CALL_MAX_RINGING's default
        await caller.call(f"callee-{n}-{alice}", "room-f", ref=f"f{n}")
    await caller.send(
        {"type": "call", "id": "f5", "payload": {"to_user": "one-more", "room_id": "r"}}
    )
    error = await caller.expect("error")
    assert error["payload"]["code"] == "rate_limited" and error["payload"]["ref"] == "f5"
    await caller.send({"type": "ping"})
    await caller.expect("pong")


async def test_refresh_on_a_user_socket(sides: Sides) -> None:
    _, bob = users()
    device = await Device.ready(sides.callee_a, bob)
    await device.send({"type": "refresh", "id": "r", "payload": {"token": make_token("eve")}})
    error = await device.expect("error")
    assert error["payload"]["code"] == "forbidden" and error["payload"]["ref"] == "r"
    await device.send({"type": "refresh", "payload": {"token": make_token(bob, ttl=7200)}})
    await device.send({"type": "ping"})
    await device.expect("pong")  # the refresh itself answers nothing


async def test_calls_count_towards_the_rate_limit(sbd_factory: SbdFactory) -> None:
    server = sbd_factory({**ENV, "SBD_RATE_LIMIT_PER_S": "0.5", "SBD_RATE_LIMIT_BURST": "3"})
    alice, bob = users()
    caller = await Device.ready(server.ws_url, alice)
    for n in range(6):
        await caller.send(
            {"type": "call", "id": f"f{n}", "payload": {"to_user": f"{bob}-{n}", "room_id": "r"}}
        )
    answers = [await caller.recv() for _ in range(6)]
    assert [a["type"] for a in answers] == ["call-state"] * 3 + ["error"] * 3, answers
    assert {a["payload"]["code"] for a in answers[3:]} == {"rate_limited"}
    assert caller.ws.close_code is None  # refused, not closed


ACCEPT_RACE_ROUNDS = 50


async def test_accept_race_across_two_instances(
    redis_pair: tuple[SbdServer, SbdServer],
) -> None:
    """Two devices of the callee, on two instances, answer the same call at
    once, 50 times: exactly one ``accepted`` each time, and the other device
    hears ``answered-elsewhere``."""
    first, second = redis_pair
    alice, _ = users()
    caller = await Device.ready(first.ws_url, alice)
    wins = {"first": 0, "second": 0}
    for round_ in range(ACCEPT_RACE_ROUNDS):
        bob = f"racer-{round_}-{alice}"  # a callee per round: tickets are capped per user
        here = await Device.ready(first.ws_url, bob)
        there = await Device.ready(second.ws_url, bob)
        call_id = await caller.call(bob, "race-room", ref=f"r{round_}")
        await here.expect("incoming-call")
        await there.expect("incoming-call")
        await asyncio.gather(here.answer(call_id), there.answer(call_id))
        outcomes = []
        for device in (here, there):
            frames = [await device.recv()]
            if frames[0]["payload"].get("state") != "accepted":  # the loser hears twice
                frames.append(await device.recv())
            states = [f["payload"].get("state") for f in frames if f["type"] == "call-state"]
            errors = [f["payload"]["code"] for f in frames if f["type"] == "error"]
            outcomes.append((states, errors))
        accepted = [states for states, _ in outcomes if states == ["accepted"]]
        assert len(accepted) == 1, outcomes
        loser = next(o for o in outcomes if o[0] != ["accepted"])
        assert sorted(loser[0]) == ["answered-elsewhere"] and loser[1] == ["unknown_call"]
        wins["first" if outcomes[0][0] == ["accepted"] else "second"] += 1
        await caller.expect_state("accepted")
        await here.assert_silent(0.05)
        await there.assert_silent(0.05)
        await here.close()
        await there.close()
    print(f"accept race: {ACCEPT_RACE_ROUNDS} rounds, wins by instance {wins}")


async def test_ring_times_out_when_the_callers_instance_is_killed(
    sbd_factory: SbdFactory, redis_server: RedisServer
) -> None:
    env = {**ENV, "SBD_REDIS_URL": redis_server.url, "SBD_CALL_RING_TIMEOUT": "2"}
    doomed, survivor = sbd_factory(env), sbd_factory(env)
    alice, bob = users()
    caller = await Device.ready(doomed.ws_url, alice)
    phone = await Device.ready(survivor.ws_url, bob)
    call_id = await caller.call(bob, "room-k")
    await phone.expect("incoming-call")
    assert doomed.stop(signal.SIGKILL) == -signal.SIGKILL
    started = time.monotonic()
    # Not cancelled (nobody was left to cancel): missed, by the survivor.
    await phone.expect_state("missed", timeout=6)
    elapsed = time.monotonic() - started
    assert elapsed < 6
    print(f"caller's instance SIGKILLed: missed after {elapsed:.2f} s (ring timeout 2 s)")
    await phone.answer(call_id)
    assert (await phone.expect("error"))["payload"]["code"] == "unknown_call"


async def test_a_room_socket_opened_by_ticket_keeps_the_calls_claim(sides: Sides) -> None:
    alice, bob = users()
    token = make_token(alice, calls=["carol"])
    async with httpx.AsyncClient(base_url=sides.caller.replace("ws", "http", 1)) as http:
        answer = await http.post(
            "/api/v1/webrtc/ticket",
            json={"room_id": "ticketed"},
            headers={"Authorization": f"Bearer {token}"},
        )
    ticket = answer.json()["ticket"]
    peer = await Peer.connect(sides.caller, "ticketed", None, query=f"ticket={ticket}")
    await peer.expect("welcome")
    await peer.send({"type": "call", "id": "t", "payload": {"to_user": bob, "room_id": "r"}})
    assert (await peer.expect("error"))["payload"]["code"] == "forbidden"


async def test_user_ids_with_braces_ring_across_instances(sides: Sides) -> None:
    alice, bob = users()
    odd = f"{{{bob}}}:ch{{x"  # braces and a colon: a hash tag and key syntax of its own
    phone = await Device.ready(sides.callee_a, odd)
    caller = await Device.ready(sides.caller, f"{alice}}}{{")
    call_id = await caller.call(odd, "room-b")
    assert (await phone.expect("incoming-call"))["payload"]["call_id"] == call_id
    await phone.answer(call_id)
    await phone.expect_state("accepted")
    await caller.expect_state("accepted")


async def test_a_room_caller_away_for_a_resume_hears_the_answer_after_it(sides: Sides) -> None:
    alice, bob = users()
    phone = await Device.ready(sides.callee_a, bob)
    room = f"resume-{alice}"
    token = make_token(alice)
    caller = await Peer.join(sides.caller, room, token)
    await caller.send({"type": "call", "id": "r", "payload": {"to_user": bob, "room_id": "x"}})
    call_id = (await caller.expect("call-state"))["payload"]["call_id"]
    await phone.expect("incoming-call")
    caller.ws.transport.abort()  # a network drop: not for good, the call rings on
    await phone.assert_silent(0.5)
    await phone.answer(call_id)
    await phone.expect_state("accepted")
    resume = caller.welcome["payload"]["resume_token"]
    back = await Peer.connect(sides.callee_b, room, token, query=f"resume={resume}")
    await back.expect("welcome")
    assert (await back.expect("call-state"))["payload"] == {
        "call_id": call_id,
        "state": "accepted",
    }
