"""Fixtures for the browser tests: Debian's Chromium driven by Playwright.

No browser is downloaded: Playwright launches /usr/bin/chromium (from
``apt-get install -y chromium``), with fake camera and microphone devices and
permission prompts auto-accepted.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, ViewportSize, async_playwright
from playwright.async_api import Error as PlaywrightError

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

NewPage = Callable[[str], Awaitable[Page]]


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} not found: apt-get install -y chromium (or set SBD_CHROMIUM)")
    async with async_playwright() as playwright:
        instance = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        await instance.close()


@pytest.fixture
async def new_page(
    browser: Browser, artifacts_dir: Path, request: pytest.FixtureRequest
) -> AsyncIterator[NewPage]:
    """Open pages, each in its own browser context (like separate tabs of
    separate users); their console output goes to test-artifacts/."""
    contexts = []
    log_lines: list[str] = []

    async def open_page(label: str) -> Page:
        context = await browser.new_context(viewport=VIEWPORT)
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
