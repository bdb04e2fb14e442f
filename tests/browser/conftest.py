"""Fixtures for the browser tests: Debian's Chromium driven by Playwright.

No browser is downloaded: Playwright launches /usr/bin/chromium (from
``apt-get install -y chromium``), with fake camera and microphone devices and
permission prompts auto-accepted.

The pages run the SDK as npm would publish it: every `/static/sbd-*` module
the call page loads is answered from the `npm pack` tarball installed in a
scratch folder (tests/sdk_package.py), not from the source folder; a module
missing from the package is a 404 there.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, Route, ViewportSize, async_playwright
from playwright.async_api import Error as PlaywrightError

from tests.edge import Coturn
from tests.sdk_package import pack_and_install

CHROMIUM = os.environ.get("SBD_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
]
VIEWPORT: ViewportSize = {"width": 1280, "height": 760}
TURN_SECRET = "turn-secret-shared-by-sbd-and-coturn"

NewPage = Callable[[str], Awaitable[Page]]


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} not found: apt-get install -y chromium (or set SBD_CHROMIUM)")
    async with async_playwright() as playwright:
        instance = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        await instance.close()


@pytest.fixture(scope="module")
def coturn() -> Iterator[Coturn]:
    """The repo's coturn configuration (deploy/turnserver.conf) with TURN_SECRET."""
    server = Coturn(TURN_SECRET).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def packed_sdk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The installed package's folder (node_modules/@second-brain-database/signaling)."""
    return pack_and_install(tmp_path_factory.mktemp("packed-sdk"))


def package_file_server(package: Path) -> Callable[[Route], Awaitable[None]]:
    """A route handler answering a request with the package's file of that
    name (the URL's last segment), or 404 when the package has none."""

    async def serve(route: Route) -> None:
        name = route.request.url.split("?", 1)[0].rsplit("/", 1)[-1]
        file = package / name
        if name and file.is_file():
            await route.fulfill(path=file)
        else:
            await route.fulfill(status=404, body=f"{name} is not in the npm package")

    return serve


@pytest.fixture
async def new_page(
    browser: Browser, packed_sdk: Path, artifacts_dir: Path, request: pytest.FixtureRequest
) -> AsyncIterator[NewPage]:
    """Open pages, each in its own browser context (like separate tabs of
    separate users); their console output goes to test-artifacts/."""
    contexts = []
    log_lines: list[str] = []

    async def open_page(label: str) -> Page:
        context = await browser.new_context(viewport=VIEWPORT)
        await context.route("**/static/sbd-*", package_file_server(packed_sdk))
        contexts.append(context)
        page = await context.new_page()
        page.on("console", lambda m: log_lines.append(f"[{label}] {m.type}: {m.text}"))
        page.on("pageerror", lambda e: log_lines.append(f"[{label}] PAGE ERROR: {e}"))
        return page

    yield open_page
    for context in contexts:
        # Leave like a closing tab does, and wait for the server's close, so no
        # session lingers in the shared cluster waiting to be resumed.
        for page in context.pages:
            with contextlib.suppress(PlaywrightError):  # a crashed page has left anyway
                await page.evaluate("async () => await window.sbd?.client?.leave()")
        await context.close()
    log = artifacts_dir / f"browser-{request.node.name}.log"
    log.write_text("\n".join(log_lines) + "\n")
