"""Webhook figures (issue 14): the time from a ``leave`` to its
``participant.left`` webhook arriving, on one and on two instances; and the
flood: 2,000 peers of one instance that dies at once, while pairs on the
other instance relay, with and without webhooks.

Run: ``python -m bench webhooks [--quick]`` (needs ``redis-server``; no Node).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import websockets

from bench import procs

SECRET = "whsec_" + "YmVuY2ggd2ViaG9vayBzZWNyZXQgb2YgMzIgYnl0ZXMh"
_ids = itertools.count()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def _ms(values: list[float]) -> str:
    return f"{_pct(values, 0.5) * 1000:.1f} / {_pct(values, 0.99) * 1000:.1f}"


def start_sink() -> procs.Proc:
    port = procs.free_port()
    argv = [sys.executable, "-m", "uvicorn", "bench.webhook_sink:app", "--host", procs.HOST,
            "--port", str(port), "--log-level", "warning"]  # fmt: skip
    return procs.Proc("sink", argv, port).start(procs.port_open(port))


def sink_arrivals(sink: procs.Proc) -> list[dict[str, Any]]:
    answer = httpx.get(f"http://{procs.HOST}:{sink.port}/stats", timeout=10)
    arrivals: list[dict[str, Any]] = answer.json()["arrivals"]
    return arrivals


def hook_env(sink: procs.Proc) -> dict[str, str]:
    return {
        "SBD_WEBHOOK_URLS": f"http://{procs.HOST}:{sink.port}/hook",
        "SBD_WEBHOOK_SECRET": SECRET,
    }


async def _join(port: int, room: str, token: str) -> tuple[Any, str]:
    ws = await websockets.connect(
        f"ws://{procs.HOST}:{port}/ws/webrtc/{room}?token={token}", max_size=None
    )
    welcome = orjson.loads(await ws.recv())
    return ws, welcome["payload"]["peer_id"]


async def leave_latency(ports: list[int], sink: procs.Proc, token: str, count: int) -> list[float]:
    """One peer at a time joins a room of its own and leaves: the time from
    sending ``leave`` to its ``participant.left`` arriving at the sink."""
    sent: dict[str, float] = {}
    for i in range(count):
        ws, peer_id = await _join(ports[i % len(ports)], f"lat-{next(_ids)}", token)
        sent[peer_id] = time.time()
        await ws.send('{"type":"leave"}')
        with contextlib.suppress(websockets.ConnectionClosed):
            await ws.recv()
        await asyncio.sleep(0.02)
    deadline = time.monotonic() + 30
    while True:
        left = {
            a["peer_id"]: a["at"] for a in sink_arrivals(sink) if a["type"] == "participant.left"
        }
        if all(p in left for p in sent) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    return [left[p] - t for p, t in sent.items() if p in left]


class RelayProbe:
    """Pairs in rooms of their own on one instance, closed loop: A offers,
    B answers on receipt; the latency of each hop (half a round trip)."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []  # (when, seconds)
        self._tasks: list[asyncio.Task[None]] = []

    @contextlib.asynccontextmanager
    async def running(self, port: int, token: str, pairs: int) -> AsyncIterator[RelayProbe]:
        sockets = []
        for _ in range(pairs):
            room = f"probe-{next(_ids)}"
            a, _ = await _join(port, room, token)
            b, b_id = await _join(port, room, token)
            await a.recv()  # user-joined of b
            sockets += [a, b]
            self._tasks.append(asyncio.create_task(self._loop(a, b, b_id)))
        try:
            yield self
        finally:
            for task in self._tasks:
                task.cancel()
            for ws in sockets:
                await ws.close()

    async def _loop(self, a: Any, b: Any, b_id: str) -> None:
        # Text frames (str): the server refuses binary ones.
        offer = orjson.dumps(
            {"type": "offer", "to": b_id, "payload": {"type": "offer", "sdp": "v=0\r\n" * 40}}
        ).decode()
        answer = {"type": "answer", "to": "", "payload": {"type": "answer", "sdp": "v=0"}}
        while True:
            start = time.perf_counter()
            await a.send(offer)
            answer["to"] = orjson.loads(await b.recv())["from"]
            await b.send(orjson.dumps(answer).decode())
            while orjson.loads(await a.recv())["type"] != "answer":
                pass
            self.samples.append((time.time(), (time.perf_counter() - start) / 2))
            await asyncio.sleep(0.005)

    def between(self, start: float, end: float) -> list[float]:
        return [s for at, s in self.samples if start <= at < end]


