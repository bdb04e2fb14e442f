"""Audit the installed distributions against PyPI's advisory data (`make audit`).

Why not pip-audit: it reads PyPI's per-version JSON API (/pypi/NAME/VERSION/json).
Where a mirror answers 404 there, pip-audit skips every package and exits 0, so
the audit passes while auditing nothing; OSV, its other service, may be
unreachable too. The project JSON (/pypi/NAME/json) still carries the advisories
(`vulnerabilities`) that apply to the project's latest release.

So, for each installed distribution: the per-version answer is authoritative
when there is one; else the project answer is, when the installed version is
the latest release; else the package is listed as unverified (no data about
that version here), which does not fail the audit. Distributions installed from
a local directory (the project itself, editable) are not on PyPI: skipped.

Exit status: 0 clean, 1 known vulnerabilities, 2 the audit could not be done
(network failure, an HTTP error other than 404, an answer that is not PyPI's
JSON; 2 wins over 1). Standard library only; `packaging`, when importable,
compares versions.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

DEFAULT_INDEX = "https://pypi.org"
TIMEOUT_S = 30.0
RETRIES = 2  # extra tries after a network error, a 5xx or a 429
WORKERS = 8


class AuditError(Exception):
    """PyPI could not be asked, or its answer was not what PyPI answers."""


@dataclass(frozen=True)
class Vulnerability:
    id: str
    aliases: frozenset[str]
    fixed_in: tuple[str, ...]
    description: str

    def names(self) -> frozenset[str]:
        return self.aliases | {self.id}


@dataclass
class PackageResult:
    name: str
    version: str
    # "version": the per-version endpoint answered; "latest": the project
    # endpoint did and the installed version is its latest release;
    # "unverified": neither says anything about this version; "missing": not
    # on the index at all.
    source: str
    vulns: list[Vulnerability] = field(default_factory=list)
    ignored: list[Vulnerability] = field(default_factory=list)
    latest: str | None = None
    # advisories of the latest release, for an unverified package (a hint only)
    latest_advisories: list[str] = field(default_factory=list)

    @property
    def pin(self) -> str:
        return f"{self.name}=={self.version}"


@dataclass
class Report:
    results: list[PackageResult]
    errors: list[str]

    def with_source(self, source: str) -> list[PackageResult]:
        return [r for r in self.results if r.source == source]

    @property
    def vulnerable(self) -> list[PackageResult]:
        return [r for r in self.results if r.vulns]

    @property
    def exit_code(self) -> int:
        if self.errors:
            return 2
        return 1 if self.vulnerable else 0

    def summary(self) -> str:
        verified = len(self.with_source("version")) + len(self.with_source("latest"))
        unverified = self.with_source("unverified")
        missing = self.with_source("missing")
        n_vulns = sum(len(r.vulns) for r in self.results)
        n_ignored = sum(len(r.ignored) for r in self.results)
        line = (
            f"audited {len(self.results) + len(self.errors)} packages: "
            f"{verified} against their own advisories, {len(unverified)} unverified "
            "(not the latest release; no per-version data here)"
        )
        if unverified:
            line += ": " + ", ".join(r.pin for r in unverified)
        if missing:
            line += f"; {len(missing)} not on the index: " + ", ".join(r.pin for r in missing)
        if self.errors:
            line += f"; {len(self.errors)} COULD NOT BE AUDITED"
        line += f"; {n_vulns} known vulnerabilities"
        if n_ignored:
            line += f" ({n_ignored} ignored)"
        return line


def canonical_name(name: str) -> str:
    """PEP 503 normalised project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


try:
    from packaging.version import InvalidVersion, Version

    def same_version(a: str, b: str) -> bool:
        try:
            return Version(a) == Version(b)
        except InvalidVersion:
            return a.strip() == b.strip()

except ImportError:  # pragma: no cover - packaging is nearly always there

    def same_version(a: str, b: str) -> bool:
        return a.strip() == b.strip()


