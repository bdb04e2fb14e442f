"""The webrtc package mounted into another FastAPI app, served by plain uvicorn."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.peers import Peer
from tests.servers import TEST_SECRET, free_port

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def host_app() -> Iterator[str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SBD_")}
    env.update(SBD_JWT_SECRET=TEST_SECRET, PYTHONPATH=str(ROOT))
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "tests.host_app:app", "--port", str(port)],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            if httpx.get(f"{base}/their/own/route", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "host app did not start"
        time.sleep(0.1)
    yield base
    process.terminate()
    process.wait(10)


async def test_router_and_lifespan_work_inside_another_app(host_app: str) -> None:
    async with httpx.AsyncClient(base_url=host_app) as http:
        assert (await http.get("/their/own/route")).json() == {"state": "ready"}
    ws_url = host_app.replace("http", "ws", 1)
    a = await Peer.join(ws_url, "mounted", user="alice")
    b = await Peer.join(ws_url, "mounted", user="bob")
    assert (await a.expect("user-joined"))["payload"]["peer_id"] == b.peer_id
    await a.send(a.offer(b.peer_id))
    assert (await b.expect("offer"))["from"] == a.peer_id
