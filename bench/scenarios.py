"""The five scenarios of issue 6, each run against every server in one go.

Each function starts the servers it needs, drives them with the same
load-generator workload, stops them, and returns plain dicts (JSON-ready):
``{"config": {...}, "servers": {name: {...figures}}}``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench import procs
from bench.procs import HOST, Proc

OURS = "sbd"
# "sbd:LABEL" names our server run from another source tree (python -m bench --variant).
VARIANTS: dict[str, str] = {}


def dialect(name: str) -> str:
    """The wire dialect of a server name: sbd, peerjs or socketio."""
    return name.split(":", 1)[0]


@dataclass(frozen=True)
class Params:
    """Sizes of one run; ``quick()`` is a smoke test of the harness."""

    pairs: int = 50
    warmup_s: float = 2.0
    duration_s: float = 6.0
    sweep_levels: tuple[int, ...] = (2500, 5000, 10000, 20000, 30000, 40000, 50000, 60000)
    sweep_warmup_s: float = 1.0
    sweep_s: float = 3.0
    fanout_rooms: int = 25
    room_size: int = 8
    join_rate: int = 200
    joins: int = 2000
    max_rate_joins: int = 2000
    join_concurrency: int = 50
    idle_conns: int = 10_000
    idle_room_size: int = 10
    idle_hold_s: float = 6.0
    loadgen_workers: int = 1
    rounds: int = 3
    rounds_other: int = 2

    @classmethod
    def quick(cls) -> Params:
        return cls(
            pairs=10,
            warmup_s=0.5,
            duration_s=2.0,
            sweep_levels=(2000, 8000),
            sweep_s=1.0,
            sweep_warmup_s=0.5,
            fanout_rooms=4,
            joins=200,
            max_rate_joins=200,
            idle_conns=500,
            idle_hold_s=2.0,
            rounds=1,
            rounds_other=1,
        )


_run_counter = 0


def run_id() -> str:
    global _run_counter
    _run_counter += 1
    return f"{int(time.time()) % 100000}r{_run_counter}"


def ws_url(proc: Proc) -> str:
    return f"ws://{HOST}:{proc.port}"


class Sampler:
    """CPU seconds of some processes between the load generator's measure events."""

    def __init__(self, procs_: dict[str, Proc], extra: Callable[[str], None] | None = None) -> None:
        self.procs = procs_
        self.extra = extra
        self.t0 = 0.0
        self.c0: dict[str, float] = {}
        self.cpu_pct: dict[str, float] = {}

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "measure_start":
            self.t0 = time.monotonic()
            self.c0 = {n: p.cpu() for n, p in self.procs.items()}
            if self.extra:
                self.extra("start")
        elif kind == "measure_end":
            dt = time.monotonic() - self.t0
            self.cpu_pct = {n: 100 * (p.cpu() - self.c0[n]) / dt for n, p in self.procs.items()}
            if self.extra:
                self.extra("end")


def _figures(result: dict[str, Any], sampler: Sampler) -> dict[str, Any]:
    lat = result.get("latency", {})
    return {
        "msgs_per_s": result.get("per_s"),
        "p50_ms": lat.get("p50_ms"),
        "p99_ms": lat.get("p99_ms"),
        "p999_ms": lat.get("p999_ms"),
        "max_ms": lat.get("max_ms"),
        "delivered": result.get("delivered"),
        "server_cpu_pct": sampler.cpu_pct,
        "loadgen_cpu_pct": result.get("loadgen_cpu_pct"),
        "errors": {
            "conn": result.get("conn_errors"),
            "closed_by_server": result.get("unexpected_closes"),
            "error_frames": result.get("frame_errors"),
            "loadgen_lagged": result.get("lagged"),
            "loadgen": result.get("error"),
        },
    }


def _log(msg: str) -> None:
    print(f"  {msg}", flush=True)


# ------------------------------------------------------------------ (1) relay


