"""Autobahn|Testsuite's fuzzingclient against this server (``make conformance``).

Three targets, each a real server process on a free port:

- ``native``: ``tests/autobahn_echo.py``'s ``/native`` echo under uvicorn with
  the production protocol and frame parser (``webrtc/native_ws.py``,
  ``webrtc/rfc6455.py``): the connection is taken over as a signaling
  session takes it.
- ``asgi``: the same server's ``/asgi`` echo, a route that stays on the ASGI
  path of the same protocol.
- ``endpoint``: ``sbd serve`` (production defaults) and the real
  ``/ws/webrtc/{room}`` endpoint. It answers signaling frames, not echoes, so
  it is judged by how each connection is closed (``behaviorClose``) only;
  the sections that measure echoes of large messages (9, 10) are left out.

Sections 12 and 13 (permessage-deflate) are excluded: compression is never
negotiated, by design. The run fails on any FAILED or NON-STRICT verdict, and
on any ERROR line or traceback in a server's log. ``--markdown`` prints the
per-section table that docs/conformance.md records.

The testsuite is Python 2 code: the Makefile installs it, pinned, into
``.autobahn/`` with pyenv's Python 2.7 (no network needed after that).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.autobahn_echo import start_echo  # noqa: E402
from tests.servers import SbdServer, free_port  # noqa: E402

VERDICTS = ("OK", "NON-STRICT", "FAILED", "INFORMATIONAL", "UNIMPLEMENTED")
PASSING = frozenset({"OK", "INFORMATIONAL", "UNIMPLEMENTED"})
EXCLUDED = ["12.*", "13.*"]  # permessage-deflate: never negotiated
# Messages past the endpoint's 64 KiB cap: sections 9 and 10 measure their
# echo, 7.1.6 sends 256 KiB before its close (the endpoint answers 1009).
ENDPOINT_EXCLUDED = ["9.*", "10.*", "7.1.6"]


def endpoint_token(server: SbdServer) -> str:
    out = subprocess.run(
        [str(Path(sys.executable).parent / "sbd"), "token", "autobahn", "--ttl", "3600"],
        env=server.env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return out.stdout.strip()


def run_wstest(python2: str, autobahn: Path, spec: dict[str, object], workdir: Path) -> None:
    spec_path = workdir / "fuzzingclient.json"
    spec_path.write_text(json.dumps(spec, indent=2))
    # site.addsitedir, not PYTHONPATH: zope.interface is a namespace package
    # whose .pth file must be read.
    bootstrap = (
        "import site, sys; site.addsitedir(sys.argv[1]); "
        "sys.argv = ['wstest', '-m', 'fuzzingclient', '-s', sys.argv[2]]; "
        "from autobahntestsuite.wstest import run; run()"
    )
    with open(workdir / "wstest.log", "wb") as out:
        subprocess.run(
            [python2, "-W", "ignore", "-c", bootstrap, str(autobahn.resolve()), str(spec_path)],
            stdout=out, stderr=subprocess.STDOUT, cwd=workdir, check=True, timeout=1800,
        )  # fmt: skip


def section(case_id: str) -> str:
    return case_id.split(".")[0]


def endpoint_verdict(result: dict[str, Any]) -> str:
    """The endpoint answers signaling frames, not echoes: judged by its close.
    Where Autobahn expects the server to fail the connection, the server's
    code must be one it allows; elsewhere the server must answer the client's
    close with the same code (the client closes every such case), or with one
    of the codes the case allows."""
    remote = result["remoteCloseCode"]
    if remote in result["expectedClose"]["closeCode"]:
        return "OK"
    return "OK" if result["closedByMe"] and remote == result["localCloseCode"] else "FAILED"


Index = dict[str, dict[str, dict[str, Any]]]


def judge(index: Index, reports: Path) -> tuple[list[str], list[str]]:
    """Markdown table rows per target and section, and the cases that fail."""
    rows: list[str] = []
    failures: list[str] = []
    for agent, cases in sorted(index.items()):
        counts: dict[str, Counter[str]] = defaultdict(Counter)
        for case_id, result in cases.items():
            if agent == "endpoint":
                report = json.loads((reports / result["reportfile"]).read_text())
                verdict = close = endpoint_verdict(report)
            else:
                verdict, close = result["behavior"], result["behaviorClose"]
            counts[section(case_id)][verdict] += 1
            if verdict not in PASSING or close not in PASSING:
                failures.append(f"{agent} {case_id}: {verdict} (close: {close})")
        for name in sorted(counts, key=int):
            count = counts[name]
            cells = " | ".join(str(count[v]) for v in VERDICTS)
            rows.append(f"| {agent} | {name} | {sum(count.values())} | {cells} |")
    return rows, failures


def log_errors(log: Path) -> list[str]:
    lines = log.read_text(errors="replace").splitlines()
    return [f"{log.name}: {line}" for line in lines if "ERROR" in line or "Traceback" in line]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--autobahn", type=Path, default=ROOT / ".autobahn")
    parser.add_argument("--python2", default=os.environ.get("PYTHON2", "python2"))
    parser.add_argument("--cases", nargs="*", default=["*"], help="e.g. 3.* 6.4.*")
    parser.add_argument("--markdown", action="store_true", help="print the table only")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="sbd-autobahn-"))
    echo_port = free_port()
    echo_log = workdir / "echo.log"
    started = time.monotonic()
    echo = start_echo(echo_port, echo_log)
    server = SbdServer(
        {
            # Hundreds of connections from one address and one user in a
            # minute: the abuse limits are not what is measured here.
            "SBD_HANDSHAKE_RATE_PER_S": "0",
            "SBD_MAX_CONNECTIONS_PER_USER": "0",
            # Every case joins the same room; one closed with 1001 is held
            # for its resume, which would fill the room.
            "SBD_RESUME_TTL": "0",
            "SBD_MAX_PEERS_PER_ROOM": "1000",
            "SBD_LOG_FORMAT": "text",
        },
        log_dir=workdir,
    )
    try:
        server.start()
        token = endpoint_token(server)
        spec = {
            "outdir": str(workdir / "reports"),
            "servers": [
                {"agent": "native", "url": f"ws://127.0.0.1:{echo_port}/native"},
                {"agent": "asgi", "url": f"ws://127.0.0.1:{echo_port}/asgi"},
                {"agent": "endpoint", "url": f"{server.ws_url}/ws/webrtc/autobahn?token={token}"},
            ],
            "cases": args.cases,
            "exclude-cases": EXCLUDED,
            "exclude-agent-cases": {"endpoint": ENDPOINT_EXCLUDED},
        }
        run_wstest(args.python2, args.autobahn, spec, workdir)
    finally:
        server.stop()
        echo.terminate()
        echo.wait(10)
    elapsed = time.monotonic() - started

    index = json.loads((workdir / "reports" / "index.json").read_text())
    rows, failures = judge(index, workdir / "reports")
    failures += log_errors(echo_log) + log_errors(server.log_path)
    print("| target | section | cases | " + " | ".join(VERDICTS) + " |")
    print("| --- | --- | --- | " + " | ".join("---" for _ in VERDICTS) + " |")
    print("\n".join(rows))
    if args.markdown:
        return 0 if not failures else 1
    print(f"\n{sum(len(c) for c in index.values())} cases in {elapsed:.0f} s; reports in {workdir}")
    if failures:
        print(f"{len(failures)} failures:\n  " + "\n  ".join(failures[:60]))
        return 1
    print("0 FAILED, 0 NON-STRICT, server logs clean")
    return 0


if __name__ == "__main__":
    sys.exit(main())
