"""``python -m bench``: run the benchmark suite of issue 6 (see bench/README.md).

python -m bench [run] [--quick] [--only relay,relay2,fanout,join,idle] [--no-sweep]
                      [--servers sbd,peerjs,socketio] [--no-write]
python -m bench report RESULTS.json      re-render BENCHMARKS.md and the plot
python -m bench profile [--seconds 15]   py-spy on our server under the relay load
python -m bench asgi                     ASGI servers / WebSocket implementations / workers
python -m bench ceiling                  minimal relay per Python WebSocket stack vs PeerJS
python -m bench instr [--variant L=DIR]  instructions per message / join (callgrind, A/B)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from bench import procs, report, scenarios

ALL = ("relay", "relay2", "fanout", "join", "idle")
RESULTS_DIR = procs.BENCH_DIR / "results"
DEFAULT_OUT = procs.REPO / "BENCHMARKS.md"


def _check_setup() -> None:
    if not (procs.NODE_DIR / "node_modules" / "ws").is_dir():
        sys.exit("bench/node/node_modules is missing: run bench/setup.sh (or bench/run.sh)")


def cmd_run(args: argparse.Namespace) -> int:
    _check_setup()
    nofile = procs.raise_nofile()
    only = [s for s in args.only.split(",") if s] if args.only else list(ALL)
    servers = args.servers.split(",")
    for spec in args.variant or []:
        label, _, src = spec.partition("=")
        scenarios.VARIANTS[label] = str(Path(src).resolve())
    p = scenarios.Params.quick() if args.quick else scenarios.Params()
    print(f"bench: scenarios {only}, servers {servers}, open files {nofile}", flush=True)
    tokens = procs.sbd_tokens(8) if any(s.startswith("sbd") for s in servers) else []
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    t0 = time.monotonic()
    results: dict[str, Any] = {"started": started, "quick": args.quick}
    steps = {
        "relay": lambda: scenarios.relay(p, [s for s in servers], tokens, sweep=not args.no_sweep),
        "relay2": lambda: scenarios.relay_two_instances(
            p, [s for s in servers if scenarios.dialect(s) in ("sbd", "socketio")], tokens
        ),
        "fanout": lambda: scenarios.fanout(
            p, [s for s in servers if scenarios.dialect(s) in ("sbd", "socketio")], tokens
        ),
        "join": lambda: scenarios.join_storm(p, servers, tokens),
        "idle": lambda: scenarios.idle(p, servers, tokens),
    }
    for name in only:
        print(f"[{name}]", flush=True)
        t = time.monotonic()
        try:
            results[name] = steps[name]()
        except Exception as exc:  # keep the other scenarios' figures
            print(f"  {name} failed: {exc}", file=sys.stderr, flush=True)
            results.setdefault("failures", {})[name] = str(exc)
        print(f"  ({time.monotonic() - t:.0f} s)", flush=True)
    results["elapsed_s"] = time.monotonic() - t0
    results["machine"] = report.machine()
    results["command"] = args.command_line
    results["sbd_src"] = os.environ.get("BENCH_SBD_SRC") or "src/ (working tree)"
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"run-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=1))
    print(f"results: {path.relative_to(procs.REPO)}")
    if not args.no_write:
        _write(results, Path(args.out))
    return 1 if results.get("failures") else 0


# Sections written by hand or by other commands (`python -m bench.soak`): a
# rewrite keeps everything from the first of them to the end.
KEPT_HEADINGS = ("\n## Findings", "\n## Soak (issue 4)")


def _write(results: dict[str, Any], out: Path) -> None:
    plot_path = report.plot(results)
    text = report.render(results, results.get("command", "bench/run.sh"), plot_path)
    previous = out.read_text() if out.exists() else ""
    kept = [previous.index(heading) for heading in KEPT_HEADINGS if heading in previous]
    if kept:
        text = text.rstrip("\n") + "\n" + previous[min(kept) :]
    out.write_text(text)
    print(f"wrote {out}" + (f" and {plot_path}" if plot_path else ""))


def cmd_report(args: argparse.Namespace) -> int:
    results = json.loads(Path(args.results).read_text())
    for extra in args.add or []:
        results.update(json.loads(Path(extra).read_text()))
    _write(results, Path(args.out))
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    from bench import profile

    _check_setup()
    text = profile.run(
        seconds=args.seconds,
        pairs=args.pairs,
        out_dir=RESULTS_DIR,
        scenario=args.scenario,
        native=args.native,
    )
    print(text)
    _save_section(f"profile_{args.scenario}", text)
    return 0


def _save_section(key: str, text: str) -> None:
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{key}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({key: text}))
    print(f"\nsaved: {path.relative_to(procs.REPO)} (merge with `report RUN.json --add` it)")


def cmd_asgi(args: argparse.Namespace) -> int:
    from bench import asgi

    _check_setup()
    text = asgi.run(quick=args.quick, out_dir=RESULTS_DIR)
    print(text)
    _save_section("asgi", text)
    return 0


def cmd_instr(args: argparse.Namespace) -> int:
    from bench import instr

    _check_setup()
    variants = {}
    for spec in args.variant or []:
        label, _, src = spec.partition("=")
        variants[label] = str(Path(src).resolve())
    text = instr.run(variants, seconds=args.seconds)
    print(text)
    _save_section("instr", text)
    return 0


CEILING = ["sbd", "peerjs", "peerjs:asgi", "peerjs:websockets", "peerjs:picows"]


def cmd_ceiling(args: argparse.Namespace) -> int:
    _check_setup()
    procs.raise_nofile()
    p = scenarios.Params.quick() if args.quick else scenarios.Params()
    tokens = procs.sbd_tokens(8)
    res = scenarios.relay(p, CEILING, tokens, sweep=False)
    text = (
        "`bench/run.sh ceiling`: the relay workload of scenario 1 against minimal relays "
        "(bench/ceiling/) that do only what the PeerJS server does per message (parse JSON, "
        "set `src`, serialize, send to `dst`; PeerJS wire format), one per Python WebSocket "
        "stack, beside PeerJS and our server. What each stack allows before any of our code.\n\n"
        + report.section_relay(res).split("\n\n", 1)[1]
    )
    print(text)
    _save_section("ceiling", text)
    return 0


def cmd_webhooks(args: argparse.Namespace) -> int:
    import asyncio

    from bench import webhooks

    procs.raise_nofile()
    text = asyncio.run(webhooks.run(quick=args.quick))
    print(text)
    _save_section("webhooks", text)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="cmd")
    run = sub.add_parser("run", help="run the scenarios (default)")
    run.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test of the harness")
    run.add_argument("--only", help=f"comma-separated subset of {','.join(ALL)}")
    run.add_argument("--servers", default="sbd,peerjs,socketio")
    run.add_argument("--no-sweep", action="store_true", help="skip the open-loop latency sweep")
    run.add_argument(
        "--variant",
        action="append",
        metavar="LABEL=SRC_DIR",
        help="also run our server from SRC_DIR as server sbd:LABEL (A/B of a patch)",
    )
    run.add_argument("--no-write", action="store_true", help="keep BENCHMARKS.md as it is")
    run.add_argument("--out", default=str(DEFAULT_OUT))
    run.set_defaults(func=cmd_run)
    hooks = sub.add_parser(
        "webhooks", help="leave-to-webhook latency, and the 2,000-peer flood (issue 14)"
    )
    hooks.add_argument("--quick", action="store_true", help="20 peers, a flood of 200")
    hooks.set_defaults(func=cmd_webhooks)
    rep = sub.add_parser("report", help="re-render BENCHMARKS.md from a results file")
    rep.add_argument("results")
    rep.add_argument("--add", action="append", help="merge another results JSON (asgi, profile)")
    rep.add_argument("--out", default=str(DEFAULT_OUT))
    rep.set_defaults(func=cmd_report)
    prof = sub.add_parser("profile", help="py-spy our server under the relay workload")
    prof.add_argument("--seconds", type=float, default=15)
    prof.add_argument("--pairs", type=int, default=50)
    prof.add_argument("--scenario", choices=["relay", "relay2", "join"], default="relay")
    prof.add_argument("--native", action="store_true", help="include C frames (py-spy --native)")
    prof.set_defaults(func=cmd_profile)
    asg = sub.add_parser("asgi", help="compare ASGI servers / WebSocket implementations / workers")
    asg.add_argument("--quick", action="store_true")
    asg.set_defaults(func=cmd_asgi)
    ins = sub.add_parser("instr", help="instructions per message / join under callgrind (A/B)")
    ins.add_argument("--variant", action="append", metavar="LABEL=SRC_DIR")
    ins.add_argument("--seconds", type=float, default=15)
    ins.set_defaults(func=cmd_instr)
    ceil = sub.add_parser("ceiling", help="minimal Python relays vs PeerJS: each stack's ceiling")
    ceil.add_argument("--quick", action="store_true")
    ceil.set_defaults(func=cmd_ceiling)
    if not argv or argv[0] not in (
        "run",
        "report",
        "profile",
        "asgi",
        "ceiling",
        "instr",
        "webhooks",
        "-h",
        "--help",
    ):
        argv.insert(0, "run")
    args = parser.parse_args(argv)
    args.command_line = "bench/run.sh " + " ".join(a for a in argv if a != "run")
    args.command_line = args.command_line.strip()
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