def start_server(name: str) -> Proc:
    if dialect(name) == OURS:
        return procs.start_sbd(src=VARIANTS.get(name.partition(":")[2]), name=name)
    if name == "peerjs":
        return procs.start_peerjs()
    if name.startswith("peerjs:"):  # a ceiling relay in Python (bench/ceiling/)
        return procs.start_ceiling(name.partition(":")[2])
    if name == "socketio":
        return procs.start_socketio()
    raise ValueError(name)


def start_servers(names: list[str]) -> dict[str, Proc]:
    """Start every server of a scenario; on a failure, stop those already started."""
    started: dict[str, Proc] = {}
    try:
        for name in names:
            started[name] = start_server(name)
    except BaseException:
        for proc in started.values():
            proc.stop()
        raise
    return started


def _best(rounds: list[dict[str, Any]], key: str, lower: bool = False) -> dict[str, Any]:
    """The least-disturbed of interleaved rounds (the machine is shared), all rounds kept."""
    valid = [r for r in rounds if r.get(key) is not None]
    if not valid:
        return {**rounds[-1], "rounds": [r.get(key) for r in rounds]}
    best = (min if lower else max)(valid, key=lambda r: r[key])
    return {**best, "rounds": [r.get(key) for r in rounds]}


def _efficiency(fig: dict[str, Any], rate_key: str, cpu_keys: list[str]) -> None:
    cpu = sum(fig["server_cpu_pct"].get(k, 0) for k in cpu_keys) / 100
    fig["per_cpu_s"] = (fig.get(rate_key) or 0) / cpu if cpu > 0.05 else None


