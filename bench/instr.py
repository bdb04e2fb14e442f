"""``python -m bench instr``: instructions per relayed message / per join, under callgrind.

On a shared machine, throughput and even CPU-seconds per message move by
+-15 % from run to run; instruction counts do not (valgrind counts the same
instructions whatever else runs). This is the A/B measure for small changes
to the hot path: each variant (``--variant LABEL=SRC_DIR``, plus the current
tree as ``sbd``) is started under ``valgrind --tool=callgrind``, driven by the
relay workload (10 pairs, closed loop) and a paced join storm, and the counters
are zeroed at the start of the measured window and dumped at its end.
Everything in the process counts: uvicorn, the event loop, the app, the kernel
excepted (callgrind sees user space only).
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import procs, scenarios


def _ir(path: Path) -> int:
    """Total instructions (Ir) of a callgrind dump."""
    text = path.read_text(errors="replace")
    m = re.search(r"^(?:summary|totals):\s+(\d+)", text, re.M)
    return int(m.group(1)) if m else 0


def _measure(label: str, src: str | None, tokens: list[str], seconds: float) -> dict[str, Any]:
    out_dir = Path(tempfile.mkdtemp(prefix="bench-callgrind-"))
    argv = [
        "valgrind",
        "--tool=callgrind",
        "--quiet",
        f"--callgrind-out-file={out_dir}/cg.%p",
        procs.sbd_bin(),
        "serve",
        "--host",
        procs.HOST,
        "--port",
        "{port}",
    ]
    env = {"PYTHONMALLOC": "malloc"}
    port = procs.free_port()
    argv = [a.replace("{port}", str(port)) for a in argv]
    proc = procs.Proc(label, argv, port, procs.sbd_env(None, src, **env))
    proc.start(procs.http_ok(port, "/health/ready"), timeout=240)
    result: dict[str, Any] = {"label": label}
    try:
        pid = proc.pid

        def control(flag: str) -> None:
            subprocess.run(
                ["callgrind_control", flag, str(pid)], capture_output=True, check=False, timeout=60
            )

        def window(ev: dict[str, Any]) -> None:
            if ev.get("event") == "measure_start":
                control("-z")
            elif ev.get("event") == "measure_end":
                control("-d")

        res = procs.run_loadgen(
            {
                "server": "sbd",
                "scenario": "relay",
                "urls": [f"ws://{procs.HOST}:{port}"],
                "tokens": tokens,
                "pairs": 10,
                "warmup_s": 5,
                "duration_s": seconds,
                "workers": 1,
                "run_id": scenarios.run_id(),
                "connect_concurrency": 4,
            },
            window,
            timeout=300,
        )
        dumps = sorted(out_dir.glob("cg.*.*"), key=lambda p: p.stat().st_mtime)
        ir = _ir(dumps[-1]) if dumps else 0
        result["relay_msgs"] = res.get("delivered") or 0
        result["ir_per_msg"] = ir / max(1, result["relay_msgs"])
        # Joins: zero, a fixed number of joins (rooms of 8), dump.
        for f in out_dir.glob("cg.*.*"):
            f.unlink()
        control("-z")
        joins = 200
        res = procs.run_loadgen(
            {
                "server": "sbd",
                "scenario": "join",
                "urls": [f"ws://{procs.HOST}:{port}"],
                "tokens": tokens,
                "room_size": 8,
                "workers": 1,
                "run_id": scenarios.run_id(),
                "joins": joins,
                "join_rate": 20,
                "max_s": 120,
            },
            timeout=300,
        )
        time.sleep(1)
        control("-d")
        dumps = sorted(out_dir.glob("cg.*.*"), key=lambda p: p.stat().st_mtime)
        ok = res.get("ok") or 0
        result["joins"] = ok
        result["ir_per_join"] = (_ir(dumps[-1]) if dumps else 0) / max(1, ok)
    finally:
        proc.stop()
        for f in out_dir.glob("*"):
            f.unlink()
        os.rmdir(out_dir)
    return result


def run(variants: dict[str, str], seconds: float = 15) -> str:
    tokens = procs.sbd_tokens(4)
    rows = [_measure("sbd", None, tokens, seconds)]
    for label, src in variants.items():
        rows.append(_measure(f"sbd:{label}", src, tokens, seconds))
    base = rows[0]
    lines = [
        "`bench/run.sh instr`: instructions (callgrind, user space, whole process) per relayed "
        "message (10 pairs, closed loop) and per join (rooms of 8; includes the TCP/HTTP upgrade, "
        "JWT check, join, `user-joined` to the others, welcome, and the close at the end).",
        "",
        "| server | messages measured | instructions per message | vs sbd | joins | "
        "instructions per join | vs sbd |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['label']} | {r['relay_msgs']:,} | {r['ir_per_msg']:,.0f} | "
            f"{r['ir_per_msg'] / base['ir_per_msg']:.2f}x | {r['joins']} | "
            f"{r['ir_per_join']:,.0f} | {r['ir_per_join'] / base['ir_per_join']:.2f}x |"
        )
    return "\n".join(lines)
