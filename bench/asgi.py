"""``python -m bench asgi``: which ASGI server / WebSocket implementation / worker
count carries our app fastest while still passing the contract smoke test.

Every variant serves the same app (``second_brain_database.main:app``) with
the same settings; they are driven in interleaved rounds by the relay workload
of scenario 1 and the paced join storm of scenario 4. The optional servers
(wsproto, granian) come from bench/.pydeps (bench/setup.sh), never from the
project's dependencies.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import contract_smoke, procs, scenarios
from bench.procs import HOST, Proc

PYDEPS = str(procs.BENCH_DIR / ".pydeps")
APP = "second_brain_database.main:app"


@dataclass
class Variant:
    label: str
    argv: list[str] | None  # None: `sbd serve`
    workers: int = 1
    needs_redis: bool = False
    pydeps: bool = False
    env: dict[str, str] = field(default_factory=dict)


def _uvicorn(ws: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        APP,
        "--host",
        HOST,
        "--port",
        "{port}",
        "--ws",
        ws,
        "--ws-per-message-deflate",
        "false",
        "--ws-max-size",
        "65536",
        "--log-level",
        "warning",
        "--no-access-log",
    ]


VARIANTS = [
    Variant("sbd serve (--ws native, the default)", None),
    Variant(
        "sbd serve --ws websockets-sansio (uvicorn's, over ASGI)",
        [procs.sbd_bin(), "serve", "--host", HOST, "--port", "{port}", "--ws", "websockets-sansio"],
    ),
    Variant("uvicorn --ws websockets (legacy implementation)", _uvicorn("websockets")),
    Variant("uvicorn --ws wsproto", _uvicorn("wsproto"), pydeps=True),
    Variant(
        "granian --interface asgi --loop uvloop",
        [
            sys.executable,
            "-m",
            "granian",
            "--interface",
            "asgi",
            "--loop",
            "uvloop",
            "--host",
            HOST,
            "--port",
            "{port}",
            "--log-level",
            "warning",
            "--ws",
            APP,
        ],
        pydeps=True,
    ),
    Variant("sbd serve --workers 2 (+ Redis)", None, workers=2, needs_redis=True),
]


def _start(v: Variant, redis_url: str | None) -> Proc:
    env = dict(v.env)
    if v.pydeps:
        # Appended: the project's own packages keep precedence over bench/.pydeps.
        extra = os.environ.get("PYTHONPATH", "")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (extra, PYDEPS) if p)
        src = os.environ.get("BENCH_SBD_SRC")
        if src:
            env["PYTHONPATH"] = os.pathsep.join((str(Path(src).resolve()), env["PYTHONPATH"]))
    proc = procs.start_sbd(redis_url, argv=v.argv, workers=v.workers, name=v.label, **env)
    return proc


def run(quick: bool = False, out_dir: Path | None = None, rounds: int = 2) -> str:
    p = scenarios.Params.quick() if quick else scenarios.Params()
    tokens = procs.sbd_tokens(8)
    redis_proc = procs.start_redis()
    rows: dict[str, dict[str, Any]] = {}
    started: dict[str, Proc] = {}
    with procs.running(redis_proc):
        url = f"redis://{HOST}:{redis_proc.port}/0"
        try:
            for v in VARIANTS:
                try:
                    started[v.label] = _start(v, url if v.needs_redis else None)
                except RuntimeError as exc:
                    rows[v.label] = {"error": str(exc).splitlines()[0]}
                    print(f"  {v.label}: did not start: {exc}", flush=True)
            for label, proc in started.items():
                bad = contract_smoke.check(f"ws://{HOST}:{proc.port}", tokens[0])
                rows[label] = {"smoke": bad, "relay": [], "join": []}
                print(f"  {label}: contract smoke {bad or 'passed'}", flush=True)
            for _ in range(1 if quick else rounds):
                for label, proc in started.items():
                    sampler = scenarios.Sampler({"server": proc})
                    res = procs.run_loadgen(
                        {
                            "server": "sbd",
                            "scenario": "relay",
                            "urls": [f"ws://{HOST}:{proc.port}"],
                            "tokens": tokens,
                            "pairs": p.pairs,
                            "warmup_s": p.warmup_s,
                            "duration_s": p.duration_s,
                            "workers": 1,
                            "run_id": scenarios.run_id(),
                        },
                        sampler,
                    )
                    lat = res.get("latency", {})
                    rows[label]["relay"].append(
                        {
                            "msgs_per_s": res.get("per_s"),
                            "p50_ms": lat.get("p50_ms"),
                            "p99_ms": lat.get("p99_ms"),
                            "cpu": sampler.cpu_pct.get("server"),
                            "errors": (res.get("unexpected_closes") or 0)
                            + (res.get("frame_errors") or 0),
                        }
                    )
                    c0 = proc.cpu()
                    res = procs.run_loadgen(
                        {
                            "server": "sbd",
                            "scenario": "join",
                            "urls": [f"ws://{HOST}:{proc.port}"],
                            "tokens": tokens,
                            "room_size": p.room_size,
                            "workers": 1,
                            "run_id": scenarios.run_id(),
                            "joins": p.joins // 2,
                            "join_rate": p.join_rate,
                            "max_s": 60,
                        }
                    )
                    cpu_per_join_ms = 1000 * (proc.cpu() - c0) / max(1, res.get("ok") or 1)
                    rows[label]["join"].append(
                        {
                            "p99_ms": res.get("latency", {}).get("p99_ms"),
                            "cpu_ms_per_join": cpu_per_join_ms,
                            "failed": res.get("failed"),
                        }
                    )
                    r, j = rows[label]["relay"][-1], rows[label]["join"][-1]
                    print(
                        f"  {label}: {r['msgs_per_s'] or 0:,.0f} msg/s "
                        f"p99 {r['p99_ms'] or 0:.2f} ms CPU {r['cpu'] or 0:.0f}%; "
                        f"join p99 {j['p99_ms'] or 0:.1f} ms, "
                        f"{j['cpu_ms_per_join']:.2f} ms CPU/join",
                        flush=True,
                    )
                    time.sleep(0.5)
        finally:
            for proc in started.values():
                proc.stop()
    return render(rows, p)


def render(rows: dict[str, dict[str, Any]], p: scenarios.Params) -> str:
    lines = [
        f"`bench/run.sh asgi`: the same app under each server, relay closed loop ({p.pairs} pairs, "
        f"{p.duration_s:g} s) and {p.joins // 2:,} joins at {p.join_rate}/s, interleaved rounds "
        "(best round); contract smoke = bench/contract_smoke.py.",
        "",
        "| server | contract smoke | messages/s | p50 / p99 (ms) | msgs per CPU-s | "
        "join p99 at 200/s (ms) | CPU per join (ms) |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, row in rows.items():
        if "error" in row:
            lines.append(f"| {label} | did not start: {row['error'][:80]} | | | | | |")
            continue
        relay = max(row["relay"], key=lambda r: r["msgs_per_s"] or 0) if row["relay"] else {}
        join = min(row["join"], key=lambda r: r["p99_ms"] or 1e9) if row["join"] else {}
        smoke = "passed" if not row["smoke"] else "FAILED: " + "; ".join(row["smoke"])[:160]
        cpu = relay.get("cpu") or 0
        eff = (relay.get("msgs_per_s") or 0) / (cpu / 100) if cpu > 5 else None
        lines.append(
            f"| {label} | {smoke} | {relay.get('msgs_per_s') or 0:,.0f} | "
            f"{relay.get('p50_ms') or 0:.2f} / {relay.get('p99_ms') or 0:.2f} | "
            f"{'-' if eff is None else f'{eff:,.0f}'} | {join.get('p99_ms') or 0:.1f} | "
            f"{join.get('cpu_ms_per_join') or 0:.2f} |"
        )
    return "\n".join(lines)
