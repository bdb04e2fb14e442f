"""Real processes for the tests: a redis-server and `sbd serve` instances."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

TEST_SECRET = "test-secret-that-is-long-enough-for-hs256!"
BIN_DIR = Path(sys.executable).parent


def free_port(below: int = 65536) -> int:
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port < below:
            return port


def _wait_until(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise RuntimeError(f"timed out after {timeout}s waiting for {what}")


class RedisServer:
    """A redis-server of the suite's own on a free port (killable, restartable)."""

    def __init__(self, *extra: str, port: int | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "redis-server is not on PATH; the suite starts its own. "
                "Install it: apt-get install -y redis-server"
            )
        self.binary = binary
        self.port = port or free_port()
        self.extra = extra
        self.dir = tempfile.mkdtemp(prefix="sbd-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_until(self.ping, 10, f"redis-server on port {self.port}")
        return self

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(10)
        self.process = None


class SbdServer:
    """One `sbd serve` process, started the way users start it."""

    def __init__(
        self,
        env: dict[str, str] | None = None,
        log_dir: Path | None = None,
        args: tuple[str, ...] = (),
    ) -> None:
        self.port = free_port()
        self.args = args  # more `sbd serve` options, e.g. ("--workers", "2")
        # Only what the test asks for: never the developer's own SBD_* settings.
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("SBD_")}
        self.env = {
            **inherited,
            "SBD_JWT_SECRET": TEST_SECRET,
            "SBD_DATABASE_PATH": str(Path(tempfile.mkdtemp(prefix="sbd-db-")) / "users.sqlite3"),
            "SBD_STUN_URLS": "stun:stun.example.test:3478",
            **(env or {}),
        }
        log_dir = log_dir or Path(tempfile.mkdtemp(prefix="sbd-log-"))
        self.log_path = log_dir / f"sbd-{self.port}.log"
        self.log_path.write_bytes(b"")  # a port reused from an earlier run starts a fresh log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self, wait_ready: bool = True) -> SbdServer:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [
                    str(BIN_DIR / "sbd"),
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    *self.args,
                ],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        if wait_ready:
            _wait_until(self.is_ready, 20, f"sbd serve on port {self.port} ({self.log_path})")
        return self

    def is_ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"sbd serve exited early; log:\n{self.log()}")
        try:
            return httpx.get(f"{self.base_url}/health/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        code = self.process.returncode
        self.process = None
        return code


@contextlib.contextmanager
def two_instances(env: dict[str, str], log_dir: Path) -> Iterator[tuple[SbdServer, SbdServer]]:
    """Two `sbd serve` processes with the same settings (a shared Redis in ``env``)."""
    first = SbdServer(env, log_dir=log_dir).start()
    try:
        second = SbdServer(env, log_dir=log_dir).start()
        try:
            yield first, second
        finally:
            second.stop()
    finally:
        first.stop()


class RedisClusterServers:
    """A real 3-master Redis Cluster of redis-server processes on free ports."""

    def __init__(self, masters: int = 3) -> None:
        self.nodes = [
            RedisServer(
                "--cluster-enabled", "yes",
                "--cluster-config-file", f"nodes-{i}.conf",
                "--cluster-node-timeout", "2000",
                # The cluster bus listens on port + 10000.
                port=free_port(below=55536),
            )
            for i in range(masters)
        ]  # fmt: skip

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def start(self) -> RedisClusterServers:
        for node in self.nodes:
            node.start()
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RuntimeError("redis-cli is not on PATH: apt-get install -y redis-tools")
        subprocess.run(
            [cli, "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in self.nodes),
             "--cluster-replicas", "0", "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        _wait_until(self._healthy, 30, "Redis Cluster state ok")
        return self

    def _healthy(self) -> bool:
        for node in self.nodes:
            out = subprocess.run(
                ["redis-cli", "-p", str(node.port), "cluster", "info"],
                capture_output=True, text=True, check=False,
            ).stdout  # fmt: skip
            if "cluster_state:ok" not in out:
                return False
        return True

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
