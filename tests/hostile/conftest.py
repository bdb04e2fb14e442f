"""The target of the hostile tests: one real `sbd serve` (embedded broker,
text logs so that forged lines would show, TURN configured), shared by the
module's tests; ``redis_target`` is the same with a Redis broker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import SHARED_SERVER_ENV
from tests.hostile.clients import Attacker
from tests.servers import RedisServer, SbdServer

TURN_SECRET = "hostile-turn-secret"
TARGET_ENV = {
    **SHARED_SERVER_ENV,
    "SBD_LOG_FORMAT": "text",
    "SBD_TURN_URLS": "turn:turn.example.test:3478",
    "SBD_TURN_SECRET": TURN_SECRET,
    "SBD_MAX_PEERS_PER_ROOM": "4",
}


@pytest.fixture(scope="module", params=["memory", "redis"])
def target(request: pytest.FixtureRequest, artifacts_dir: Path) -> Iterator[SbdServer]:
    env = dict(TARGET_ENV)
    if request.param == "redis":
        redis: RedisServer = request.getfixturevalue("redis_server")
        env["SBD_REDIS_URL"] = redis.url
    server = SbdServer(env, log_dir=artifacts_dir).start()
    yield server
    server.stop()


@pytest.fixture
def attacker(target: SbdServer) -> Attacker:
    return Attacker(target)
