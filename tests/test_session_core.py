"""The sans-I/O session core (webrtc/session.py), without a server: inputs
in, typed actions out."""

from __future__ import annotations

import time
from collections.abc import Mapping

import orjson
import pytest
from prometheus_client import REGISTRY

from second_brain_database.auth.tokens import Principal
from second_brain_database.config import Settings
from second_brain_database.webrtc.actions import (
    AnswerCall,
    BarrierPassed,
    CancelCall,
    Close,
    Kick,
    Publish,
    Send,
    SetMedia,
    StartCall,
    VerifyRefresh,
)
from second_brain_database.webrtc.broker.control import Control, ControlKind
from second_brain_database.webrtc.broker.model import Member
from second_brain_database.webrtc.calls.model import CallerRoute
from second_brain_database.webrtc.calls.user_session import UserSession
from second_brain_database.webrtc.schemas import CloseCode
from second_brain_database.webrtc.session import (
    TOO_BIG,
    Session,
    SessionState,
    read_frame,
)

MAX = 65536


def make_session(role: str | None = None, burst: int = 400, expires_in: float = 3600) -> Session:
    settings = Settings(jwt_secret="x" * 32, rate_limit_per_s=1, rate_limit_burst=burst)
    principal = Principal("alice", "Alice", time.time() + expires_in, role=role)
    session = Session("room", Member("pa", "alice", "Alice"), principal, settings, 0.0)
    session.welcomed()
    return session


def feed(
    session: Session | UserSession, message: Mapping[str, object] | str | bytes
) -> list[object]:
    data = message if isinstance(message, (str, bytes)) else orjson.dumps(dict(message)).decode()
    return list(session.receive(read_frame(data, MAX), 1.0))


def error_code(action: object) -> str:
    assert isinstance(action, Send)
    frame = orjson.loads(action.frame)
    assert frame["type"] == "error"
    code: str = frame["payload"]["code"]
    return code


def test_states_from_joining_to_stopped() -> None:
    settings = Settings(jwt_secret="x" * 32)
    principal = Principal("alice", "Alice", time.time() + 60)
    session = Session("room", Member("pa", "alice", "Alice"), principal, settings, 0.0)
    assert session.state is SessionState.JOINING
    session.welcomed()
    assert session.state is SessionState.LIVE
    first = session.finish(CloseCode.NORMAL, "left")
    assert session.state is SessionState.ENDING
    assert session.finish(CloseCode.GOING_AWAY, "").code == CloseCode.NORMAL  # first wins
    assert first.reason == "left"
    assert session.stop() is True
    assert session.stop() is False
    assert session.state is SessionState.STOPPED


def test_offer_becomes_a_publish_stamped_with_the_sender() -> None:
    offer = {"type": "offer", "to": "pb", "id": "m1", "from": "forged",
             "payload": {"type": "offer", "sdp": "v=0"}}  # fmt: skip
    [action] = feed(make_session(), offer)
    assert isinstance(action, Publish)
    assert action.ref == "m1"
    assert action.envelope.to == "pb"
    assert action.envelope.exclude == "pa"
    frame = orjson.loads(action.envelope.frame)
    assert (frame["from"], frame["from_user"], frame["to"]) == ("pa", "alice", "pb")


def test_ping_is_answered_and_leave_closes_normally() -> None:
    session = make_session()
    [pong] = feed(session, {"type": "ping"})
    assert isinstance(pong, Send) and orjson.loads(pong.frame) == {"type": "pong"}
    [close] = feed(session, {"type": "leave"})
    assert close == Close(CloseCode.NORMAL, "left")
    assert session.state is SessionState.ENDING


def test_errors_do_not_end_the_session() -> None:
    session = make_session()
    assert error_code(feed(session, b"\x00binary")[0]) == "invalid_message"
    assert error_code(feed(session, "{not json")[0]) == "invalid_message"
    to_self = {"type": "app", "to": "pa", "payload": {}}
    assert error_code(feed(session, to_self)[0]) == "invalid_message"
    assert session.end is None


