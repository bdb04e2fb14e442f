"""Property-based fuzzing of a live server (Redis broker, `sbd serve`).

Hypothesis throws arbitrary JSON, message-shaped objects with wrong types,
huge, deep and unicode-laden payloads, non-JSON text and binary frames at one
peer of a room, while two bystanders in the same room keep exchanging
numbered messages. For every frame:

- the server's answer is exactly what the protocol promises, judged by an
  oracle (the project's own parser plus the contract's rules): the same
  ``error`` the parser gives, a ``pong``, nothing for a valid relay, or a
  contract close code (1000 after ``leave``, 1009 past the size limit);
- no error text carries a trace or an exception name;

and throughout, the bystanders receive each other's messages in order with
no stall, and the server logs no traceback.

``SBD_FUZZ_EXAMPLES=20000`` makes a longer, randomized local run; the default
(1 000 examples, derandomized: CI runs the same inputs every time) keeps the
module under 10 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import time
import unicodedata
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter
from websockets.exceptions import ConnectionClosed

from second_brain_database.auth.tokens import InvalidToken, TokenService
from second_brain_database.config import Settings
from second_brain_database.webrtc.schemas import (
    SERVER_ONLY_TYPES,
    AnswerMessage,
    AppMessage,
    CallAnswerMessage,
    CallCancelMessage,
    ClientMessageType,
    ErrorCode,
    IceCandidateMessage,
    KickMessage,
    LeaveMessage,
    MediaStateMessage,
    OfferMessage,
    PingMessage,
    ProtocolError,
    RefreshMessage,
    RelayedMessage,
    ServerMessage,
    parse_client_frame,
    relay_payload,
)
from tests.peers import Peer, eventually
from tests.servers import TEST_SECRET, RedisServer, SbdServer

MAX_BYTES = 16384
EXAMPLES = int(os.environ.get("SBD_FUZZ_EXAMPLES", "1000"))
# CI runs the same inputs every time; a longer local run explores new ones.
DERANDOMIZE = "SBD_FUZZ_EXAMPLES" not in os.environ
ROOM = "fuzz-room"
SELF, BYSTANDER = "<self>", "<bystander>"
# Words that only a leaked exception would put into an error message.
LEAK_MARKERS = ("Traceback", 'File "', "Exception", "orjson", "pydantic_core", "site-packages")

server_frame: TypeAdapter[ServerMessage] = TypeAdapter(ServerMessage)


@pytest.fixture(scope="module")
def fuzz_server(redis_server: RedisServer, artifacts_dir: Path) -> Iterator[SbdServer]:
    env = {
        "SBD_REDIS_URL": redis_server.url,
        "SBD_MAX_MESSAGE_BYTES": str(MAX_BYTES),
        # The fuzzer sends as fast as it can: rate limits are tested elsewhere.
        "SBD_RATE_LIMIT_PER_S": "100000",
        "SBD_RATE_LIMIT_BURST": "100000",
        "SBD_HANDSHAKE_RATE_PER_S": "0",
        "SBD_RESUME_TTL": "0",
    }
    server = SbdServer(env, log_dir=artifacts_dir).start()
    yield server
    server.stop()


# --- the bystanders -------------------------------------------------------------


@dataclass
class Bystander:
    peer: Peer
    partner: str = ""
    received: list[int] = field(default_factory=list)
    stamps: list[float] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)

    async def read(self, fuzzer_ids: set[str]) -> None:
        with contextlib.suppress(ConnectionClosed, asyncio.CancelledError):
            while True:
                raw = await self.peer.ws.recv()
                try:
                    frame = orjson.loads(raw)
                    server_frame.validate_python(frame)
                except ValueError as exc:
                    self.bad.append(f"invalid frame {raw[:200]!r}: {exc}")
                    continue
                if frame["type"] == "app" and frame["from"] == self.partner:
                    self.received.append(frame["payload"]["seq"])
                    self.stamps.append(time.monotonic())
                elif frame["type"] in ("user-joined", "user-left"):
                    continue
                elif frame.get("from_user") != "fuzzer" or frame.get("from") not in fuzzer_ids:
                    self.bad.append(f"unexpected frame {raw[:200]!r}")

    async def talk(self, sent: list[int]) -> None:
        for seq in range(1_000_000):
            await self.peer.send({"type": "app", "to": self.partner, "payload": {"seq": seq}})
            sent.append(seq)
            await asyncio.sleep(0.01)


class Room:
    """The fuzzed room. A plain class, not a dataclass: hypothesis prints
    dataclasses field by field with every failing example."""

    def __init__(
        self,
        server: SbdServer,
        fuzzer: Peer,
        bystanders: tuple[Bystander, Bystander],
        sent: tuple[list[int], list[int]],
    ) -> None:
        self.server = server
        self.fuzzer = fuzzer
        self.fuzzer_ids = {fuzzer.peer_id}
        self.bystanders = bystanders
        self.sent = sent
        self.examples = 0
        self.first_example_at = 0.0
        self.last_example_at = 0.0
        self.closes: dict[int, int] = {}

    def __repr__(self) -> str:
        return f"Room({ROOM!r}, {self.examples} examples)"

    async def rejoin(self) -> None:
        self.fuzzer = await Peer.join(self.server.ws_url, ROOM, user="fuzzer")
        self.fuzzer_ids.add(self.fuzzer.peer_id)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def room(fuzz_server: SbdServer) -> AsyncIterator[Room]:
    sent: tuple[list[int], list[int]] = ([], [])
    b = Bystander(await Peer.join(fuzz_server.ws_url, ROOM, user="bystander-b"))
    c = Bystander(await Peer.join(fuzz_server.ws_url, ROOM, user="bystander-c"))
    b.partner, c.partner = c.peer.peer_id, b.peer.peer_id
    fuzzer = await Peer.join(fuzz_server.ws_url, ROOM, user="fuzzer")
    room = Room(fuzz_server, fuzzer, (b, c), sent)
    tasks = [
        asyncio.create_task(b.read(room.fuzzer_ids)),
        asyncio.create_task(c.read(room.fuzzer_ids)),
        asyncio.create_task(b.talk(sent[0])),
        asyncio.create_task(c.talk(sent[1])),
    ]
    await eventually(lambda: bool(b.received and c.received))  # talking before we start
    yield room
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


# --- what to throw --------------------------------------------------------------

text = st.text(st.characters(exclude_categories=["Cs"]), max_size=24)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text
)
json_values = st.recursive(
    scalars,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(text, kids, max_size=4),
    max_leaves=12,
)
targets = st.sampled_from([SELF, BYSTANDER, None, "nobody-here"]) | text | json_values
kinds = st.sampled_from([*ClientMessageType, *SERVER_ONLY_TYPES]) | text | json_values
sdp_payloads = st.fixed_dictionaries(
    {"type": st.sampled_from(["offer", "answer", "pranswer", "rollback"]) | json_values},
    optional={"sdp": st.sampled_from(["", "v=0\r\n"]) | text | json_values},
)
candidate_payloads = st.fixed_dictionaries(
    {"candidate": st.sampled_from(["", "candidate:1 1 udp 1 192.0.2.1 9 typ host"]) | json_values},
    optional={
        "sdpMid": text | json_values,
        "sdpMLineIndex": st.integers(min_value=-5, max_value=70000) | json_values,
        "usernameFragment": text,
        "extra": json_values,
    },
)
media_payloads = st.dictionaries(
    st.sampled_from(["audio", "video", "screen", "other"]), json_values | st.booleans(), max_size=3
)
payloads = (
    json_values
    | sdp_payloads
    | candidate_payloads
    | media_payloads
    | st.fixed_dictionaries({"token": text | json_values})
    | st.fixed_dictionaries({"peer_id": targets})
    | st.fixed_dictionaries({"call_id": text | json_values}, optional={"accept": json_values})
)
messages = st.fixed_dictionaries(
    {"type": kinds},
    optional={
        "to": targets,
        "payload": payloads,
        "id": text | json_values,
        "from": text,
        "from_user": text,
    },
)
wide_chars = st.sampled_from(["x", "é", "€", "😀", "\u202e", "\x00", "\ufeff"])


def _sized(args: tuple[int, str]) -> str:
    """An app frame of about ``size`` UTF-8 bytes, made of one character."""
    size, char = args
    count = max((size - 40) // len(char.encode()), 0)
    return json.dumps({"type": "app", "payload": char * count}, ensure_ascii=False)


def _deep(args: tuple[int, bool]) -> str:
    depth, objects = args
    opening, closing = ('{"a":', "}") if objects else ("[", "]")
    return '{"type":"app","payload":' + opening * depth + "1" + closing * depth + "}"


frames = st.one_of(
    messages,
    json_values,
    st.text(max_size=64).filter(lambda s: not _is_surrogate_text(s)),
    st.binary(max_size=64),
    st.tuples(st.integers(MAX_BYTES - 64, MAX_BYTES + 64), wide_chars).map(_sized),
    st.tuples(st.integers(1, 1100), st.booleans()).map(_deep),
)


def _is_surrogate_text(value: str) -> bool:
    return any(0xD800 <= ord(ch) <= 0xDFFF for ch in value)


# --- the oracle -----------------------------------------------------------------


def _substitute(value: Any, me: str, other: str) -> Any:
    if value == SELF:
        return me
    if value == BYSTANDER:
        return other
    if isinstance(value, dict):
        return {k: _substitute(v, me, other) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, me, other) for v in value]
    return value


@dataclass(frozen=True)
class Expected:
    replies: tuple[dict[str, Any], ...] = ()
    close: int | None = None


def oracle(frame: str | bytes, me: str, bystanders: set[str]) -> Expected:
    if isinstance(frame, bytes):
        return Expected((_error(ErrorCode.INVALID_MESSAGE),))
    if len(frame.encode()) > MAX_BYTES:
        return Expected(close=1009)
    try:
        message = parse_client_frame(frame)
    except ProtocolError as error:
        return Expected((orjson.loads(error.frame()),))
    if isinstance(message, PingMessage):
        return Expected(({"type": "pong"},))
    if isinstance(message, LeaveMessage):
        return Expected(close=1000)
    if isinstance(message, KickMessage | RefreshMessage):
        return Expected((_error(ErrorCode.FORBIDDEN),))
    if isinstance(message, CallAnswerMessage):  # a room socket answers no call
        return Expected((_error(ErrorCode.INVALID_MESSAGE),))
    if isinstance(message, CallCancelMessage):  # the fuzzer never started one
        return Expected((_error(ErrorCode.UNKNOWN_CALL),))
    to = getattr(message, "to", None)
    if to == me or not _relayable(message):
        return Expected((_error(ErrorCode.INVALID_MESSAGE),))
    if to is None or to in bystanders:
        return Expected()
    return Expected((_error(ErrorCode.UNKNOWN_PEER),))


def _relayable(message: RelayedMessage) -> bool:
    """Whether the server can serialize the payload for its receivers, as the
    relay does (an ``app`` payload is its exact text, already depth-checked)."""
    try:
        orjson.dumps({"payload": relay_payload(message)})  # one level down, as relayed
    except orjson.JSONEncodeError:
        return False
    return True


def _error(code: ErrorCode) -> dict[str, Any]:
    return {"type": "error", "payload": {"code": code.value}}


def _matches(expected: dict[str, Any], got: dict[str, Any]) -> bool:
    if expected["type"] != got["type"]:
        return False
    if expected["type"] != "error":
        return expected == got
    want, have = expected["payload"], got["payload"]
    return all(have.get(key) == value for key, value in want.items())


def assert_no_leak(frame: dict[str, Any]) -> None:
    if frame["type"] == "error":
        message = frame["payload"]["message"]
        assert not any(marker in message for marker in LEAK_MARKERS), message
        assert len(message) <= 200


# --- the properties -------------------------------------------------------------


async def throw(room: Room, frame: str | bytes) -> None:
    if room.fuzzer.ws.close_code is not None:  # an earlier example failed midway
        await room.rejoin()
    me = room.fuzzer.peer_id
    bystanders = {b.peer.peer_id for b in room.bystanders}
    if isinstance(frame, str):
        frame = _substitute_text(frame, me, next(iter(bystanders)))
    expected = oracle(frame, me, bystanders)
    room.examples += 1
    room.last_example_at = time.monotonic()
    room.first_example_at = room.first_example_at or room.last_example_at
    sentinel = f"sentinel-{room.examples}"
    replies: list[dict[str, Any]] = []
    try:
        await room.fuzzer.send(frame)
        if expected.close is None:
            await room.fuzzer.send({"type": "bogus", "id": sentinel})
        while True:
            reply = await room.fuzzer.recv()
            server_frame.validate_python(reply)
            assert_no_leak(reply)
            if reply["type"] == "error" and reply["payload"].get("ref") == sentinel:
                break
            if reply["type"] == "user-left" and reply["payload"]["peer_id"] in room.fuzzer_ids:
                continue  # an earlier fuzzer connection of ours, announced gone late
            replies.append(reply)
    except ConnectionClosed:
        code = room.fuzzer.ws.close_code
        assert code == expected.close, f"closed {code} after {frame!r:.300}"
        if code is not None:
            room.closes[code] = room.closes.get(code, 0) + 1
        await room.rejoin()
        return
    assert expected.close is None, f"still open after {frame!r:.300}"
    assert len(replies) == len(expected.replies), f"{frame!r:.300} -> {replies}"
    for want, got in zip(expected.replies, replies, strict=True):
        assert _matches(want, got), f"{frame!r:.300}: expected {want}, got {got}"


def _substitute_text(frame: str, me: str, other: str) -> str:
    if SELF not in frame and BYSTANDER not in frame:
        return frame
    try:
        value = json.loads(frame)
    except ValueError:
        return frame
    return json.dumps(_substitute(value, me, other), ensure_ascii=False)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=DERANDOMIZE,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(frame=frames)
async def test_every_frame_gets_its_contract_answer(
    room: Room, frame: dict[str, Any] | list[Any] | str | bytes | int | float | bool | None
) -> None:
    if isinstance(frame, str | bytes):
        await throw(room, frame)
    else:
        await throw(room, json.dumps(frame, ensure_ascii=False))


STALL_BOUND_S = 4.0


async def test_the_bystanders_kept_talking_and_the_server_kept_quiet(room: Room) -> None:
    """Runs after the fuzzing (same module, same room)."""
    assert room.examples >= EXAMPLES // 2
    await asyncio.sleep(0.3)  # let the last messages land
    for bystander, sent in zip(room.bystanders, reversed(room.sent), strict=True):
        assert not bystander.bad, bystander.bad[:5]
        assert len(bystander.received) >= 20, "the bystanders barely talked"
        # They talked before, during and after the fuzzing, never pausing long.
        assert bystander.stamps[0] < room.first_example_at
        assert bystander.stamps[-1] > room.last_example_at
        assert bystander.received == list(range(len(bystander.received))), "lost or reordered"
        assert len(sent) - len(bystander.received) <= 5
        # Stamps are taken in this process, which also runs hypothesis: on a
        # shared 2-core machine it may pause ~2 s itself. A blocked relay
        # would stop for good (the fuzzing lasts longer than this bound).
        gaps = [b - a for a, b in itertools.pairwise(bystander.stamps)]
        assert max(gaps) < STALL_BOUND_S, f"relay stalled for {max(gaps):.2f}s during fuzzing"
    log = room.server.log()
    for marker in ("Traceback", "Exception in ASGI application", '"level":"ERROR"', " ERROR "):
        assert marker not in log, f"server log has {marker!r}"


# --- message validation, in process (no server) ------------------------------------
#
# The same budget: SBD_FUZZ_EXAMPLES scales these too (`make fuzz`); by default
# a fifth of it each, derandomized, a few seconds in all.

VALIDATION_EXAMPLES = max(EXAMPLES // 5, 50)
validation_settings = settings(
    max_examples=VALIDATION_EXAMPLES,
    derandomize=DERANDOMIZE,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# Number literals as a client may write them, beyond what floats hold.
number_literals = (
    st.integers(min_value=-(2**200), max_value=2**200).map(str)
    | st.floats(allow_nan=False, allow_infinity=False).map(repr)
    | st.from_regex(r"-?(0|[1-9][0-9]{0,40})(\.[0-9]{1,60})?([eE][+-]?[0-9]{1,4})?", fullmatch=True)
)
string_literals = st.text(max_size=12).map(lambda t: json.dumps(t, ensure_ascii=False)) | st.text(
    max_size=12
).map(json.dumps)  # \uXXXX escapes, surrogate pairs escaped
literals = number_literals | string_literals | st.sampled_from(["true", "false", "null"])
spaces = st.sampled_from(["", " ", "\n", "\t ", "\r\n  "])


@st.composite
def json_texts(draw: st.DrawFn, depth: int = 0) -> str:
    """A JSON text with the literal forms and spacing a client may choose."""
    kind = draw(st.sampled_from(["literal"] * 3 + (["array", "object"] if depth < 6 else [])))
    if kind == "literal":
        return draw(literals)
    items = draw(st.lists(json_texts(depth + 1), max_size=4))
    pad = draw(spaces)
    if kind == "array":
        return "[" + pad + ("," + pad).join(items) + pad + "]"
    keys = draw(st.lists(string_literals, min_size=len(items), max_size=len(items)))
    members = [f"{key}{pad}:{pad}{item}" for key, item in zip(keys, items, strict=True)]
    return "{" + pad + ("," + pad).join(members) + pad + "}"


@validation_settings
@given(payload=json_texts(), to=st.sampled_from(['"peer-1"', "null", None]), pad=spaces)
def test_app_payload_text_is_relayed_exactly(payload: str, to: str | None, pad: str) -> None:
    members = ['"type":"app"', f'"payload":{pad}{payload}{pad}']
    if to is not None:
        members.insert(1, f'"to":{to}')
    message = parse_client_frame("{" + pad + ",".join(members) + "}")
    assert isinstance(message, AppMessage)
    assert orjson.dumps({"p": relay_payload(message)}) == b'{"p":' + payload.encode() + b"}"


@validation_settings
@given(frame=frames)
def test_validation_answers_every_frame_with_a_message_or_an_error(frame: Any) -> None:
    """Whatever arrives: a message the relay can serialize, or an ``error``
    frame that encodes, short and without internals."""
    text = frame if isinstance(frame, str | bytes) else json.dumps(frame, ensure_ascii=False)
    try:
        message = parse_client_frame(text)
    except ProtocolError as error:
        answer = orjson.loads(error.frame())
        assert answer["payload"]["code"] in {code.value for code in ErrorCode}
        assert_no_leak(answer)
        return
    if isinstance(message, RELAYED_MODELS):
        _relayable(message)  # never raises anything but the encoder's own error


RELAYED_MODELS = (OfferMessage, AnswerMessage, IceCandidateMessage, MediaStateMessage, AppMessage)
claim_text = st.text(max_size=20) | st.sampled_from(["\ud83d", "a\nb", "\x1b[31m", "x" * 256, ""])
claim_values = claim_text | st.integers() | st.floats(allow_nan=False) | st.booleans() | st.none()
TOKENS = TokenService(Settings(jwt_secret=TEST_SECRET))


@validation_settings
@given(
    sub=claim_values,
    name=claim_values,
    rooms=claim_values | st.lists(claim_text, max_size=3),
    exp=claim_values | st.just(int(time.time()) + 600),
)
def test_a_verified_token_holds_only_text_the_service_can_carry(
    sub: Any, name: Any, rooms: Any, exp: Any
) -> None:
    claims = {"sub": sub, "name": name, "rooms": rooms, "exp": exp}
    token = jwt.encode({k: v for k, v in claims.items() if v is not None}, TEST_SECRET)
    try:
        principal = TOKENS.verify(token)
    except InvalidToken as refused:
        assert refused.reason in {
            "invalid token",
            "invalid subject",
            "token expired",
            "invalid rooms claim",
            "missing token",
        }
        return
    # Everything downstream encodes these with orjson, logs and keys on them.
    orjson.dumps([principal.user_id, principal.name, principal.rooms])
    assert 0 < len(principal.user_id) <= 255
    forbidden = {"Cc", "Cs", "Zl", "Zp"}
    assert not any(unicodedata.category(char) in forbidden for char in principal.user_id)
    assert isinstance(exp, int | float) and not isinstance(exp, bool)
