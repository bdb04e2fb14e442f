"""Fixtures: real redis-server and `sbd serve` processes, started by the suite.

- ``redis_server``: the suite's own redis-server on a free port (session).
- ``server``: one instance, parametrized over both brokers (memory, redis);
  the contract tests add the plain ASGI path ("asgi") to these.
- ``cluster``: two instances sharing ``redis_server`` (session).
- ``sbd_factory``: start instances with custom settings (per test).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.servers import RedisServer, SbdServer, two_instances

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


SbdFactory = Callable[..., SbdServer]
# Short enough that tests can watch a resume window run out.
RESUME_TTL = 2.0
# Servers shared by many tests see one user and one address open hundreds of
# connections; the limits on those have tests of their own (test_abuse_limits).
SHARED_SERVER_ENV = {"SBD_MAX_CONNECTIONS_PER_USER": "0", "SBD_HANDSHAKE_RATE_PER_S": "0"}


@pytest.fixture
def sbd_factory(artifacts_dir: Path) -> Iterator[SbdFactory]:
    started: list[SbdServer] = []

    def start(
        env: dict[str, str] | None = None, wait_ready: bool = True, args: tuple[str, ...] = ()
    ) -> SbdServer:
        server = SbdServer(env, log_dir=artifacts_dir, args=args)
        started.append(server)
        return server.start(wait_ready=wait_ready)

    yield start
    for server in started:
        server.stop()


def start_shared_server(request: pytest.FixtureRequest, artifacts_dir: Path) -> Iterator[SbdServer]:
    """The ``server`` of ``request.param``: "memory" and "redis" are the
    brokers behind ``sbd serve``'s default (native) WebSocket path; "asgi" is
    the embedded broker with sessions on the plain ASGI path
    (``--ws websockets-sansio``), as under any other ASGI server."""
    env = {
        **SHARED_SERVER_ENV,
        "SBD_MAX_PEERS_PER_ROOM": "4",
        "SBD_MAX_MESSAGE_BYTES": "16384",
        "SBD_RESUME_TTL": str(RESUME_TTL),
    }
    if request.param == "redis":
        redis = request.getfixturevalue("redis_server")
        env["SBD_REDIS_URL"] = redis.url
    args = ("--ws", "websockets-sansio") if request.param == "asgi" else ()
    instance = SbdServer(env, log_dir=artifacts_dir, args=args).start()
    yield instance
    instance.stop()


@pytest.fixture(scope="session", params=["memory", "redis"])
def server(request: pytest.FixtureRequest, artifacts_dir: Path) -> Iterator[SbdServer]:
    yield from start_shared_server(request, artifacts_dir)


@pytest.fixture(scope="session")
def cluster(
    redis_server: RedisServer, artifacts_dir: Path
) -> Iterator[tuple[SbdServer, SbdServer]]:
    env = {
        **SHARED_SERVER_ENV,
        "SBD_REDIS_URL": redis_server.url,
        "SBD_PRESENCE_TTL": "2",
        "SBD_RESUME_TTL": str(RESUME_TTL),
    }
    with two_instances(env, artifacts_dir) as instances:
        yield instances