def test_too_big_closes_with_1009() -> None:
    session = make_session()
    assert read_frame("x" * (MAX + 1), MAX) is TOO_BIG
    assert session.receive(TOO_BIG, 1.0) == [Close(CloseCode.MESSAGE_TOO_BIG, "frame too large")]


def test_rate_limit_answers_then_closes() -> None:
    session = make_session(burst=1)
    assert isinstance(feed(session, {"type": "ping"})[0], Send)
    codes = [feed(session, {"type": "ping"})[0] for _ in range(25)]
    assert error_code(codes[0]) == "rate_limited"
    assert Close(CloseCode.RATE_LIMITED, "rate limit exceeded") in codes


def test_media_refresh_and_kick_ask_for_waiting_actions() -> None:
    host = make_session(role="host")
    media = {"type": "media-state", "payload": {"audio": True, "video": False, "screen": False}}
    assert isinstance(feed(host, media)[0], SetMedia)
    refresh = {"type": "refresh", "id": "r", "payload": {"token": "t"}}
    assert feed(host, refresh) == [VerifyRefresh("t", "r")]
    assert feed(host, {"type": "kick", "payload": {"peer_id": "pb"}}) == [Kick("pb", None)]
    assert error_code(feed(host, {"type": "kick", "payload": {"peer_id": "pa"}})[0]) == (
        "unknown_peer"
    )
    guest = make_session()
    assert error_code(feed(guest, {"type": "kick", "payload": {"peer_id": "pb"}})[0]) == (
        "forbidden"
    )


def test_refresh_outcomes() -> None:
    session = make_session()
    assert error_code(session.refreshed(None, "expired", "r")[0]) == "forbidden"
    other = Principal("mallory", "M", time.time() + 60)
    assert error_code(session.refreshed(other, "", "r")[0]) == "forbidden"
    fresh = Principal("alice", "Alice", time.time() + 7200)
    assert session.refreshed(fresh, "", "r") == []
    assert session.principal is fresh


def test_controls() -> None:
    session = make_session()
    mine = Control(ControlKind.BARRIER, session.owner)
    assert session.control(Control(ControlKind.BARRIER, "other")) == []
    assert session.control(Control(ControlKind.REPLACED, session.owner)) == []
    replaced = session.control(Control(ControlKind.REPLACED, "newer"))
    assert replaced == [Close(CloseCode.SESSION_REPLACED, "session resumed on another connection")]
    assert session.control(Control(ControlKind.KICK)) == []  # already ending
    assert session.control(mine) == [BarrierPassed()]  # a barrier still counts after the end
    kicked = make_session()
    assert kicked.control(Control(ControlKind.KICK))[0] == Close(
        CloseCode.UNAUTHORIZED, "removed from the room by a host"
    )


@pytest.mark.parametrize("control", [Control(ControlKind.KICK), Control(ControlKind.BARRIER, "o1"),
                                     Control(ControlKind.REPLACED, "o2")])  # fmt: skip
def test_control_encoding_round_trips(control: Control) -> None:
    assert Control.decode(control.encode()) == control
    assert Control.decode('{"type":"offer"}') is None


def test_timer_closes_on_expiry_and_idleness() -> None:
    expiring = make_session(expires_in=-1)
    assert expiring.timer_fired(0.0, time.time()) == [
        Close(CloseCode.UNAUTHORIZED, "token expired")
    ]
    idle = make_session()
    assert idle.timer_fired(1.0, time.time()) == []
    assert idle.next_check_in(1.0, time.time()) == pytest.approx(idle.idle_timeout - 1.0)
    [close] = idle.timer_fired(idle.idle_timeout + 1, time.time())
    assert isinstance(close, Close) and close.code == CloseCode.IDLE


# --- calls, sans I/O: the room session and the user socket's session -----------


