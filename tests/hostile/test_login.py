"""Anonymous memory through login usernames (issue 22 item 4): a client
without an account cannot make the login throttle keep what it sends."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import httpx

from second_brain_database.limits.login import LoginThrottle
from tests.conftest import SbdFactory

MIB = 1 << 20


async def _retained_by(attempts: list[tuple[str, str]]) -> int:
    """Bytes the throttle still holds after ``attempts`` (address, username)."""
    throttle = LoginThrottle(per_minute=10)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for address, username in attempts:
            await throttle.allow(address, username)
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


async def test_a_throttled_address_adds_nothing_and_keys_are_fixed_size() -> None:
    # One address, 200 distinct 100 kB usernames: 20 MB of text offered.
    one_address = [("198.51.100.7", f"{n:06d}" + "x" * 100_000) for n in range(200)]
    assert await _retained_by(one_address) < 256 * 1024
    # 200 addresses, so every attempt passes the address bucket: each keeps a
    # bucket, but of a digest, not of its 100 kB name.
    many = [(f"198.51.100.{n}", f"{n:06d}" + "x" * 100_000) for n in range(200)]
    assert await _retained_by(many) < 512 * 1024


async def test_the_throttle_still_rations_guesses() -> None:
    throttle = LoginThrottle(per_minute=10)
    # One address against many usernames, then many addresses against one.
    assert [await throttle.allow("198.51.100.1", f"user{n}") for n in range(30)].count(True) == 10
    assert [await throttle.allow(f"198.51.100.{n + 2}", "alice") for n in range(30)].count(
        True
    ) == 10
    assert await throttle.allow("198.51.100.99", "ALICE") is False  # casefolded, same bucket


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_megabyte_usernames_do_not_grow_the_process(sbd_factory: SbdFactory) -> None:
    server = sbd_factory()
    assert server.process is not None
    with httpx.Client(base_url=server.base_url, timeout=10) as client:

        def attempt(n: int) -> int:
            form = {"username": f"{n:04d}" + "u" * (MIB - 64), "password": "wrong-password"}
            return client.post("/api/v1/auth/token", data=form).status_code

        attempt(0)  # the first request warms up whatever it allocates once
        before = _rss(server.process.pid)
        statuses = {attempt(n) for n in range(1, 41)}
        grown = _rss(server.process.pid) - before
    assert statuses <= {401, 413, 429}
    # 40 MiB of usernames were offered; the old throttle kept every one (+54 MiB).
    assert grown < 12 * MIB, f"RSS grew by {grown / MIB:.1f} MiB"
    # A normal login attempt is still answered as usual.
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        answer = client.post("/api/v1/auth/token", data={"username": "x", "password": "y"})
    assert answer.status_code == 401
