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

    def __init__(self, *extra: str, port: int | None = None, password: str | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "redis-server is not on PATH; the suite starts its own. "
                "Install it: apt-get install -y redis-server"
            )
        self.binary = binary
        self.port = port or free_port()
        # A password is also the one it gives its primary, when it is a replica.
        self.password = password
        self.extra = (
            (*extra, "--requirepass", password, "--masterauth", password) if password else extra
        )
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
        return _answers_ping(self.port, self.password)

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


class SentinelServer:
    """One ``redis-server --sentinel`` watching ``master`` (name ``mymaster``)."""

    def __init__(self, master_port: int, *, password: str | None, down_after_ms: int) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not on PATH: apt-get install -y redis-server")
        self.binary = binary
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="sbd-sentinel-")
        lines = [
            f"port {self.port}",
            "bind 127.0.0.1",
            f"dir {self.dir}",
            f"sentinel monitor {SentinelCluster.MASTER} 127.0.0.1 {master_port} 2",
            f"sentinel down-after-milliseconds {SentinelCluster.MASTER} {down_after_ms}",
            f"sentinel failover-timeout {SentinelCluster.MASTER} {down_after_ms * 3}",
            f"sentinel parallel-syncs {SentinelCluster.MASTER} 1",
        ]
        if password is not None:
            lines.append(f"sentinel auth-pass {SentinelCluster.MASTER} {password}")
        # Sentinel rewrites its configuration file as it learns: its own copy.
        self.config = Path(self.dir) / "sentinel.conf"
        self.config.write_text("\n".join(lines) + "\n")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> SentinelServer:
        self.process = subprocess.Popen(
            [self.binary, str(self.config), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_until(self.ping, 10, f"redis sentinel on port {self.port}")
        return self

    def ping(self) -> bool:
        return _answers_ping(self.port, None)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None


def _answers_ping(port: int, password: str | None) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            if password is not None:
                sock.sendall(f"AUTH {password}\r\n".encode())
                if not sock.recv(16).startswith(b"+OK"):
                    return False
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class SentinelCluster:
    """A primary, a replica and three Sentinels, real processes on free ports.

    ``down_after_ms`` is small, so that a killed primary is replaced within
    seconds (Sentinel's failover timeout is three times it)."""

    MASTER = "mymaster"

    def __init__(self, *, password: str | None = None, down_after_ms: int = 1000) -> None:
        self.password = password
        self.primary = RedisServer(password=password)
        self.replica = RedisServer(
            "--replicaof", "127.0.0.1", str(self.primary.port), password=password
        )
        self.sentinels = [
            SentinelServer(self.primary.port, password=password, down_after_ms=down_after_ms)
            for _ in range(3)
        ]

    @property
    def addresses(self) -> str:
        """``SBD_REDIS_SENTINELS``."""
        return ",".join(sentinel.address for sentinel in self.sentinels)

    @property
    def env(self) -> dict[str, str]:
        env = {"SBD_REDIS_SENTINELS": self.addresses}
        if self.password is not None:
            env["SBD_REDIS_PASSWORD"] = self.password
        return env

    def start(self) -> SentinelCluster:
        self.primary.start()
        self.replica.start()
        _wait_until(self._replica_in_sync, 20, "the replica to sync with the primary")
        for sentinel in self.sentinels:
            sentinel.start()
        _wait_until(self._sentinels_agree, 30, "the Sentinels to see the replica and each other")
        return self

    def info(self, port: int, section: str) -> str:
        command = ["redis-cli", "-p", str(port)]
        if self.password is not None:
            command += ["--no-auth-warning", "-a", self.password]
        result = subprocess.run(
            [*command, "info", section], capture_output=True, text=True, check=False
        )
        return result.stdout

    def _replica_in_sync(self) -> bool:
        return "master_link_status:up" in self.info(self.replica.port, "replication")

    def _sentinels_agree(self) -> bool:
        for sentinel in self.sentinels:
            out = subprocess.run(
                ["redis-cli", "-p", str(sentinel.port), "sentinel", "master", self.MASTER],
                capture_output=True, text=True, check=False,
            ).stdout.split()  # fmt: skip
            fields = dict(zip(out[::2], out[1::2], strict=False))
            if fields.get("num-slaves") != "1" or fields.get("num-other-sentinels") != "2":
                return False
        return True

    def primary_port(self) -> int:
        """The port of the primary that the Sentinels name now."""
        out = subprocess.run(
            ["redis-cli", "-p", str(self.sentinels[0].port),
             "sentinel", "get-master-addr-by-name", self.MASTER],
            capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
        return int(out[1])

    def stop(self) -> None:
        for sentinel in self.sentinels:
            sentinel.stop()
        self.replica.stop()
        self.primary.stop()
