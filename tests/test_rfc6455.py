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

from second_brain_database.webrtc.rfc6455 import ClientFrameParser
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
    parser = ClientFrameParser(recorder, MAX_SIZE)
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
