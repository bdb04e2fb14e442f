#!/usr/bin/env bash
# Install what the benchmark needs into bench-local folders (idempotent):
#   bench/node/node_modules  the peers and the load generator (npm ci, from package-lock.json)
#   bench/.pydeps            matplotlib for the plot, py-spy for `python -m bench profile`,
#                            the ASGI servers compared by `python -m bench asgi` and picows
#                            for `python -m bench ceiling`
# Nothing here is a dependency of the server.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
py="${PYTHON:-$repo/.venv/bin/python}"

command -v node >/dev/null || { echo "bench: node (>= 20) is required" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "bench: redis-server is required (apt-get install redis-server)" >&2; exit 1; }

if [ ! -d "$here/node/node_modules/ws" ] || [ "$here/node/package-lock.json" -nt "$here/node/node_modules/.package-lock.json" ]; then
  (cd "$here/node" && npm ci --no-audit --no-fund --loglevel=error)
fi

stamp="$here/.pydeps/.installed-v2"
if [ ! -f "$stamp" ]; then
  "$py" -m pip install --quiet --disable-pip-version-check --target "$here/.pydeps" \
    'matplotlib>=3.8' 'py-spy>=0.3.14' 'wsproto>=1.2' 'granian>=1.6' 'picows>=1.7'
  touch "$stamp"
fi
