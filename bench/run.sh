#!/usr/bin/env bash
# The benchmark suite in one command (about 6-8 minutes):
#   bench/run.sh                 all five scenarios, writes BENCHMARKS.md and docs/img/bench-relay-latency.png
#   bench/run.sh --quick         a 1-minute smoke test of the harness (does not mean anything)
#   bench/run.sh --only relay    a subset; see `bench/run.sh --help`
#   bench/run.sh profile|asgi    py-spy profile / ASGI server comparison (bench/README.md)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
"$here/setup.sh"
# The idle scenario holds 10,000 sockets in the server and as many in the load generator.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
cd "$repo"
exec "${PYTHON:-$repo/.venv/bin/python}" -m bench "$@"
