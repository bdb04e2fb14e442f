"""Real edge processes for the tests: nginx and coturn, run from the shipped
configs in deploy/ with loopback addresses, free ports and a temp dir.

Each config is the production file with a few directives swapped (and the
swap asserts that each directive is still there), so the tests exercise
what an operator installs, not a look-alike.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.servers import free_port

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
NGINX_CONF = DEPLOY / "nginx.conf"
TURN_CONF = DEPLOY / "turnserver.conf"


def _binary(name: str, package: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if path is None:
        raise RuntimeError(f"{name} is not installed; apt-get install -y {package}")
    return path


def _sub(pattern: str, replacement: str, text: str, count: int = 0) -> str:
    """re.sub that fails when the shipped config no longer has ``pattern``."""
    result, n = re.subn(pattern, replacement, text, count=count, flags=re.MULTILINE)
    if n == 0:
        raise AssertionError(f"deploy config lost the directive matching {pattern!r}")
    return result


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost (openssl, EC P-256: fast)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-nodes", "-days", "1", "-subj", "/CN=localhost"),
            *("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
            *("-keyout", str(key), "-out", str(cert)),
            *("-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def _wait_for_log(path: Path, needle: str, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited early:\n{path.read_text(errors='replace')}")
        if path.exists() and needle in path.read_text(errors="replace"):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not start:\n{path.read_text(errors='replace')}")


class Nginx:
    """deploy/nginx.conf in front of ``upstreams``, on two free loopback ports."""

    def __init__(self, upstreams: list[int]) -> None:
        self.binary = _binary("nginx", "nginx")
        self.dir = Path(tempfile.mkdtemp(prefix="sbd-nginx-"))
        self.http_port = free_port()
        self.https_port = free_port()
        self.cert, self.key = self_signed_cert(self.dir)
        self.conf = self.dir / "nginx.conf"
        self.conf.write_text(self.render(NGINX_CONF.read_text(), upstreams))
        self.process: subprocess.Popen[bytes] | None = None

    def render(self, text: str, upstreams: list[int]) -> str:
        d = self.dir
        servers = "".join(
            f"        server 127.0.0.1:{port} max_fails=3 fail_timeout=10s;\n" for port in upstreams
        )
        text = _sub(r"(^        server 127\.0\.0\.1:\d+[^\n]*\n)+", servers, text, count=1)
        text = _sub(r"^(\s*)listen 80;", rf"\1listen 127.0.0.1:{self.http_port};", text)
        text = _sub(r"^(\s*)listen 443 ssl;", rf"\1listen 127.0.0.1:{self.https_port} ssl;", text)
        text = _sub(r"ssl_certificate /\S+;", f"ssl_certificate {self.cert};", text)
        text = _sub(r"ssl_certificate_key /\S+;", f"ssl_certificate_key {self.key};", text)
        text = _sub(r"^pid /\S+;", f"pid {d}/nginx.pid;", text)
        text = _sub(r"^error_log /\S+", f"error_log {d}/error.log", text)
        text = _sub(r"access_log /\S+ sbd;", f"access_log {d}/access.log sbd;", text)
        # Temp files under the test's directory, not /var/lib/nginx.
        temp = "".join(
            f"    {kind}_temp_path {d}/{kind};\n"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        return _sub(r"^http \{\n", "http {\n" + temp, text, count=1)

    @property
    def https_url(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    @property
    def wss_url(self) -> str:
        return f"wss://127.0.0.1:{self.https_port}"

    def command(self, *extra: str) -> list[str]:
        return [
            self.binary,
            "-p",
            str(self.dir),
            "-c",
            str(self.conf),
            "-e",
            str(self.dir / "error.log"),
            *extra,
        ]

    def test_config(self) -> subprocess.CompletedProcess[str]:
        """``nginx -t``: the operator's syntax check."""
        return subprocess.run(self.command("-t"), capture_output=True, text=True, check=False)

    def start(self) -> Nginx:
        self.process = subprocess.Popen(
            self.command("-g", "daemon off;"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _wait_for_pid(self.dir / "nginx.pid", self.process, self.dir / "error.log")
        return self

    def access_log(self) -> str:
        path = self.dir / "access.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)  # graceful: close client sockets
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None
        shutil.rmtree(self.dir, ignore_errors=True)


def _wait_for_pid(pid_file: Path, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"nginx exited early:\n{log.read_text(errors='replace')}")
        if pid_file.exists() and pid_file.read_text().strip():
            return
        time.sleep(0.05)
    raise RuntimeError("nginx did not write its pid file")


class Coturn:
    """deploy/turnserver.conf on 127.0.0.1, with ``secret`` as static-auth-secret.

    The loopback exceptions a one-host test needs (production denies them):
    allow-loopback-peers, and 127.0.0.1 as an allowed peer, which coturn
    ranks above the shipped denied-peer-ip ranges."""

    REALM = "sbd.test"

    def __init__(self, secret: str) -> None:
        self.binary = _binary("turnserver", "coturn")
        self.dir = Path(tempfile.mkdtemp(prefix="sbd-coturn-"))
        self.port = free_port()
        self.secret = secret
        self.conf = self.dir / "turnserver.conf"
        self.conf.write_text(self.render(TURN_CONF.read_text()))
        self.log_path = self.dir / "turnserver.log"
        self.process: subprocess.Popen[bytes] | None = None

    def render(self, text: str) -> str:
        d = self.dir
        # A relay port range of its own per run, away from other tests' ports.
        low = 20000 + (self.port % 200) * 100
        for key, value in {
            "listening-port": str(self.port),
            "listening-ip": "127.0.0.1",
            "relay-ip": "127.0.0.1",
            "min-port": str(low),
            "max-port": str(low + 99),
            "static-auth-secret": self.secret,
            "realm": self.REALM,
            "log-file": "stdout",
            "pidfile": f"{d}/turnserver.pid",
            "userdb": f"{d}/turndb",
            "tls-listening-port": str(free_port()),
        }.items():
            text = _sub(rf"^{re.escape(key)}=.*$", f"{key}={value}", text)
        # No certificate on a test host: TLS listeners off.
        text = _sub(r"^cert=.*\n", "", text)
        text = _sub(r"^pkey=.*\n", "", text)
        return text + "\nno-tls\nallow-loopback-peers\nallowed-peer-ip=127.0.0.1\n"

    @property
    def url(self) -> str:
        return f"turn:127.0.0.1:{self.port}?transport=udp"

    def start(self) -> Coturn:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [self.binary, "-c", str(self.conf)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        _wait_for_log(self.log_path, "Total General servers", self.process, "turnserver")
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None
        shutil.rmtree(self.dir, ignore_errors=True)
