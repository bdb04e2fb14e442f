"""The browser SDK as npm would publish it: `npm pack` of the SDK's folder
(the very files the app serves at /static), installed into a scratch folder
the way an application installs it. The tests type-check and run that copy,
so what would be published is what is tested.

Both tools run offline: `npm pack` reads the folder, `npm install --offline`
of a tarball without dependencies asks no registry; TypeScript comes from
`make sdk-deps` (`npm ci` in sdk/js, from its package-lock.json).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SDK_SOURCES = REPO / "src" / "second_brain_database" / "webrtc" / "static"
SDK_CHECKS = REPO / "sdk" / "js"
TSC = SDK_CHECKS / "node_modules" / ".bin" / "tsc"
PACKAGE_NAME = "@second-brain-database/signaling"
NPM_QUIET = ["--no-audit", "--no-fund", "--loglevel=error"]


def _run(command: list[str], cwd: Path) -> str:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} (in {cwd}) exited {done.returncode}:\n"
            f"{done.stdout}\n{done.stderr}"
        )
    return done.stdout


def npm() -> str:
    found = shutil.which("npm")
    if found is None:
        raise RuntimeError("npm is not on PATH: apt-get install -y nodejs npm")
    return found


def tsc() -> Path:
    if not TSC.exists():
        raise RuntimeError(f"{TSC} is missing: run `make sdk-deps` (npm ci in sdk/js)")
    return TSC


def pack(destination: Path) -> Path:
    """`npm pack` of the SDK folder into ``destination``; the tarball's path."""
    destination.mkdir(parents=True, exist_ok=True)
    out = _run([npm(), "pack", "--json", "--pack-destination", str(destination)], SDK_SOURCES)
    [packed] = json.loads(out)
    return destination / packed["filename"]


def install(tarball: Path, app_dir: Path) -> Path:
    """Install the tarball into a fresh application folder, offline; returns
    the installed package's folder (node_modules/@second-brain-database/signaling)."""
    app_dir.mkdir(parents=True, exist_ok=True)
    (app_dir / "package.json").write_text('{"private": true, "type": "module"}\n')
    _run([npm(), "install", "--offline", *NPM_QUIET, str(tarball)], app_dir)
    return app_dir / "node_modules" / PACKAGE_NAME


def pack_and_install(workdir: Path) -> Path:
    return install(pack(workdir / "tarball"), workdir / "app")