def fetch_json(url: str, retries: int = RETRIES) -> dict[str, Any] | None:
    """GET a PyPI JSON document; None on 404, AuditError when it cannot be had."""
    for attempt in range(retries + 1):
        retry = attempt < retries
        request = urllib.request.Request(url, headers={"Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            if retry and (exc.code >= 500 or exc.code == 429):
                time.sleep(0.5 * (attempt + 1))
                continue
            raise AuditError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            if retry:
                time.sleep(0.5 * (attempt + 1))
                continue
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            raise AuditError(f"{url}: {reason}") from exc
        try:
            document = json.loads(body)
        except ValueError as exc:
            raise AuditError(f"{url}: the answer is not JSON") from exc
        if not isinstance(document, dict) or not isinstance(document.get("vulnerabilities"), list):
            raise AuditError(f"{url}: the answer has no 'vulnerabilities' list")
        return document
    raise AssertionError("unreachable")


def parse_vulnerabilities(entries: Iterable[Any]) -> list[Vulnerability]:
    """PyPI's advisory entries, withdrawn ones dropped, aliases of one another merged."""
    merged: list[Vulnerability] = []
    for entry in entries:
        if not isinstance(entry, dict) or "id" not in entry or entry.get("withdrawn"):
            continue
        text = entry.get("summary") or entry.get("details") or ""
        vuln = Vulnerability(
            id=str(entry["id"]),
            aliases=frozenset(str(a) for a in entry.get("aliases") or ()),
            fixed_in=tuple(str(v) for v in entry.get("fixed_in") or ()),
            description=" ".join(str(text).split()),
        )
        for i, known in enumerate(merged):
            if known.names() & vuln.names():
                merged[i] = Vulnerability(
                    id=known.id,
                    aliases=(known.aliases | vuln.names()) - {known.id},
                    fixed_in=tuple(dict.fromkeys(known.fixed_in + vuln.fixed_in)),
                    description=known.description or vuln.description,
                )
                break
        else:
            merged.append(vuln)
    return merged


def audit_one(
    name: str, version: str, index_url: str, ignore: frozenset[str], retries: int = RETRIES
) -> PackageResult:
    project = urllib.parse.quote(canonical_name(name))
    base = f"{index_url.rstrip('/')}/pypi/{project}"
    result = PackageResult(name=name, version=version, source="version")
    document = fetch_json(f"{base}/{urllib.parse.quote(version)}/json", retries)
    if document is None:
        document = fetch_json(f"{base}/json", retries)
        if document is None:
            result.source = "missing"
            return result
        info = document.get("info")
        latest = info.get("version") if isinstance(info, dict) else None
        if not isinstance(latest, str):
            raise AuditError(f"{base}/json: the answer has no info.version")
        result.latest = latest
        if not same_version(version, latest):
            # The latest release's advisories say nothing certain about an
            # older version, whatever their fixed_in: keep it unverified.
            result.source = "unverified"
            result.latest_advisories = [
                v.id for v in parse_vulnerabilities(document["vulnerabilities"])
            ]
            return result
        result.source = "latest"
    for vuln in parse_vulnerabilities(document["vulnerabilities"]):
        (result.ignored if vuln.names() & ignore else result.vulns).append(vuln)
    return result


def audit(
    packages: Sequence[tuple[str, str]],
    index_url: str = DEFAULT_INDEX,
    ignore: Iterable[str] = (),
    retries: int = RETRIES,
) -> Report:
    """Audit (name, version) pairs against the index's advisory data."""
    ignored = frozenset(ignore)
    report = Report(results=[], errors=[])

    def one(package: tuple[str, str]) -> PackageResult | str:
        try:
            return audit_one(package[0], package[1], index_url, ignored, retries)
        except AuditError as exc:
            return f"{package[0]}=={package[1]}: {exc}"

    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        for outcome in pool.map(one, packages):
            if isinstance(outcome, str):
                report.errors.append(outcome)
            else:
                report.results.append(outcome)
    return report


def _from_local_directory(dist: metadata.Distribution) -> bool:
    """Installed from a directory (editable or not), so not a release of the index."""
    text = dist.read_text("direct_url.json")
    if not text:
        return False
    try:
        direct_url = json.loads(text)
    except ValueError:
        return False
    return isinstance(direct_url, dict) and "dir_info" in direct_url


def installed_distributions() -> tuple[list[tuple[str, str]], list[str]]:
    """(name, version) of this interpreter's distributions, and those skipped."""
    seen: set[str] = set()
    packages: list[tuple[str, str]] = []
    skipped: list[str] = []
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if not name or canonical_name(name) in seen:
            continue  # shadowed by an earlier sys.path entry, as for imports
        seen.add(canonical_name(name))
        if _from_local_directory(dist):
            skipped.append(f"{name}=={dist.version}")
        else:
            packages.append((name, dist.version))
    return sorted(packages, key=lambda p: canonical_name(p[0])), skipped


def _package_arg(value: str) -> tuple[str, str]:
    name, sep, version = value.partition("==")
    if not sep or not name.strip() or not version.strip():
        raise argparse.ArgumentTypeError(f"expected NAME==VERSION, got {value!r}")
    return name.strip(), version.strip()


def print_report(report: Report, skipped: Sequence[str]) -> None:
    for result in report.vulnerable:
        for vuln in result.vulns:
            aliases = f" ({', '.join(sorted(vuln.aliases))})" if vuln.aliases else ""
            fixed = ", ".join(vuln.fixed_in) if vuln.fixed_in else "no fixed release"
            print(f"VULNERABLE {result.pin}: {vuln.id}{aliases}; fixed in: {fixed}")
            if vuln.description:
                text = vuln.description
                print(f"    {text[:157] + '...' if len(text) > 160 else text}")
    for result in report.results:
        for vuln in result.ignored:
            print(f"ignored {result.pin}: {vuln.id} (--ignore-vuln)")
        if result.latest_advisories:
            print(
                f"note {result.pin}: unverified; its latest release {result.latest} has "
                f"advisories {', '.join(result.latest_advisories)}"
            )
    sys.stdout.flush()
    for error in report.errors:
        print(f"ERROR could not audit {error}", file=sys.stderr)
    sys.stderr.flush()
    if skipped:
        print(f"skipped (installed from a local directory, not the index): {', '.join(skipped)}")
    print(report.summary())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--index-url", default=DEFAULT_INDEX, help=f"PyPI's base URL (default {DEFAULT_INDEX})"
    )
    parser.add_argument(
        "--ignore-vuln",
        action="append",
        default=[],
        metavar="ID",
        help="an advisory ID (or one of its aliases) to ignore; repeatable",
    )
    # Audit these instead of the environment (tests).
    parser.add_argument(
        "--package", action="append", type=_package_arg, default=None, help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    packages: list[tuple[str, str]] = args.package or []
    skipped: list[str] = []
    if args.package is None:
        packages, skipped = installed_distributions()
    report = audit(packages, args.index_url, args.ignore_vuln)
    print_report(report, skipped)
    return report.exit_code


if __name__ == "__main__":
    sys.exit(main())
