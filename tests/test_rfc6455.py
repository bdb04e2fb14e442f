"""The server's client-frame parser (webrtc/rfc6455.py), fed frames built by
the tests' own independent encoder (tests/rawws.py), split at every kind of
boundary. tests/test_conformance.py runs the same rules over real sockets."""

from __future__ import annotations

import itertools
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from second_brain_database.webrtc.rfc6455 import MAX_FRAGMENTS, ClientFrameParser
from tests.rawws import BINARY, CLOSE, CONT, PING, PONG, TEXT, build_frame

MAX_SIZE = 1000


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def on_message(self, data: str | bytes) -> None:
        self.events.append(("message", data))

    def on_ping(self, payload: bytes) -> None:
        self.events.append(("ping", payload))

    def on_pong(self, payload: bytes) -> None:
        self.events.append(("pong", payload))

    def on_close(self, code: int, reason: str, payload: bytes) -> None:
        self.events.append(("close", code, reason, payload))

    def on_violation(self, code: int, reason: str) -> None:
        self.events.append(("violation", code))


def parse(stream: bytes, cuts: list[int] | None = None) -> list[tuple[Any, ...]]:
    recorder = Recorder()
    parser = ClientFrameParser(recorder, MAX_SIZE, MAX_FRAGMENTS)
    edges = [0, *sorted(c for c in cuts or [] if 0 < c < len(stream)), len(stream)]
    for start, end in itertools.pairwise(edges):
        parser.feed(stream[start:end])
    return recorder.events


