"""BENCHMARKS.md and the latency plot, from one run's results (JSON)."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.procs import BENCH_DIR, NODE_DIR, REPO

PLOT_PATH = REPO / "docs" / "img" / "bench-relay-latency.png"
LABELS = {
    "sbd": "ours (sbd)",
    "peerjs": "PeerJS",
    "socketio": "Socket.IO",
    "peerjs:asgi": "raw ASGI relay on uvicorn",
    "peerjs:websockets": "relay on websockets (no ASGI)",
    "peerjs:picows": "relay on picows",
}


# ------------------------------------------------------------------ machine


def _cmd(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return "not found"


def _node_pkg(name: str) -> str:
    import json

    path = NODE_DIR / "node_modules" / name / "package.json"
    try:
        return str(json.loads(path.read_text())["version"])
    except OSError:
        return "not installed"


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])

    def py(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "-"

    return {
        "cpu": f"{cpu}, {os.cpu_count()} cores",
        "memory": f"{mem_kb / 2**20:.1f} GiB",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "node": _cmd(["node", "--version"]),
        "redis-server": _cmd(["redis-server", "--version"]).split(" sha=")[0],
        "ours": (
            f"uvicorn {py('uvicorn')}, websockets {py('websockets')}, fastapi {py('fastapi')}, "
            f"uvloop {py('uvloop')}, orjson {py('orjson')}, redis-py {py('redis')}"
        ),
        "peers": (
            f"peer {_node_pkg('peer')}, socket.io {_node_pkg('socket.io')}, "
            f"@socket.io/redis-adapter {_node_pkg('@socket.io/redis-adapter')}, "
            f"redis {_node_pkg('redis')}"
        ),
        "loadgen": f"ws {_node_pkg('ws')} + bufferutil {_node_pkg('bufferutil')} (Node)",
        "commit": _cmd(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]) or "uncommitted",
    }


# ------------------------------------------------------------------ tables


def _fmt(v: Any, spec: str) -> str:
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    return format(v, spec)


def _ratio(ours: Any, theirs: Any) -> str:
    if not isinstance(ours, int | float) or not isinstance(theirs, int | float) or not theirs:
        return "-"
    return f"{ours / theirs:.2f}x"


Row = tuple[str, Callable[[dict[str, Any]], Any], str]


def table(
    servers: dict[str, dict[str, Any]],
    rows: list[Row],
    ours: str = "sbd",
    label: Callable[[str], str] | None = None,
) -> str:
    names = list(servers)
    peers = [n for n in names if n != ours]
    lab = label or (lambda n: LABELS.get(n, n))
    head = [
        "metric",
        *(lab(n) for n in names),
        *(f"ours / {lab(n)}" for n in peers if ours in names),
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for title, get, spec in rows:
        vals = {}
        for n in names:
            try:
                vals[n] = get(servers[n])
            except (KeyError, TypeError):
                vals[n] = None
        cells = [title, *(_fmt(vals[n], spec) for n in names)]
        if ours in names:
            cells += [_ratio(vals[ours], vals[n]) if spec != "s" else "" for n in peers]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cpu(key: str) -> Callable[[dict[str, Any]], Any]:
    return lambda s: s["server_cpu_pct"][key]


def _rounds(key: str = "rounds", spec: str = ",.0f") -> Callable[[dict[str, Any]], Any]:
    return lambda s: " / ".join(_fmt(v, spec) for v in s[key])


def _errors(s: dict[str, Any]) -> str:
    e = s.get("errors", {})
    bad = {k: v for k, v in e.items() if v}
    return ", ".join(f"{k} {v}" for k, v in bad.items()) or "none"


LATENCY_ROWS: list[Row] = [
    ("p50 per hop (ms)", lambda s: s["p50_ms"], ".2f"),
    ("p99 per hop (ms)", lambda s: s["p99_ms"], ".2f"),
    ("p99.9 per hop (ms)", lambda s: s["p999_ms"], ".2f"),
]


def section_relay(res: dict[str, Any]) -> str:
    cfg = res["config"]
    rows: list[Row] = [
        ("messages/s (best round)", lambda s: s["msgs_per_s"], ",.0f"),
        *LATENCY_ROWS,
        ("messages/s, every round", _rounds(), "s"),
        ("messages per server CPU-second", lambda s: s["per_cpu_s"], ",.0f"),
        ("server CPU (% of one core)", _cpu("server"), ".0f"),
        ("server RSS after (MB)", lambda s: s["server_rss_mb"], ".0f"),
        ("load generator CPU (% of one core)", lambda s: s["loadgen_cpu_pct"], ".0f"),
        ("errors", _errors, "s"),
    ]
    return (
        f"{cfg['pairs']} pairs, closed loop: A sends a 1.5 KB offer to B, B answers A on receipt, "
        f"and so on; {cfg['warmup_s']:g} s warm-up, {cfg['duration_s']:g} s measured, "
        f"{cfg.get('rounds', 1)} rounds interleaved across the servers (best round shown). "
        "One server process each.\n\n" + table(res["servers"], rows)
    )


def section_sweep(res: dict[str, Any], plot: str | None) -> str:
    sweep = res.get("sweep") or {}
    if not sweep:
        return ""
    levels = sorted({pt["offered_per_s"] for pts in sweep.values() for pt in pts})
    head = ["offered msgs/s", *(f"{LABELS.get(n, n)} achieved / p50 / p99 (ms)" for n in sweep)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for lv in levels:
        cells = [f"{lv:,}"]
        for pts in sweep.values():
            pt = next((x for x in pts if x["offered_per_s"] == lv), None)
            if pt is None:
                cells.append("(saturated below)")
            else:
                sat = " **saturated**" if pt.get("saturated") else ""
                cells.append(
                    f"{_fmt(pt['msgs_per_s'], ',.0f')} / {_fmt(pt['p50_ms'], '.2f')} / "
                    f"{_fmt(pt['p99_ms'], '.2f')}{sat}"
                )
        lines.append("| " + " | ".join(cells) + " |")
    text = (
        f"Open loop, same {res['config']['pairs']} pairs: offers at a fixed total rate "
        "(answers sent on receipt; offered messages/s counts both), "
        f"{res['config']['sweep_s']:g} s per level; a server's sweep stops at the first level "
        "it cannot carry (achieved < 95 % of offered, or p99 > 100 ms).\n\n" + "\n".join(lines)
    )
    if plot:
        text += f"\n\n![relay latency vs offered load]({plot})"
    return text


def section_relay2(res: dict[str, Any]) -> str:
    servers = res["servers"]

    def calls(s: dict[str, Any]) -> str:
        c = s.get("redis_calls_per_msg") or {}
        return ", ".join(f"{k} {v:.2f}" for k, v in c.items() if v >= 0.005) or "-"

    def conns(s: dict[str, Any]) -> str:
        c = s.get("redis_conns_per_instance") or {}
        return "; ".join(f"{k}: {'+'.join(map(str, v))}" for k, v in c.items())

    def inst_cpu(s: dict[str, Any]) -> str:
        return " + ".join(f"{v:.0f}" for k, v in s["server_cpu_pct"].items() if k != "redis")

    rows: list[Row] = [
        ("messages/s (best round)", lambda s: s["msgs_per_s"], ",.0f"),
        *LATENCY_ROWS,
        ("messages/s, every round", _rounds(), "s"),
        ("messages per CPU-second of the two instances", lambda s: s["per_cpu_s"], ",.0f"),
        ("Redis calls per relayed message (INFO commandstats)", calls, "s"),
        ("Redis connections per instance (ss)", conns, "s"),
        ("instance CPU (% of one core each)", inst_cpu, "s"),
        ("Redis CPU (%)", _cpu("redis"), ".0f"),
        ("load generator CPU (%)", lambda s: s["loadgen_cpu_pct"], ".0f"),
        ("errors", _errors, "s"),
    ]
    lab = {"sbd": "ours, 2 instances + Redis", "socketio": "Socket.IO + redis-adapter, 2 instances"}
    return (
        f"{res['config']['pairs']} pairs, A on instance 1 and B on instance 2, one Redis "
        f"(started by the bench); otherwise as scenario 1, {res['config'].get('rounds', 1)} rounds "
        "interleaved. Redis commandstats count the "
        "commands that Lua scripts call too (our relay is one EVALSHA whose script calls "
        "PUBLISH).\n\n" + table(servers, rows, label=lambda n: lab.get(n, n))
    )


def section_fanout(res: dict[str, Any]) -> str:
    cfg = res["config"]
    rows: list[Row] = [
        ("deliveries/s (best round)", lambda s: s["deliveries_per_s"], ",.0f"),
        ("deliveries/s, every round", _rounds(), "s"),
        ("deliveries per server CPU-second", lambda s: s["per_cpu_s"], ",.0f"),
        ("broadcasts/s", lambda s: s["broadcasts_per_s"], ",.0f"),
        ("p50 send-to-delivery (ms)", lambda s: s["p50_ms"], ".2f"),
        ("p99 send-to-delivery (ms)", lambda s: s["p99_ms"], ".2f"),
        ("p99.9 send-to-delivery (ms)", lambda s: s["p999_ms"], ".2f"),
        ("server CPU (%)", _cpu("server"), ".0f"),
        ("load generator CPU (%)", lambda s: s["loadgen_cpu_pct"], ".0f"),
        ("errors", _errors, "s"),
    ]
    return (
        f"{cfg['rooms']} rooms of {cfg['room_size']}, one instance; every member broadcasts a "
        "1.5 KB message to its room (ours: `app` with no `to`; Socket.IO: `socket.to(room)`), "
        "and sends the next once all the others received it (closed loop, "
        f"{cfg['room_size']} in flight per room), {cfg.get('rounds', 1)} rounds interleaved. "
        "PeerJS has no rooms: not run.\n\n" + table(res["servers"], rows)
    )


def section_join(res: dict[str, Any]) -> str:
    cfg = res["config"]

    def g(phase: str, key: str) -> Callable[[dict[str, Any]], Any]:
        return lambda s: s[phase][key]

    rows: list[Row] = [
        (f"connect-to-welcome p50 at {cfg['join_rate']}/s (ms)", g("paced", "p50_ms"), ".2f"),
        (f"connect-to-welcome p99 at {cfg['join_rate']}/s (ms)", g("paced", "p99_ms"), ".2f"),
        (f"connect-to-welcome max at {cfg['join_rate']}/s (ms)", g("paced", "max_ms"), ".2f"),
        (
            "p99 at that rate, every round (ms)",
            lambda s: " / ".join(_fmt(v, ".1f") for v in s["paced"]["rounds"]),
            "s",
        ),
        (f"server CPU at {cfg['join_rate']}/s (%)", g("paced", "server_cpu_pct"), ".0f"),
        ("failed joins (paced)", g("paced", "failed"), "d"),
        (
            f"max joins/s ({cfg['concurrency']} handshakes in flight)",
            g("max", "joins_per_s"),
            ",.0f",
        ),
        (
            "max joins/s, every round",
            lambda s: " / ".join(_fmt(v, ",.0f") for v in s["max"]["rounds"]),
            "s",
        ),
        ("connect-to-welcome p99 at max rate (ms)", g("max", "p99_ms"), ".1f"),
        ("server CPU at max rate (%)", g("max", "server_cpu_pct"), ".0f"),
        ("load generator CPU at max rate (%)", g("max", "loadgen_cpu_pct"), ".0f"),
        ("failed joins (max rate)", g("max", "failed"), "d"),
    ]
    return (
        f"{cfg['joins']:,} new WebSocket clients at {cfg['join_rate']}/s (open loop), rooms of "
        f"{cfg['room_size']}, each held open until the end of the phase; then "
        f"{cfg['max_rate_joins']:,} more as fast as {cfg['concurrency']} concurrent handshakes "
        f"allow; {cfg.get('rounds', 1)} rounds of each, interleaved across the servers (the round "
        "with the lowest p99, resp. the most joins/s, shown). Connect-to-welcome: from opening "
        "the TCP connection to the first server frame "
        "(ours: `welcome`, after JWT check, room join and `user-joined` to the others; PeerJS: "
        "`OPEN`; Socket.IO: a `welcome` event after the namespace connect).\n\n"
        + table(res["servers"], rows)
    )


def section_idle(res: dict[str, Any]) -> str:
    cfg = res["config"]
    rows: list[Row] = [
        ("connections held", lambda s: s["connected"], ",d"),
        ("RSS per connection (KB)", lambda s: s["kb_per_conn"], ".1f"),
        ("RSS before (MB)", lambda s: s["rss_base_mb"], ".0f"),
        ("RSS with all connected (MB)", lambda s: s["rss_loaded_mb"], ".0f"),
        ("time to connect all (s)", lambda s: s["connect_s"], ".1f"),
        ("connection errors", lambda s: s["conn_errors"], "d"),
    ]
    return (
        f"{cfg['conns']:,} idle WebSocket clients on one instance (ours: rooms of "
        f"{cfg['room_size']}), opened 100 at a time by 2 load-generator processes; "
        "per connection = (RSS with all connected - RSS after a 200-connection warm-up) / "
        f"connections. Open-files limit raised to {cfg['nofile']} (the hard limit here).\n\n"
        + table(res["servers"], rows)
    )


# ------------------------------------------------------------------ targets


def targets(results: dict[str, Any]) -> str:
    lines = []

    def check(label: str, ok: bool | None, detail: str) -> None:
        mark = "n/a" if ok is None else ("met" if ok else "**not met**")
        lines.append(f"| {label} | {detail} | {mark} |")

    r1 = results.get("relay", {}).get("servers", {})
    if "sbd" in r1 and "peerjs" in r1:
        o, t = r1["sbd"], r1["peerjs"]
        check(
            "relay, one instance: messages/s >= 1.0x PeerJS",
            o["msgs_per_s"] >= t["msgs_per_s"],
            f"{o['msgs_per_s'] / t['msgs_per_s']:.2f}x",
        )
        check(
            "relay, one instance: p99 <= PeerJS",
            o["p99_ms"] <= t["p99_ms"],
            f"{o['p99_ms']:.2f} vs {t['p99_ms']:.2f} ms",
        )
    r2 = results.get("relay2", {}).get("servers", {})
    if "sbd" in r2 and "socketio" in r2:
        o, t = r2["sbd"], r2["socketio"]
        check(
            "relay, two instances: messages/s >= 1.0x Socket.IO + redis-adapter",
            o["msgs_per_s"] >= t["msgs_per_s"],
            f"{o['msgs_per_s'] / t['msgs_per_s']:.2f}x",
        )
    if "sbd" in r2:
        c = r2["sbd"].get("redis_calls_per_msg") or {}
        client_calls = sum(
            v
            for k, v in c.items()
            if k in ("evalsha", "eval", "publish", "spublish", "hexists", "hget", "fcall")
        )
        scripted = c.get("evalsha", 0) + c.get("eval", 0) + c.get("fcall", 0)
        n = scripted if scripted >= 0.5 else client_calls
        check(
            "one Redis command per relayed message",
            abs(n - 1) < 0.05,
            f"{n:.2f} EVALSHA per message (inside the script: "
            + ", ".join(f"{k} {v:.2f}" for k, v in c.items() if v >= 0.005 and k != "evalsha")
            + ")",
        )
        conns = r2["sbd"].get("redis_conns_per_instance") or {}
        vals = list(conns.values())
        check(
            "Redis connections per instance independent of client count",
            len(vals) >= 2 and all(v == vals[0] for v in vals),
            "; ".join(f"{k}: {v}" for k, v in conns.items()),
        )
    idle = results.get("idle", {}).get("servers", {})
    if "sbd" in idle and idle["sbd"].get("kb_per_conn") is not None:
        kb = idle["sbd"]["kb_per_conn"]
        check(
            f"idle: <= 30 KB RSS per connection at {idle['sbd']['connected']:,}",
            kb <= 30,
            f"{kb:.1f} KB",
        )
    js = results.get("join", {}).get("servers", {})
    if "sbd" in js and js["sbd"]["paced"].get("p99_ms") is not None:
        p99 = js["sbd"]["paced"]["p99_ms"]
        check(
            "join storm: connect-to-welcome p99 <= 25 ms at 200 joins/s", p99 <= 25, f"{p99:.1f} ms"
        )
    if not lines:
        return ""
    return "| target | this run | |\n|---|---|---|\n" + "\n".join(lines)


# ------------------------------------------------------------------ plot


def plot(results: dict[str, Any], path: Path = PLOT_PATH) -> Path | None:
    sweep = results.get("relay", {}).get("sweep") or {}
    if not sweep:
        return None
    pydeps = BENCH_DIR / ".pydeps"
    if pydeps.is_dir() and str(pydeps) not in sys.path:
        sys.path.append(str(pydeps))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing (bench/setup.sh installs it): no plot", file=sys.stderr)
        return None
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    colors = {"sbd": "tab:blue", "peerjs": "tab:orange", "socketio": "tab:green"}
    for name, pts in sweep.items():
        xs = [p["offered_per_s"] for p in pts if p["p99_ms"] is not None]
        p50 = [p["p50_ms"] for p in pts if p["p99_ms"] is not None]
        p99 = [p["p99_ms"] for p in pts if p["p99_ms"] is not None]
        c = colors.get(name)
        ax.plot(xs, p99, "-o", color=c, label=f"{LABELS.get(name, name)} p99")
        ax.plot(xs, p50, "--", marker=".", color=c, label=f"{LABELS.get(name, name)} p50")
        for p in pts:
            if p.get("saturated"):
                ax.annotate(
                    "saturated",
                    (p["offered_per_s"], p["p99_ms"] or 1),
                    fontsize=8,
                    color=c,
                    textcoords="offset points",
                    xytext=(4, 4),
                )
    ax.set_yscale("log")
    ax.set_xlabel("offered load (1.5 KB messages/s, one instance, 50 pairs)")
    ax.set_ylabel("latency per hop (ms)")
    ax.set_title("Relay latency vs offered load (same run, loopback)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# ------------------------------------------------------------------ document


def render(results: dict[str, Any], command: str, plot_path: Path | None) -> str:
    m = results.get("machine") or machine()
    rel_plot = os.path.relpath(plot_path, REPO) if plot_path else None
    parts = [
        "# Benchmarks",
        "",
        "Our server (`sbd serve`) against the PeerJS server (npm `peer`) and a Socket.IO "
        "relay (`socket.io` + `@socket.io/redis-adapter`, bench/node/socketio_relay.js), all "
        "driven by the same load generator (bench/node/loadgen.js, Node `ws`) over loopback, "
        "in one run. The machine is shared and noisy: compare the columns of one run (the "
        "ratios), not absolute figures across runs. How to run: bench/README.md.",
        "",
        f"Command: `{command}`  ",
        f"Run: {results.get('started', '?')}, {results.get('elapsed_s', 0):.0f} s in all  ",
        f"Machine: {m['cpu']}, {m['memory']}, Linux {m['kernel']}  ",
        f"Ours: `sbd serve` from {results.get('sbd_src', 'src/')} (HEAD {m['commit']}); "
        f"Python {m['python']}, {m['ours']}  ",
        f"Peers: Node {m['node']}, {m['peers']}; {m['redis-server']}  ",
        f"Load generator: {m['loadgen']}",
        "",
    ]
    t = targets(results)
    if t:
        parts += ["## Targets (issue 6)", "", t, ""]
    if "findings" in results:
        parts += ["## Findings and proposed changes", "", results["findings"], ""]
    sections = [
        ("relay", "1. Relay, one instance", section_relay),
        ("relay2", "2. Relay across two instances sharing Redis", section_relay2),
        ("fanout", "3. Fan-out, rooms of 8", section_fanout),
        ("join", "4. Join storm", section_join),
        ("idle", "5. Idle connections", section_idle),
    ]
    for key, title, fn in sections:
        if key in results:
            parts += [f"## {title}", "", fn(results[key]), ""]
            if key == "relay":
                sw = section_sweep(results[key], rel_plot)
                if sw:
                    parts += ["### Latency vs offered load", "", sw, ""]
    for key, title in (
        ("asgi", "ASGI servers and WebSocket implementations"),
        ("ceiling", "What each Python WebSocket stack allows (ceiling relays)"),
        ("instr", "Instructions per operation (callgrind)"),
        ("profile_relay", "Profile of our server: relay hot path"),
        ("profile_join", "Profile of our server: joins"),
    ):
        if key in results:
            parts += [f"## {title}", "", results[key], ""]
    parts += [
        "## Notes",
        "",
        "- Per hop: from the sender's `send()` to the receiver's `message` event, one clock "
        "(both ends of a pair live in the same load-generator process); log buckets of 1 %.",
        "- The peers do less per message than ours: PeerJS and the Socket.IO relay check no "
        "token, validate no schema and keep no room state; ours verifies a JWT on join, "
        "validates every frame against PROTOCOL.md, rate-limits, and stamps `from`/`from_user`.",
        "- Server CPU is read from /proc over the measured window; a server at ~100 % of one "
        "core is the bottleneck, a load generator near 100 % would be (it is shown so that this "
        "can be checked).",
        "- 2 cores are shared by the server(s), Redis and the load generator.",
        "",
    ]
    return "\n".join(parts)
