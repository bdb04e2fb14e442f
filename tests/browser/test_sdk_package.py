"""The npm package in Chromium, as an application bundles it: a page that
imports the bare name `@second-brain-database/signaling` (an import map
resolves it through the installed package.json's `exports`, as a bundler
does) makes a call with the packed files alone."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

from playwright.async_api import Page, Request

from tests.browser.callpage import TIMEOUT_MS
from tests.browser.conftest import NewPage, package_file_server
from tests.peers import make_token
from tests.sdk_package import PACKAGE_NAME
from tests.servers import SbdServer

Cluster = tuple[SbdServer, SbdServer]
PACKAGE_PATH = "/npm-app/node_modules/"

JOIN = """async ([token, room]) => {
    const { SignalingClient } = window.sdk;
    const camera = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
    const client = new SignalingClient({ token, room, localStream: camera });
    window.sbd = { client };  // the new_page fixture leaves through it
    window.received = [];
    client.on("data", ({ data }) => window.received.push(data));
    const opened = await client.join();
    return opened.peerId;
}"""
CONNECTED = """() => [...window.sbd.client.peers.values()].some(
    (p) => p.connectionState === "connected" && p.channel?.readyState === "open"
        && p.stream.getVideoTracks().length > 0)"""


def app_page(package: Path) -> str:
    """The application's page: an import map from the bare package name to
    the module its package.json exports."""
    entry = json.loads((package / "package.json").read_text())["exports"]["."]["default"]
    imports = {PACKAGE_NAME: PACKAGE_PATH + entry.removeprefix("./")}
    return f"""<!doctype html>
<script type="importmap">{json.dumps({"imports": imports})}</script>
<script type="module">
  import * as sdk from "{PACKAGE_NAME}";
  window.sdk = sdk;
</script>"""


async def open_app(page: Page, server: SbdServer, package: Path, fetched: list[str]) -> None:
    """The application's page on the server's origin (so the SDK's requests
    to /api go to that server), with the installed package beside it.

    The document itself comes from the server (any real page: one
    fulfilled by Playwright has no address, and Chromium's local network
    access checks then refuse its WebSocket to 127.0.0.1); its content is
    the application's."""
    await page.route(f"**{PACKAGE_PATH}**", package_file_server(package))

    def record(request: Request) -> None:
        path = urlsplit(request.url).path
        if path.endswith(".js"):
            fetched.append(path)

    page.on("request", record)
    await page.goto(server.base_url + "/health/live")
    await page.set_content(app_page(package))
    await page.wait_for_function("() => window.sdk !== undefined", timeout=TIMEOUT_MS)


async def test_packed_sdk_makes_a_call_from_its_bare_name(
    cluster: Cluster, new_page: NewPage, packed_sdk: Path
) -> None:
    one, two = cluster
    room = "npm-package"
    alice, bob = await new_page("alice"), await new_page("bob")
    fetched: list[str] = []
    await open_app(alice, one, packed_sdk, fetched)
    await open_app(bob, two, packed_sdk, fetched)

    alice_id = await alice.evaluate(JOIN, [make_token("alice"), room])
    bob_id = await bob.evaluate(JOIN, [make_token("bob"), room])
    assert alice_id != bob_id
    for page in (alice, bob):
        await page.wait_for_function(CONNECTED, timeout=TIMEOUT_MS)
    assert await alice.evaluate("() => window.sbd.client.sendData('hello from npm')") == 1
    await bob.wait_for_function("() => window.received.includes('hello from npm')")

    # Every module came from the installed package, none from the app's /static.
    assert set(fetched) == {
        f"{PACKAGE_PATH}{name}"
        for name in ("sbd-signaling.js", "sbd-peer.js", "sbd-errors.js", "sbd-calls.js")
    }