async def flood(redis_url: str, sink: procs.Proc | None, token: str, peers: int) -> dict[str, Any]:
    """``peers`` on instance A in rooms of 8; A is killed; B reaps them."""
    extra = {"SBD_PRESENCE_TTL": "2", **(hook_env(sink) if sink else {})}
    a = procs.start_sbd(redis_url, name="sbd-a", **extra)
    b = procs.start_sbd(redis_url, name="sbd-b", **extra)
    try:
        held = []
        for i in range(peers):
            held.append((await _join(a.port, f"flood-{i // 8}-{id(a)}", token))[0])
        async with RelayProbe().running(b.port, token, 10) as probe:
            await asyncio.sleep(3)
            killed = time.time()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(a.pid, signal.SIGKILL)
            window = 15.0
            delivered_at = None
            while time.time() - killed < window or (
                sink and delivered_at is None and time.time() - killed < 120
            ):
                await asyncio.sleep(0.5)
                if sink and delivered_at is None:
                    left = [x for x in sink_arrivals(sink) if x["type"] == "participant.left"]
                    if len(left) >= peers:
                        delivered_at = max(x["at"] for x in left)
            before = probe.between(killed - 3, killed)
            during = probe.between(killed, killed + window)
        for ws in held:
            with contextlib.suppress(Exception):
                await ws.close()
        return {
            "p99_before_ms": _pct(before, 0.99) * 1000,
            "p99_during_ms": _pct(during, 0.99) * 1000,
            "p50_during_ms": _pct(during, 0.5) * 1000,
            "all_left_delivered_s": (delivered_at - killed) if delivered_at else None,
        }
    finally:
        a.stop()
        b.stop()


async def run(quick: bool) -> str:
    token = procs.sbd_tokens(1)[0]
    count = 20 if quick else 200
    peers = 200 if quick else 2000
    redis = procs.start_redis()
    sink = start_sink()
    redis_url = f"redis://{procs.HOST}:{redis.port}/0"
    lines = ["## Webhooks (issue 14)", ""]
    try:
        one = procs.start_sbd(None, **hook_env(sink))
        try:
            embedded = await leave_latency([one.port], sink, token, count)
        finally:
            one.stop()
        one = procs.start_sbd(redis_url, **hook_env(sink))
        try:
            single = await leave_latency([one.port], sink, token, count)
        finally:
            one.stop()
        a = procs.start_sbd(redis_url, **hook_env(sink))
        b = procs.start_sbd(redis_url, **hook_env(sink))
        try:
            double = await leave_latency([a.port, b.port], sink, token, count)
        finally:
            a.stop()
            b.stop()
        lines += [
            f"`python -m bench webhooks`: {count} peers, one at a time, join a room of their "
            "own and send `leave`; the time from sending it to the `participant.left` webhook "
            "arriving at a receiver on the same host (p50 / p99, ms):",
            "",
            "| broker | instances | leave → webhook p50 / p99 (ms) | delivered |",
            "| --- | --- | --- | --- |",
            f"| embedded | 1 | {_ms(embedded)} | {len(embedded)}/{count} |",
            f"| Redis | 1 | {_ms(single)} | {len(single)}/{count} |",
            f"| Redis | 2 (peers on both) | {_ms(double)} | {len(double)}/{count} |",
            "",
        ]
        without = await flood(redis_url, None, token, peers)
        flood_sink = start_sink()
        try:
            with_hooks = await flood(redis_url, flood_sink, token, peers)
        finally:
            flood_sink.stop()
        lines += [
            f"Flood: {peers} peers on instance A (rooms of 8), 10 relay pairs on instance B; A is "
            "SIGKILLed and B reaps its peers (`SBD_PRESENCE_TTL=2`). Relay latency per hop on B in "
            "the 15 s after the kill, and the time until every `participant.left` arrived:",
            "",
            "| webhooks | relay p99 before kill (ms) | relay p50 / p99 after kill (ms) "
            "| all left delivered after kill |",
            "| --- | --- | --- | --- |",
        ]
        for label, fig in (("off", without), ("on", with_hooks)):
            done = fig["all_left_delivered_s"]
            delivered = f"{done:.1f} s" if done else "not within 120 s"
            lines.append(
                f"| {label} | {fig['p99_before_ms']:.1f} | {fig['p50_during_ms']:.1f} / "
                f"{fig['p99_during_ms']:.1f} | {'-' if label == 'off' else delivered} |"
            )
    finally:
        sink.stop()
        redis.stop()
    return "\n".join(lines)
