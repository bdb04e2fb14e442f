"""The operator commands, run as an operator runs them: `sbd check` against a
real redis-server and coturn, `sbd rooms|room|kick|notice|close-room`
against running instances."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
from collections.abc import Iterator

import pytest

from tests.edge import Coturn
from tests.peers import Peer
from tests.servers import BIN_DIR, TEST_SECRET, RedisServer, SbdServer, free_port

TURN_SECRET = "cli-check-turn-secret"
Cluster = tuple[SbdServer, SbdServer]
_rooms = itertools.count()


def new_room() -> str:
    return f"cli-{next(_rooms)}"


@pytest.fixture(scope="module")
def coturn() -> Iterator[Coturn]:
    server = Coturn(TURN_SECRET).start()
    yield server
    server.stop()


def sbd(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`sbd ARGS` with only these SBD_* settings (and no .env of the developer's)."""
    base = {k: v for k, v in SbdServer().env.items() if not k.startswith("SBD_")}
    return subprocess.run(
        [str(BIN_DIR / "sbd"), *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd="/",
    )


def lines_of(result: subprocess.CompletedProcess[str]) -> dict[str, list[str]]:
    """check output, by topic: {"redis": ["ok ..."], ...}."""
    topics: dict[str, list[str]] = {}
    for line in result.stdout.splitlines()[:-1]:
        status, topic, _ = line.split(maxsplit=2)
        topics.setdefault(topic, []).append(f"{status} {line.split(maxsplit=2)[2]}")
    return topics


def good_env(redis_server: RedisServer, coturn: Coturn) -> dict[str, str]:
    return {
        "SBD_JWT_SECRET": TEST_SECRET,
        "SBD_REDIS_URL": redis_server.url,
        "SBD_TURN_URLS": coturn.url,
        "SBD_TURN_SECRET": TURN_SECRET,
        "SBD_STUN_URLS": "stun:stun.example.org:3478",
        "SBD_ALLOWED_ORIGINS": "https://app.example.org",
    }


def test_check_passes_on_a_good_configuration(redis_server: RedisServer, coturn: Coturn) -> None:
    result = sbd("check", env=good_env(redis_server, coturn))
    assert result.returncode == 0, result.stdout + result.stderr
    topics = lines_of(result)
    assert topics["jwt"] == [f"ok HS256; shared key of {len(TEST_SECRET)} bytes"]
    assert topics["redis"][0].startswith(f"ok {redis_server.url}: PONG in ")
    assert topics["turn"] == [
        f"ok {coturn.url}: allocated a relay with a credential from SBD_TURN_SECRET "
        f"(realm {Coturn.REALM})"
    ]
    assert result.stdout.splitlines()[-1] == "all checks passed"


def test_check_names_each_problem(redis_server: RedisServer, coturn: Coturn) -> None:
    env = {
        **good_env(redis_server, coturn),
        "SBD_REDIS_URL": f"redis://:hunter2@127.0.0.1:{free_port()}/0",
        "SBD_TURN_SECRET": "not-what-coturn-has",
        "SBD_JWT_SECRET": "short",
        "SBD_ALLOWED_ORIGINS": "",
    }
    result = sbd("check", env=env)
    assert result.returncode == 1
    topics = lines_of(result)
    assert topics["jwt"] == ["FAIL SBD_JWT_SECRET is shorter than 32 bytes"]
    [redis_line] = topics["redis"]
    assert redis_line.startswith("FAIL redis://:***@127.0.0.1:") and "unreachable" in redis_line
    assert "hunter2" not in result.stdout
    [turn_line] = topics["turn"]
    assert turn_line.startswith(f"FAIL {coturn.url}: allocation refused: 401")
    assert "static-auth-secret the same as SBD_TURN_SECRET" in turn_line
    assert topics["origins"][0].startswith("warn SBD_ALLOWED_ORIGINS is unset")
    assert result.stdout.splitlines()[-1] == "3 failed, 1 warnings"


def test_check_reports_invalid_settings(redis_server: RedisServer, coturn: Coturn) -> None:
    env = {**good_env(redis_server, coturn), "SBD_MAX_PEERS_PER_ROOM": "0"}
    result = sbd("check", env=env)
    assert result.returncode == 1
    assert result.stdout.startswith("FAIL  settings  SBD_MAX_PEERS_PER_ROOM: ")


def test_check_without_probing_turn(redis_server: RedisServer) -> None:
    env = {
        "SBD_JWT_SECRET": TEST_SECRET,
        "SBD_TURN_URLS": "turn:turn.example.org:3478?transport=udp,turns:turn.example.org",
        "SBD_TURN_SECRET": "x",
    }
    result = sbd("check", "--no-probe-turn", env=env)
    topics = lines_of(result)
    assert topics["turn"] == [
        "ok turn:turn.example.org:3478?transport=udp: well formed (not probed)",
        "ok turns:turn.example.org: well formed (not probed)",
    ]
    assert topics["redis"] == ["ok not configured: embedded broker, one instance (no --workers)"]
    assert result.returncode == 0


async def test_rooms_room_notice_kick_and_close_room(cluster: Cluster) -> None:
    one, two = cluster
    env = {"SBD_JWT_SECRET": TEST_SECRET, "SBD_ADMIN_URL": one.base_url}
    room = new_room()
    alice = await Peer.join(one.ws_url, room, user="alice")
    bob = await Peer.join(two.ws_url, room, user="bob")
    carol = await Peer.join(two.ws_url, room, user="carol")

    async def run(*args: str) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(sbd, *args, env=env)

    rooms = await run("rooms")
    assert rooms.returncode == 0, rooms.stderr
    lines = rooms.stdout.splitlines()
    assert lines[0].split() == ["ROOM", "PEERS"]
    assert [room, "3"] in [line.split() for line in lines]

    shown = await run("room", room)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == f"room {room}: 3 peers"
    assert lines[1].split() == ["PEER", "USER", "NAME", "MEDIA"]
    assert {tuple(line.split()[:2]) for line in lines[2:]} == {
        (alice.peer_id, "alice"),
        (bob.peer_id, "bob"),
        (carol.peer_id, "carol"),
    }

    notice = await run("notice", room, "back in five")
    assert notice.stdout.strip() == f"notice sent to 3 peers in {room}"
    for peer, joins in ((alice, 2), (bob, 1), (carol, 0)):
        for _ in range(joins):
            await peer.expect("user-joined")
        assert (await peer.expect("notice"))["payload"] == {
            "message": "back in five",
            "level": "info",
        }

    kicked = await run("kick", room, bob.peer_id)
    assert kicked.stdout.strip() == f"kicked {bob.peer_id} from {room}"
    assert (await bob.expect_close())[0] == 4003
    again = await run("kick", room, bob.peer_id)
    assert again.returncode == 1
    assert again.stderr.strip() == f"sbd kick: 404: no peer {bob.peer_id} in room {room}"

    closed = await run("close-room", room)
    assert closed.stdout.strip() == f"closed {room}: kicked 2 peers"
    assert (await alice.expect("user-left"))["payload"]["peer_id"] == bob.peer_id
    for peer in (alice, carol):
        assert (await peer.expect_close())[0] == 4003

    missing = await run("room", room)
    assert (missing.returncode, missing.stderr.split(":")[1].strip()) == (1, "404")
    # A room id may begin with "-"; after "--" it is an argument, not an option.
    dashed = await run("room", "--", f"-{room}")
    assert (dashed.returncode, dashed.stderr.split(":")[1].strip()) == (1, "404")


def test_admin_commands_need_a_way_to_sign_and_a_server() -> None:
    unsigned = sbd("rooms", env={})
    assert unsigned.returncode == 2
    assert "pass --token, set SBD_ADMIN_TOKEN or SBD_JWT_SECRET" in unsigned.stderr
    port = free_port()
    nobody = sbd("rooms", "--url", f"http://127.0.0.1:{port}", env={"SBD_JWT_SECRET": TEST_SECRET})
    assert nobody.returncode == 1
    assert nobody.stderr.startswith(f"sbd rooms: cannot reach http://127.0.0.1:{port}")