def relay(p: Params, servers: list[str], tokens: list[str], sweep: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {
        "config": {
            "pairs": p.pairs,
            "duration_s": p.duration_s,
            "warmup_s": p.warmup_s,
            "rounds": p.rounds,
            "sweep_levels": list(p.sweep_levels),
            "sweep_s": p.sweep_s,
        },
        "servers": {},
        "sweep": {},
    }
    started = start_servers(servers)
    with procs.running(*started.values()):
        rounds: dict[str, list[dict[str, Any]]] = {n: [] for n in servers}
        for r in range(p.rounds):
            for name, proc in started.items():
                sampler = Sampler({"server": proc})
                cfg = {
                    "server": dialect(name),
                    "scenario": "relay",
                    "urls": [ws_url(proc)],
                    "tokens": tokens,
                    "pairs": p.pairs,
                    "warmup_s": p.warmup_s,
                    "duration_s": p.duration_s,
                    "workers": p.loadgen_workers,
                    "run_id": run_id(),
                }
                res = procs.run_loadgen(cfg, sampler)
                fig = _figures(res, sampler)
                fig["server_rss_mb"] = proc.rss() / 2**20
                _efficiency(fig, "msgs_per_s", ["server"])
                rounds[name].append(fig)
                _log(
                    f"relay {name} round {r + 1}: {fig['msgs_per_s'] or 0:.0f} msg/s p50 "
                    f"{fig['p50_ms'] or 0:.2f} p99 {fig['p99_ms'] or 0:.2f} ms, server CPU "
                    f"{sampler.cpu_pct.get('server', 0):.0f}%, loadgen CPU "
                    f"{fig['loadgen_cpu_pct'] or 0:.0f}%"
                )
        for name in servers:
            out["servers"][name] = _best(rounds[name], "msgs_per_s")
        if sweep:
            out["sweep"] = relay_sweep(p, started, tokens)
    return out


def relay_sweep(p: Params, started: dict[str, Proc], tokens: list[str]) -> dict[str, list[Any]]:
    """Open loop: offers at a fixed rate, answers as they come; latency per offered load.

    Levels go up together for every server (interleaved); a server leaves the
    sweep at the first level it cannot carry."""
    points: dict[str, list[dict[str, Any]]] = {n: [] for n in started}
    live = dict(started)
    for level in p.sweep_levels:
        for name, proc in list(live.items()):
            sampler = Sampler({"server": proc})
            cfg = {
                "server": dialect(name),
                "scenario": "relay",
                "urls": [ws_url(proc)],
                "tokens": tokens,
                "pairs": p.pairs,
                "rate": level,
                "warmup_s": p.sweep_warmup_s,
                "duration_s": p.sweep_s,
                "workers": p.loadgen_workers,
                "run_id": run_id(),
            }
            res = procs.run_loadgen(cfg, sampler)
            fig = _figures(res, sampler)
            fig["offered_per_s"] = level
            points[name].append(fig)
            achieved = fig["msgs_per_s"] or 0
            _log(
                f"sweep {name} {level}/s: achieved {achieved:.0f}/s, p50 {fig['p50_ms'] or 0:.2f} "
                f"p99 {fig['p99_ms'] or 0:.2f} ms, "
                f"server CPU {sampler.cpu_pct.get('server', 0):.0f}%"
            )
            if (
                achieved < 0.95 * level
                or (fig["p99_ms"] or 1e9) > 100
                or fig["errors"]["closed_by_server"]
            ):
                fig["saturated"] = True
                del live[name]
        if not live:
            break
    return points


# ------------------------------------------------------ (2) relay, two instances


def relay_two_instances(p: Params, servers: list[str], tokens: list[str]) -> dict[str, Any]:
    import redis

    out: dict[str, Any] = {
        "config": {"pairs": p.pairs, "duration_s": p.duration_s, "rounds": p.rounds_other},
        "servers": {},
    }
    redis_proc = procs.start_redis()
    with procs.running(redis_proc):
        url = f"redis://{HOST}:{redis_proc.port}/0"
        r = redis.Redis(host=HOST, port=redis_proc.port)
        clusters: dict[str, list[Proc]] = {}
        try:
            for name in servers:
                if dialect(name) == OURS:
                    src = VARIANTS.get(name.partition(":")[2])
                    clusters[name] = []  # filled one by one: stopped in `finally`
                    for i in (1, 2):
                        clusters[name].append(procs.start_sbd(url, name=f"{name}-{i}", src=src))
                else:
                    clusters[name] = []
                    for i in (1, 2):
                        clusters[name].append(procs.start_socketio(url, f"socketio-{i}"))
            conns: dict[str, dict[str, Any]] = {n: {} for n in servers}

            def count_conns(name: str, label: str) -> None:
                by_pid = procs.tcp_peers_by_pid(redis_proc.port)
                conns[name][label] = [
                    sum(by_pid.get(pid, 0) for pid in i.pids()) for i in clusters[name]
                ]

            # A small run first: Redis connections must not grow with the clients.
            small = max(2, p.pairs // 5)
            for name, insts in clusters.items():
                procs.run_loadgen(
                    {
                        "server": dialect(name),
                        "scenario": "relay",
                        "urls": [ws_url(i) for i in insts],
                        "tokens": tokens,
                        "pairs": small,
                        "warmup_s": 0.5,
                        "duration_s": 1.0,
                        "workers": p.loadgen_workers,
                        "run_id": run_id(),
                    },
                    Sampler(
                        {},
                        extra=lambda ev, n=name: (
                            count_conns(n, f"{2 * small} clients") if ev == "start" else None
                        ),
                    ),
                )
            rounds: dict[str, list[dict[str, Any]]] = {n: [] for n in servers}
            for rnd in range(p.rounds_other):
                for name, insts in clusters.items():
                    stats: dict[str, Any] = {}

                    def on_window(ev: str, name: str = name, stats: dict[str, Any] = stats) -> None:
                        if ev == "start":
                            r.config_resetstat()
                            count_conns(name, f"{2 * p.pairs} clients")
                        else:
                            stats.update(r.info("commandstats"))

                    sampler = Sampler(
                        {i.name: i for i in insts} | {"redis": redis_proc}, extra=on_window
                    )
                    res = procs.run_loadgen(
                        {
                            "server": dialect(name),
                            "scenario": "relay",
                            "urls": [ws_url(i) for i in insts],
                            "tokens": tokens,
                            "pairs": p.pairs,
                            "warmup_s": p.warmup_s,
                            "duration_s": p.duration_s,
                            "workers": p.loadgen_workers,
                            "run_id": run_id(),
                        },
                        sampler,
                    )
                    fig = _figures(res, sampler)
                    delivered = max(1, fig["delivered"] or 1)
                    calls = {
                        k.removeprefix("cmdstat_"): v["calls"]
                        for k, v in stats.items()
                        if "resetstat" not in k and "info" not in k
                    }
                    fig["redis_calls_per_msg"] = {
                        k: v / delivered for k, v in sorted(calls.items())
                    }
                    fig["redis_conns_per_instance"] = dict(conns[name])
                    _efficiency(fig, "msgs_per_s", [i.name for i in insts])
                    rounds[name].append(fig)
                    _log(
                        f"relay x2 {name} round {rnd + 1}: {fig['msgs_per_s'] or 0:.0f} msg/s p99 "
                        f"{fig['p99_ms'] or 0:.2f} ms; redis calls/msg "
                        f"{ {k: round(v, 2) for k, v in fig['redis_calls_per_msg'].items()} }; "
                        f"conns {conns[name]}; CPU "
                        f"{ {k: round(v) for k, v in sampler.cpu_pct.items()} }"
                    )
            for name in servers:
                out["servers"][name] = _best(rounds[name], "msgs_per_s")
        finally:
            for insts in clusters.values():
                for i in insts:
                    i.stop()
    return out


# ------------------------------------------------------------------ (3) fan-out


def fanout(p: Params, servers: list[str], tokens: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "config": {
            "rooms": p.fanout_rooms,
            "room_size": p.room_size,
            "duration_s": p.duration_s,
            "rounds": p.rounds_other,
        },
        "servers": {},
    }
    started = start_servers(servers)
    with procs.running(*started.values()):
        rounds: dict[str, list[dict[str, Any]]] = {n: [] for n in servers}
        for rnd in range(p.rounds_other):
            for name, proc in started.items():
                sampler = Sampler({"server": proc})
                res = procs.run_loadgen(
                    {
                        "server": dialect(name),
                        "scenario": "fanout",
                        "urls": [ws_url(proc)],
                        "tokens": tokens,
                        "rooms": p.fanout_rooms,
                        "room_size": p.room_size,
                        "warmup_s": p.warmup_s,
                        "duration_s": p.duration_s,
                        "workers": p.loadgen_workers,
                        "run_id": run_id(),
                    },
                    sampler,
                )
                fig = _figures(res, sampler)
                fig["deliveries_per_s"] = fig.pop("msgs_per_s")
                fig["broadcasts_per_s"] = (fig["deliveries_per_s"] or 0) / (p.room_size - 1)
                _efficiency(fig, "deliveries_per_s", ["server"])
                rounds[name].append(fig)
                _log(
                    f"fanout {name} round {rnd + 1}: {fig['deliveries_per_s'] or 0:.0f} "
                    f"deliveries/s p99 {fig['p99_ms'] or 0:.2f} ms, server CPU "
                    f"{sampler.cpu_pct.get('server', 0):.0f}%"
                )
        for name in servers:
            out["servers"][name] = _best(rounds[name], "deliveries_per_s")
    return out


# --------------------------------------------------------------- (4) join storm


def join_storm(p: Params, servers: list[str], tokens: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "config": {
            "join_rate": p.join_rate,
            "joins": p.joins,
            "max_rate_joins": p.max_rate_joins,
            "concurrency": p.join_concurrency,
            "room_size": p.room_size,
            "rounds": p.rounds_other,
        },
        "servers": {},
    }
    started = start_servers(servers)
    with procs.running(*started.values()):
        phases = (
            ("paced", {"joins": p.joins, "join_rate": p.join_rate}, "p99_ms", True),
            (
                "max",
                {"joins": p.max_rate_joins, "concurrency": p.join_concurrency},
                "joins_per_s",
                False,
            ),
        )
        for name in servers:
            out["servers"][name] = {}
        for phase, extra, key, lower in phases:
            rounds: dict[str, list[dict[str, Any]]] = {n: [] for n in servers}
            for rnd in range(p.rounds_other):
                for name, proc in started.items():
                    c0, t0 = proc.cpu(), time.monotonic()
                    res = procs.run_loadgen(
                        {
                            "server": dialect(name),
                            "scenario": "join",
                            "urls": [ws_url(proc)],
                            "tokens": tokens,
                            "room_size": p.room_size,
                            "workers": p.loadgen_workers,
                            "run_id": run_id(),
                            "max_s": 60,
                            **extra,
                        }
                    )
                    cpu = 100 * (proc.cpu() - c0) / (time.monotonic() - t0)
                    lat = res.get("latency", {})
                    fig = {
                        "joins_per_s": res.get("joins_per_s"),
                        "ok": res.get("ok"),
                        "failed": res.get("failed"),
                        "p50_ms": lat.get("p50_ms"),
                        "p99_ms": lat.get("p99_ms"),
                        "max_ms": lat.get("max_ms"),
                        "server_cpu_pct": cpu,
                        "loadgen_cpu_pct": res.get("loadgen_cpu_pct"),
                        "error": res.get("error"),
                    }
                    rounds[name].append(fig)
                    _log(
                        f"join {name} {phase} round {rnd + 1}: {fig['joins_per_s'] or 0:.0f} "
                        f"joins/s, p50 {fig['p50_ms'] or 0:.2f} p99 {fig['p99_ms'] or 0:.2f} ms, "
                        f"server CPU {cpu:.0f}%, failed {fig['failed']}"
                    )
                    time.sleep(0.5)  # let the closes settle
            for name in servers:
                out["servers"][name][phase] = _best(rounds[name], key, lower=lower)
    return out


# ------------------------------------------------------------------- (5) idle


def idle(p: Params, servers: list[str], tokens: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "config": {
            "conns": p.idle_conns,
            "room_size": p.idle_room_size,
            "nofile": procs.raise_nofile(),
        },
        "servers": {},
    }
    for name in servers:
        proc = start_server(name)
        with procs.running(proc):
            base_cfg = {
                "server": dialect(name),
                "scenario": "idle",
                "urls": [ws_url(proc)],
                "tokens": tokens,
                "room_size": p.idle_room_size,
                "workers": 2,
                "connect_concurrency": 100,
            }
            # Warm up (lazy imports, JIT, pools) so that the baseline is the steady state.
            procs.run_loadgen({**base_cfg, "conns": 200, "hold_s": 0.5, "run_id": run_id()})
            time.sleep(1.5)
            base = proc.rss()
            samples: list[int] = []

            def on_event(
                ev: dict[str, Any], samples: list[int] = samples, proc: Proc = proc
            ) -> None:
                if ev.get("event") == "ready":
                    for _ in range(3):
                        time.sleep(1.0)
                        samples.append(proc.rss())

            res = procs.run_loadgen(
                {**base_cfg, "conns": p.idle_conns, "hold_s": p.idle_hold_s, "run_id": run_id()},
                on_event,
                timeout=300,
            )
            loaded = max(samples) if samples else 0
            connected = res.get("connected") or 0
            fig = {
                "connected": connected,
                "rss_base_mb": base / 2**20,
                "rss_loaded_mb": loaded / 2**20,
                "kb_per_conn": (loaded - base) / 1024 / connected if connected else None,
                "connect_s": res.get("connect_s"),
                "conn_errors": res.get("conn_errors"),
                "closed_by_server": res.get("unexpected_closes"),
                "loadgen_rss_mb": res.get("loadgen_rss_mb"),
                "error": res.get("error"),
            }
            out["servers"][name] = fig
            _log(
                f"idle {name}: {connected} connected, {fig['kb_per_conn'] or 0:.1f} KB/conn "
                f"(RSS {fig['rss_base_mb']:.0f} -> {fig['rss_loaded_mb']:.0f} MB)"
            )
            with contextlib.suppress(Exception):
                time.sleep(0.5)
    return out
