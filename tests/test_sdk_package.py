"""The browser SDK's npm package: what `npm pack` puts in it, that its
`exports` resolve, and `tsc --noEmit` over a TypeScript usage example, the
call page and the declarations against the implementation. The Chromium
side (the packed SDK making calls) is tests/browser/test_sdk_package.py."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.sdk_package import (
    PACKAGE_NAME,
    SDK_CHECKS,
    SDK_SOURCES,
    pack_and_install,
    tsc,
)

EXAMPLE = SDK_CHECKS / "example"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pack_and_install(tmp_path_factory.mktemp("sdk-package"))


def run_tsc(project: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(tsc()), "-p", str(project)], capture_output=True, text=True, check=False
    )


def type_check_example(installed: Path) -> subprocess.CompletedProcess[str]:
    """Copy the example next to the installed package, derive declarations
    from the packed JavaScript (impl-types/), then compile the example and
    the agreement checks against the package's own declarations."""
    app = installed.parents[2]
    for source in EXAMPLE.iterdir():
        shutil.copy(source, app / source.name)
    impl = app / "impl"
    shutil.rmtree(impl, ignore_errors=True)
    impl.mkdir()
    for script in installed.glob("*.js"):
        shutil.copy(script, impl / script.name)
    derived = run_tsc(app / "tsconfig.impl.json")
    if derived.returncode != 0:
        return derived
    return run_tsc(app / "tsconfig.json")


def test_tarball_is_the_served_sdk_and_nothing_else(installed: Path) -> None:
    manifest = json.loads((installed / "package.json").read_text())
    published = {path.name for path in installed.iterdir()}
    assert published == {"package.json", *manifest["files"]}
    # Modules and their declarations, no page (call.js, index.html, call.css).
    assert {"sbd-signaling.js", "sbd-peer.js", "sbd-errors.js"} <= published
    assert {"sbd-signaling.d.ts", "sbd-peer.d.ts", "sbd-errors.d.ts"} <= published
    assert not published & {"call.js", "index.html", "call.css"}
    # One copy of the code: every published file is the one the app serves.
    for name in manifest["files"]:
        assert (installed / name).read_bytes() == (SDK_SOURCES / name).read_bytes(), name


def test_exports_resolve_for_node_and_typescript(installed: Path) -> None:
    manifest = json.loads((installed / "package.json").read_text())
    assert manifest["type"] == "module"
    entry = manifest["exports"]["."]
    assert manifest["types"] == entry["types"] and (installed / entry["types"]).is_file()
    assert (installed / entry["default"]).is_file()
    # Node resolves the bare name through `exports` and loads the ES module.
    done = subprocess.run(
        [
            shutil.which("node") or "node",
            "--input-type=module",
            "-e",
            f"const m = await import({json.dumps(PACKAGE_NAME)});"
            "console.log(JSON.stringify(Object.keys(m).sort()))",
        ],
        cwd=installed.parents[2],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(done.stdout) == [
        "CLOSE_CODES",
        "CallClient",
        "RemotePeer",
        "SignalingClient",
        "SignalingError",
        "closeMeaning",
        "fetchRtcConfig",
        "fetchTicket",
        "login",
        "tokenExpiry",
    ]


def test_typescript_example_compiles_against_the_package(installed: Path) -> None:
    done = type_check_example(installed)
    assert done.returncode == 0, done.stdout + done.stderr


def test_type_check_catches_a_declaration_the_code_does_not_keep(tmp_path: Path) -> None:
    """The agreement check has teeth: a published SignalingClient whose
    sendData() was renamed (its own code still type-checks) fails it, and so
    does a declared export that the module no longer exports."""
    installed = pack_and_install(tmp_path)
    entry = installed / "sbd-signaling.js"
    original = entry.read_text()
    entry.write_text(
        original.replace("  sendData(data, to = null) {", "  sendDatum(data, to = null) {")
    )
    done = type_check_example(installed)
    assert done.returncode != 0
    assert "agreement.ts" in done.stdout and "sendData" in done.stdout

    entry.write_text(original.replace("export function tokenExpiry", "function tokenExpiry"))
    done = type_check_example(installed)
    assert done.returncode != 0
    assert "agreement.ts" in done.stdout and "tokenExpiry" in done.stdout


def test_call_page_type_checks_against_the_declarations() -> None:
    done = run_tsc(SDK_CHECKS / "tsconfig.page.json")
    assert done.returncode == 0, done.stdout + done.stderr
