"""The pipeline's own RESP encoder (broker/redis_pipeline.pack_commands) writes
exactly what redis-py's Connection.pack_commands writes."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio.connection import Connection

from second_brain_database.webrtc.broker.redis_pipeline import pack_commands

arguments = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=300),  # encodable
    st.binary(max_size=300),
    st.integers(),
    st.floats(allow_nan=False),
)
# Command names are words (redis-py splits one holding whitespace, as in
# "SCRIPT LOAD"; ours are always passed split).
names = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=12)
commands = st.lists(st.tuples(names, st.lists(arguments, max_size=12)), min_size=1, max_size=6)


@given(commands)
def test_the_bytes_are_redis_pys(drawn: list[tuple[str, list[Any]]]) -> None:
    batch = [(name, *args) for name, args in drawn]
    assert pack_commands(batch) == b"".join(Connection().pack_commands(batch))


def test_a_relay_with_a_large_non_ascii_frame() -> None:
    frame = '{"type":"offer","payload":{"sdp":"' + "é" * 7000 + '"}}'
    batch = [("EVALSHA", "0" * 40, 2, "sbd:room:{r}:members", "sbd:room:{r}:ch", frame, 30000)]
    assert pack_commands(batch) == b"".join(Connection().pack_commands(batch))


@pytest.mark.parametrize("argument", [True, None, [1]])
def test_what_redis_cannot_take_is_refused(argument: Any) -> None:
    with pytest.raises(TypeError):
        pack_commands([("SET", "key", argument)])
