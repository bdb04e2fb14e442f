"""Call-setup telemetry end to end: two Chromium pages on two instances
connect, each SDK reports its peer connection's setup (`call-setup`), and
the servers' Prometheus metrics move."""

from __future__ import annotations

from tests.browser.callpage import join_with_token, wait_connected
from tests.browser.conftest import NewPage
from tests.peers import eventually, make_token
from tests.scrape import call_setups
from tests.servers import SbdServer


def setups(servers: tuple[SbdServer, ...]) -> tuple[float, float]:
    return call_setups([server.base_url for server in servers], "host")


async def test_two_pages_report_their_call_setup(
    cluster: tuple[SbdServer, SbdServer], new_page: NewPage
) -> None:
    one, two = cluster
    before = setups(cluster)
    alice, bob = await new_page("alice"), await new_page("bob")
    alice_id = await join_with_token(alice, one, make_token("alice"), "telemetry")
    bob_id = await join_with_token(bob, two, make_token("bob"), "telemetry")
    assert await wait_connected(alice, 1) == [bob_id]
    assert await wait_connected(bob, 1) == [alice_id]
    # Loopback without TURN or STUN: both sides select a host pair.
    await eventually(lambda: setups(cluster)[0] - before[0] == 2, 10)
    assert setups(cluster)[1] - before[1] == 2