def make_user_session(**claims: object) -> UserSession:
    settings = Settings(jwt_secret="x" * 32)
    principal = Principal("alice", "Alice", time.time() + 3600, **claims)  # type: ignore[arg-type]
    session = UserSession(principal, settings, 0.0)
    session.welcomed()
    return session


def call(to_user: str = "bob", room: str = "r", **extra: object) -> dict[str, object]:
    return {"type": "call", "id": "c", "payload": {"to_user": to_user, "room_id": room, **extra}}


def test_a_call_becomes_start_call_with_the_sessions_route() -> None:
    user = make_user_session()
    [start] = feed(user, call(data={"v": 1}))
    assert isinstance(start, StartCall)
    assert start.route == CallerRoute.user_socket(user.connection_id) and user.called
    assert start.request.data == {"v": 1} and start.ref == "c"
    room = make_session()
    [start] = feed(room, call())
    assert isinstance(start, StartCall) and start.route == CallerRoute.in_room("room", "pa")


@pytest.mark.parametrize(
    ("claims", "frame", "code"),
    [
        ({}, call("alice"), "invalid_message"),
        ({"calls": ("carol",)}, call("bob"), "forbidden"),
        ({"calls": ("*",)}, call("bob", room="x y"), "invalid_message"),
        ({"rooms": ("only",)}, call("bob"), "forbidden"),
        ({}, call(data="x" * 1100), "invalid_message"),
    ],
)
def test_refused_calls_start_nothing(
    claims: dict[str, object], frame: dict[str, object], code: str
) -> None:
    session = make_user_session(**claims)
    [refused] = feed(session, frame)
    assert error_code(refused) == code and not session.called


def test_what_each_socket_takes() -> None:
    user = make_user_session()
    answer = {"type": "call-answer", "payload": {"call_id": "k", "accept": True}}
    [answered] = feed(user, answer)
    assert isinstance(answered, AnswerCall) and answered.connection_id == user.connection_id
    [cancel] = feed(user, {"type": "call-cancel", "payload": {"call_id": "k"}})
    assert isinstance(cancel, CancelCall)
    offer = {"type": "offer", "to": "x", "payload": {"type": "offer", "sdp": "v=0"}}
    assert error_code(feed(user, offer)[0]) == "invalid_message"
    [pong] = feed(user, {"type": "ping"})
    assert isinstance(pong, Send) and "pong" in pong.frame
    [close] = feed(user, {"type": "leave"})
    assert isinstance(close, Close) and close.code == CloseCode.NORMAL
    # A room socket answers no call.
    assert error_code(feed(make_session(), answer)[0]) == "invalid_message"


def test_a_user_sessions_refresh_keeps_the_user() -> None:
    user = make_user_session()
    other = Principal("mallory", "M", time.time() + 60)
    assert error_code(user.refreshed(other, "", None)[0]) == "forbidden"
    fresh = Principal("alice", "Alice", time.time() + 7200)
    assert user.refreshed(fresh, "", None) == [] and user.principal is fresh


def test_call_setup_reports_are_counted_and_never_relayed() -> None:
    session = make_session()
    before = REGISTRY.get_sample_value(
        "sbd_call_setups_total", {"outcome": "connected", "candidate_type": "relay"}
    )
    report = {"outcome": "connected", "setup_ms": 850, "candidate_type": "relay"}
    assert feed(session, {"type": "call-setup", "payload": report}) == []
    after = REGISTRY.get_sample_value(
        "sbd_call_setups_total", {"outcome": "connected", "candidate_type": "relay"}
    )
    assert (after or 0) - (before or 0) == 1
    for bad in (
        {**report, "setup_ms": -1},
        {**report, "setup_ms": 10**9},
        {**report, "candidate_type": "carrier-pigeon"},
        {**report, "outcome": "maybe"},
        {**report, "room_id": "x"},  # nothing that names a room or a peer
    ):
        [answer] = feed(session, {"type": "call-setup", "payload": bad})
        assert error_code(answer) == "invalid_message"