def fragmented(opcode: int, payload: bytes, parts: int) -> bytes:
    """``payload`` as ``parts`` frames (the first with ``opcode``, then CONT)."""
    size = max(1, -(-len(payload) // parts))
    chunks = [payload[i : i + size] for i in range(0, len(payload), size)] or [b""]
    return b"".join(
        build_frame(opcode if i == 0 else CONT, chunk, fin=i == len(chunks) - 1)
        for i, chunk in enumerate(chunks)
    )


messages = st.lists(
    st.one_of(
        st.tuples(st.just(TEXT), st.text(max_size=300), st.integers(1, 4)),
        st.tuples(st.just(BINARY), st.binary(max_size=300), st.integers(1, 4)),
        st.tuples(st.just(PING), st.binary(max_size=125), st.just(1)),
    ),
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(messages, st.lists(st.integers(0, 10_000), max_size=20))
def test_any_split_of_any_valid_stream_gives_the_same_events(
    sent: list[tuple[int, Any, int]], cuts: list[int]
) -> None:
    stream = b""
    expected: list[tuple[Any, ...]] = []
    for opcode, data, parts in sent:
        payload = data.encode() if isinstance(data, str) else data
        if opcode == PING:
            stream += build_frame(PING, payload)
            expected.append(("ping", payload))
        else:
            stream += fragmented(opcode, payload, parts)
            expected.append(("message", data))
    stream += build_frame(CLOSE, struct.pack("!H", 1000) + b"bye")
    expected.append(("close", 1000, "bye", struct.pack("!H", 1000) + b"bye"))
    assert parse(stream, cuts) == expected


def test_a_ping_between_fragments_is_answered_first_and_the_message_reassembled() -> None:
    stream = (
        build_frame(TEXT, b"hel", fin=False)
        + build_frame(PING, b"now")
        + build_frame(CONT, b"lo", fin=True)
    )
    assert parse(stream) == [("ping", b"now"), ("message", "hello")]


def test_text_split_inside_a_character_across_fragments() -> None:
    euro = "€".encode()
    stream = build_frame(TEXT, euro[:1], fin=False) + build_frame(CONT, euro[1:], fin=True)
    assert parse(stream) == [("message", "€")]


def test_pongs_are_reported_and_an_empty_close_is_1005() -> None:
    assert parse(build_frame(PONG, b"x") + build_frame(CLOSE)) == [
        ("pong", b"x"),
        ("close", 1005, "", b""),
    ]


@pytest.mark.parametrize(
    ("stream", "code"),
    [
        (build_frame(TEXT, b"x", rsv=4), 1002),
        (build_frame(TEXT, b"x", mask=False), 1002),
        (build_frame(3, b"x"), 1002),
        (build_frame(0xB, b""), 1002),
        (build_frame(PING, b"x", fin=False), 1002),
        (build_frame(PING, b"x" * 126), 1002),
        (build_frame(CONT, b"x"), 1002),
        (build_frame(TEXT, b"a", fin=False) + build_frame(TEXT, b"b"), 1002),
        (build_frame(TEXT, b"\xff"), 1007),
        (build_frame(TEXT, b"\xed\xa0\x80"), 1007),  # a surrogate
        (build_frame(CLOSE, b"\x03"), 1002),
        (build_frame(CLOSE, struct.pack("!H", 1005)), 1002),
        (build_frame(CLOSE, struct.pack("!H", 2999)), 1002),
        (build_frame(CLOSE, struct.pack("!H", 5000)), 1002),
        (build_frame(CLOSE, struct.pack("!H", 1000) + b"\xff"), 1007),
        (build_frame(BINARY, b"x" * (MAX_SIZE + 1)), 1009),
        (build_frame(TEXT, b"x" * 600, fin=False) + build_frame(CONT, b"x" * 401), 1009),
        (bytes([0x81, 0xFF]) + struct.pack("!Q", 1 << 62), 1009),  # header only
        (bytes([0x81, 0xFF]) + struct.pack("!Q", 1 << 63), 1002),
    ],
)
def test_each_violation_gets_its_close_code_and_ends_parsing(stream: bytes, code: int) -> None:
    after = build_frame(TEXT, b"never delivered")
    assert parse(stream + after) == [("violation", code)]


@pytest.mark.parametrize("code", [1000, 1001, 1003, 1007, 1011, 1014, 3000, 4999])
def test_sendable_close_codes_are_reported_and_nothing_after_them(code: int) -> None:
    close = struct.pack("!H", code) + b"reason"
    events = parse(build_frame(CLOSE, close) + build_frame(TEXT, b"late"))
    assert events == [("close", code, "reason", close)]


def parser_and_recorder(max_fragments: int = MAX_FRAGMENTS) -> tuple[ClientFrameParser, Recorder]:
    recorder = Recorder()
    return ClientFrameParser(recorder, MAX_SIZE, max_fragments), recorder


@pytest.mark.parametrize(
    "violation",
    [
        build_frame(TEXT, b"x", rsv=2),  # Autobahn 3.2
        build_frame(0x3),  # 4.1.3: a reserved opcode
        build_frame(0xB),  # 4.2.3
        build_frame(CONT, b"x"),  # 5.15: a continuation with no message
    ],
)
def test_messages_before_a_violation_in_the_same_read_are_delivered_first(
    violation: bytes,
) -> None:
    stream = build_frame(TEXT, b"Hello") + build_frame(BINARY, b"\x00") + violation
    assert parse(stream + build_frame(PING)) == [
        ("message", "Hello"),
        ("message", b"\x00"),
        ("violation", 1002),
    ]


INVALID_UTF8 = b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80"  # Autobahn 6.4


def test_invalid_utf8_in_a_fragment_fails_before_the_message_ends() -> None:
    parser, recorder = parser_and_recorder()
    parser.feed(build_frame(TEXT, b"\xce\xba", fin=False))
    assert recorder.events == []
    parser.feed(build_frame(CONT, b"\xf4\x90\x80\x80", fin=False))  # above U+10FFFF
    assert recorder.events == [("violation", 1007)]


@pytest.mark.parametrize("cut", [len(INVALID_UTF8) - 2, len(INVALID_UTF8) - 1])
def test_invalid_utf8_in_a_frame_still_arriving_fails_at_once(cut: int) -> None:
    """Autobahn 6.4.3/6.4.4: the frame's payload arrives in chops; the chop
    with the invalid bytes fails the connection before the frame is whole."""
    frame = build_frame(TEXT, INVALID_UTF8 + b"edited")
    parser, recorder = parser_and_recorder()
    parser.feed(frame[: 6 + 11])  # header, mask and the valid first characters
    assert recorder.events == []
    parser.feed(frame[6 + 11 : 6 + cut + 1])
    assert recorder.events == [("violation", 1007)]


@given(
    text=st.text(max_size=200),
    cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=8),
    parts=st.integers(min_value=1, max_value=5),
)
@settings(max_examples=200, deadline=None)
def test_valid_text_in_any_chops_and_fragments_arrives_whole(
    text: str, cuts: list[int], parts: int
) -> None:
    stream = fragmented(TEXT, text.encode(), parts)
    assert parse(stream, cuts) == [("message", text)]


def test_fragments_per_message_are_capped_with_1009() -> None:
    parser, recorder = parser_and_recorder(max_fragments=3)
    parser.feed(b"".join(build_frame(c, b"", fin=False) for c in (TEXT, CONT, CONT)))
    assert recorder.events == []
    parser.feed(build_frame(CONT, b"", fin=True))
    assert recorder.events == [("violation", 1009)]


def test_a_message_with_as_many_fragments_as_allowed_arrives() -> None:
    parser, recorder = parser_and_recorder(max_fragments=3)
    parser.feed(fragmented(TEXT, b"abc", 3))
    assert recorder.events == [("message", "abc")]


def test_one_byte_fragments_add_up_to_the_size_cap() -> None:
    parser, recorder = parser_and_recorder(max_fragments=10 * MAX_SIZE)
    parser.feed(fragmented(BINARY, b"x" * (MAX_SIZE + 1), MAX_SIZE + 1))
    assert recorder.events == [("violation", 1009)]
