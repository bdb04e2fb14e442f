"""scripts/audit_deps.py, the dependency audit of `make audit`.

The tests run the script against a local stand-in for PyPI's JSON API that
serves fixture documents, so they need no network; `make audit` runs it over
this environment and the real index (.ci/run, after the tests).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "audit_deps.py"


class FakeIndex:
    """Answers GET PATH from `routes` (status, body); any other path is a 404."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, bytes]] = {}
        self.requests: list[str] = []
        index = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                index.requests.append(self.path)
                status, body = index.routes.get(self.path, (404, b"Not Found"))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def serve(self, path: str, document: dict[str, Any], status: int = 200) -> None:
        self.routes[path] = (status, json.dumps(document).encode())

    def project(self, name: str, latest: str, vulns: list[dict[str, Any]]) -> None:
        """/pypi/NAME/json: the latest release and its advisories."""
        self.serve(f"/pypi/{name}/json", document(latest, vulns))

    def release(self, name: str, version: str, vulns: list[dict[str, Any]]) -> None:
        """/pypi/NAME/VERSION/json, the per-version answer."""
        self.serve(f"/pypi/{name}/{version}/json", document(version, vulns))


def document(version: str, vulns: list[dict[str, Any]]) -> dict[str, Any]:
    return {"info": {"version": version}, "releases": {}, "urls": [], "vulnerabilities": vulns}


def advisory(
    id: str, aliases: list[str], fixed_in: list[str], withdrawn: str | None = None
) -> dict[str, Any]:
    return {
        "id": id,
        "aliases": aliases,
        "fixed_in": fixed_in,
        "details": f"{id}: something bad",
        "summary": None,
        "link": f"https://osv.dev/vulnerability/{id}",
        "source": "osv",
        "withdrawn": withdrawn,
    }


@pytest.fixture
def index() -> Iterator[FakeIndex]:
    fake = FakeIndex()
    thread = threading.Thread(target=fake.httpd.serve_forever, daemon=True)
    thread.start()
    yield fake
    fake.httpd.shutdown()
    fake.httpd.server_close()
    thread.join(timeout=5)


def audit(index: FakeIndex, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--index-url", index.url, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def summary(run: subprocess.CompletedProcess[str]) -> str:
    lines = run.stdout.strip().splitlines()
    assert lines, run.stderr
    assert lines[-1].startswith("audited "), run.stdout
    return lines[-1]


def test_latest_release_with_an_advisory_fails_when_per_version_data_is_missing(
    index: FakeIndex,
) -> None:
    index.project("vulnlib", "1.2.0", [advisory("PYSEC-2099-1", ["CVE-2099-0001"], ["1.3.0"])])
    run = audit(index, "--package", "vulnlib==1.2.0")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "vulnlib==1.2.0: PYSEC-2099-1 (CVE-2099-0001); fixed in: 1.3.0" in run.stdout
    assert "1 against their own advisories" in summary(run)
    assert "1 known vulnerabilities" in summary(run)
    # The per-version answer (what pip-audit reads) is asked for first.
    assert index.requests == ["/pypi/vulnlib/1.2.0/json", "/pypi/vulnlib/json"]


def test_latest_release_without_advisories_is_audited_and_clean(index: FakeIndex) -> None:
    index.project("cleanlib", "2.0", [advisory("PYSEC-2099-2", [], ["1.0"], withdrawn="2099")])
    # Installed as "2.0.0": the same version as "2.0", once normalised.
    index.project("other-lib", "3.1", [])
    run = audit(index, "--package", "cleanlib==2.0.0", "--package", "Other_Lib==3.1")
    assert run.returncode == 0, run.stdout + run.stderr
    assert summary(run) == (
        "audited 2 packages: 2 against their own advisories, 0 unverified "
        "(not the latest release; no per-version data here); 0 known vulnerabilities"
    )
    assert "/pypi/other-lib/json" in index.requests  # asked under the normalised name


def test_per_version_answer_is_authoritative(index: FakeIndex) -> None:
    index.release("oldlib", "1.0", [advisory("GHSA-aaaa-bbbb-cccc", ["PYSEC-2099-3"], ["1.1"])])
    # The latest release is clean, and is not what is installed: not asked.
    index.project("oldlib", "5.0", [])
    run = audit(index, "--package", "oldlib==1.0")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "oldlib==1.0: GHSA-aaaa-bbbb-cccc (PYSEC-2099-3); fixed in: 1.1" in run.stdout
    assert index.requests == ["/pypi/oldlib/1.0/json"]


def test_an_older_release_without_per_version_data_is_unverified(index: FakeIndex) -> None:
    index.project("newerlib", "2.0", [])
    # The latest release has an advisory fixed after the installed version:
    # that says nothing certain about the installed one either.
    index.project("flakylib", "3.0", [advisory("PYSEC-2099-4", [], ["3.1"])])
    run = audit(index, "--package", "newerlib==1.0", "--package", "flakylib==2.0")
    assert run.returncode == 0, run.stdout + run.stderr
    assert summary(run) == (
        "audited 2 packages: 0 against their own advisories, 2 unverified "
        "(not the latest release; no per-version data here): newerlib==1.0, flakylib==2.0; "
        "0 known vulnerabilities"
    )
    assert "VULNERABLE" not in run.stdout


def test_a_server_error_fails_the_audit(index: FakeIndex) -> None:
    index.serve("/pypi/brokenlib/1.0/json", {"message": "oops"}, status=500)
    run = audit(index, "--package", "brokenlib==1.0")
    assert run.returncode == 2, run.stdout + run.stderr
    assert "could not audit brokenlib==1.0" in run.stderr
    assert "HTTP 500" in run.stderr
    assert "1 COULD NOT BE AUDITED" in summary(run)
    assert index.requests == ["/pypi/brokenlib/1.0/json"] * 3  # retried twice


def test_an_answer_that_is_not_pypi_json_fails_the_audit(index: FakeIndex) -> None:
    index.routes["/pypi/captive/json"] = (200, b"<html>sign in to the wifi</html>")
    run = audit(index, "--package", "captive==1.0")
    assert run.returncode == 2, run.stdout + run.stderr
    assert "not JSON" in run.stderr


def test_ignore_vuln_suppresses_by_id_or_alias(index: FakeIndex) -> None:
    index.project(
        "vulnlib",
        "1.2.0",
        [
            advisory("PYSEC-2099-5", ["CVE-2099-0005"], []),
            advisory("GHSA-xxxx-yyyy-zzzz", ["CVE-2099-0005", "PYSEC-2099-5"], []),
            advisory("PYSEC-2099-6", [], ["1.3"]),
        ],
    )
    one_left = audit(index, "--package", "vulnlib==1.2.0", "--ignore-vuln", "CVE-2099-0005")
    assert one_left.returncode == 1, one_left.stdout + one_left.stderr
    assert "PYSEC-2099-6" in one_left.stdout
    assert "1 known vulnerabilities (1 ignored)" in summary(one_left)

    run = audit(
        index,
        "--package",
        "vulnlib==1.2.0",
        "--ignore-vuln",
        "CVE-2099-0005",
        "--ignore-vuln",
        "PYSEC-2099-6",
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "VULNERABLE" not in run.stdout
    assert "0 known vulnerabilities (2 ignored)" in summary(run)
