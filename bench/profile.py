"""``python -m bench profile``: where our server spends its CPU under a bench workload.

Starts ``sbd serve``, drives it with the load generator, samples it with
py-spy (from bench/.pydeps, non-blocking so that the figures stay close to an
unprofiled run), and prints the top functions by own time and by inclusive
time, as a Markdown section. The raw collapsed stacks are kept in
bench/results/ for a flame graph (``py-spy``'s ``--format raw`` is the input of
flamegraph.pl and speedscope).
"""

from __future__ import annotations

import collections
import contextlib
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from bench import procs, scenarios

PY_SPY = procs.BENCH_DIR / ".pydeps" / "bin" / "py-spy"


def _short(frame: str) -> str:
    """``func (path/to/module.py:123)`` -> ``func (module.py)``, package-relative."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "python3.11/", "src/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})"


def summarize(
    collapsed: str, top: int = 25
) -> tuple[list[tuple[str, float]], list[tuple[str, float]], int]:
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_s)
        frames = [
            _short(f)
            for f in stack.split(";")
            if f and not f.startswith("process ") and not f.startswith("thread ")
        ]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for f in set(frames):
            incl[f] += count

    def pct(c: collections.Counter[str]) -> list[tuple[str, float]]:
        return [(k, 100 * v / total) for k, v in c.most_common(top)]

    return pct(own), pct(incl), total


def run(
    seconds: float = 15,
    pairs: int = 50,
    out_dir: Path | None = None,
    scenario: str = "relay",
    sbd_argv: list[str] | None = None,
    native: bool = False,
) -> str:
    if not PY_SPY.exists():
        raise SystemExit("py-spy missing: run bench/setup.sh")
    tokens = procs.sbd_tokens(8)
    result: dict[str, Any] = {}
    started = threading.Event()
    with contextlib.ExitStack() as stack:
        # relay2: the pairs split across two instances sharing a Redis of the
        # bench's own; the first instance is profiled (both do the same work).
        redis_url = None
        if scenario == "relay2":
            redis_proc = procs.start_redis()
            stack.enter_context(procs.running(redis_proc))
            redis_url = f"redis://{procs.HOST}:{redis_proc.port}/0"
        servers = [
            procs.start_sbd(redis_url, argv=sbd_argv, name=f"sbd-{n}")
            for n in range(2 if redis_url else 1)
        ]
        for instance in servers:
            stack.enter_context(procs.running(instance))
        server = servers[0]
        cfg: dict[str, Any] = {
            "server": "sbd",
            "scenario": "relay" if scenario == "relay2" else scenario,
            "urls": [f"ws://{procs.HOST}:{instance.port}" for instance in servers],
            "tokens": tokens,
            "pairs": pairs,
            "warmup_s": 2,
            "duration_s": seconds + 2,
            "workers": 1,
            "run_id": scenarios.run_id(),
        }
        if scenario == "join":
            cfg.update({"joins": int(200 * (seconds + 4)), "join_rate": 200, "room_size": 8})
            started.set()

        def on_event(ev: dict[str, Any]) -> None:
            if ev.get("event") == "measure_start":
                started.set()

        def drive() -> None:
            result.update(procs.run_loadgen(cfg, on_event))

        t = threading.Thread(target=drive)
        t.start()
        started.wait(30)
        time.sleep(1)
        out = out_dir or procs.BENCH_DIR / "results"
        out.mkdir(parents=True, exist_ok=True)
        raw = out / f"profile-{scenario}-{time.strftime('%Y%m%d-%H%M%S')}.txt"
        subprocess.run(
            [
                str(PY_SPY),
                "record",
                "-p",
                str(server.pid),
                "-d",
                str(int(seconds)),
                "-r",
                "200",
                "-f",
                "raw",
                "-o",
                str(raw),
                *(["--native"] if native else ["--nonblocking"]),
            ],
            check=True,
            capture_output=True,
        )
        t.join()
    own, incl, total = summarize(raw.read_text())
    lat = result.get("latency", {})
    head = (
        f"`python -m bench profile` ({scenario}, {pairs} pairs, py-spy {seconds:g} s at 200 Hz, "
        f"{'native frames, blocking' if native else 'non-blocking'}; {total} samples). "
        "Under the profiler: "
    )
    if scenario == "join":
        head += (
            f"{result.get('joins_per_s', 0):.0f} joins/s, connect-to-welcome p99 "
            f"{lat.get('p99_ms') or 0:.1f} ms."
        )
    else:
        head += f"{result.get('per_s', 0):,.0f} messages/s, p99 {lat.get('p99_ms') or 0:.2f} ms."
    lines = [head, "", "| own time | function |", "|---:|---|"]
    lines += [f"| {p:.1f} % | `{f}` |" for f, p in own]
    lines += ["", "| inclusive | function |", "|---:|---|"]
    lines += [f"| {p:.1f} % | `{f}` |" for f, p in incl]
    lines += ["", f"Raw stacks: {raw.relative_to(procs.REPO)}"]
    return "\n".join(lines)
