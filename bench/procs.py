"""Processes of a benchmark run: the servers under test, Redis, the load generator.

Everything listens on 127.0.0.1 on ports picked free at start, and every
process started here is stopped here (by its own pid, never by name).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
NODE_DIR = BENCH_DIR / "node"
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
JWT_SECRET = "bench-only-secret-0123456789abcdef0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def raise_nofile() -> int:
    """Raise this process's open-files soft limit to its hard limit (children inherit)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def sbd_bin() -> str:
    exe = Path(sys.executable).parent / "sbd"
    return str(exe) if exe.exists() else (shutil.which("sbd") or "sbd")


# --------------------------------------------------------------- /proc readings


def _children(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out.extend(int(x) for x in f.read().split())
    return out


def process_tree(pid: int) -> list[int]:
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(_children(p))
    return tree


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one process (not its children)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except OSError:
        return 0


def tcp_peers_by_pid(port: int) -> dict[int, int]:
    """Established TCP connections to 127.0.0.1:``port``, counted by owning pid."""
    out = subprocess.run(
        ["ss", "-Htnp", "state", "established", f"( dport = :{port} )"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    counts: dict[int, int] = {}
    for line in out.splitlines():
        for part in line.split("pid=")[1:]:
            pid = int(part.split(",")[0])
            counts[pid] = counts.get(pid, 0) + 1
    return counts


# --------------------------------------------------------------------- servers


@dataclass
class Proc:
    """One long-running process of the benchmark, with its log in a temp file."""

    name: str
    argv: list[str]
    port: int
    env: dict[str, str] = field(default_factory=dict)
    popen: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    def start(self, ready: Callable[[], bool], timeout: float = 30.0) -> Proc:
        fd, path = tempfile.mkstemp(prefix=f"bench-{self.name}-", suffix=".log")
        self.log_path = Path(path)
        env = {**os.environ, **self.env}
        self.popen = subprocess.Popen(
            self.argv,
            stdout=fd,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
            start_new_session=True,
        )
        os.close(fd)
        deadline = time.monotonic() + timeout
        while not ready():
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} not ready after {timeout}s:\n{self.log_tail()}")
            time.sleep(0.05)
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def pids(self) -> list[int]:
        return process_tree(self.pid)

    def cpu(self) -> float:
        return sum(cpu_seconds(p) for p in self.pids())

    def rss(self) -> int:
        return sum(rss_bytes(p) for p in self.pids())

    def log_tail(self, lines: int = 30) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.popen is None or self.popen.poll() is not None:
            self._cleanup()
            return
        # Our own process group (start_new_session): the server and its workers.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=12)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=5)
        self._cleanup()

    def _cleanup(self) -> None:
        if self.log_path is not None and os.environ.get("BENCH_KEEP_LOGS") != "1":
            with contextlib.suppress(OSError):
                self.log_path.unlink()


def port_open(port: int) -> Callable[[], bool]:
    def check() -> bool:
        with socket.socket() as s:
            s.settimeout(0.2)
            return s.connect_ex((HOST, port)) == 0

    return check


def http_ok(port: int, path: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with socket.create_connection((HOST, port), timeout=0.5) as s:
                s.sendall(
                    f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode()
                )
                return s.recv(16).startswith(b"HTTP/1.1 200")
        except OSError:
            return False

    return check


def start_redis() -> Proc:
    port = free_port()
    argv = [
        "redis-server",
        "--port",
        str(port),
        "--bind",
        HOST,
        "--save",
        "",
        "--appendonly",
        "no",
        "--maxclients",
        "20000",
        "--loglevel",
        "warning",
    ]
    return Proc("redis", argv, port).start(port_open(port))


def sbd_env(redis_url: str | None = None, src: str | None = None, **extra: str) -> dict[str, str]:
    env: dict[str, str] = {}
    # BENCH_SBD_SRC=DIR (or a `--variant`) runs our server from another source tree
    # (A/B of a patch, or a snapshot: `git archive HEAD src | tar -x -C DIR`).
    src = src or os.environ.get("BENCH_SBD_SRC")
    if src:
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(Path(src).resolve()), os.environ.get("PYTHONPATH", "")) if p
        )
    env |= {
        "SBD_JWT_SECRET": JWT_SECRET,
        # Closed-loop pairs send far faster than a browser: lift the per-connection limit.
        "SBD_RATE_LIMIT_PER_S": "1000000",
        "SBD_RATE_LIMIT_BURST": "1000000",
        # Every client comes from 127.0.0.1 and the bench reuses 8 users: turn the
        # per-address handshake limit and the per-user connection cap off (0).
        "SBD_HANDSHAKE_RATE_PER_S": "0",
        "SBD_MAX_CONNECTIONS_PER_USER": "0",
        "SBD_MAX_PEERS_PER_ROOM": "64",
        "SBD_DATABASE_PATH": str(Path(tempfile.gettempdir()) / "sbd-bench.sqlite3"),
        "SBD_LOG_LEVEL": "WARNING",
        "SBD_REDIS_URL": redis_url or "",
    }
    env.update(extra)
    return env


def start_sbd(
    redis_url: str | None = None,
    *,
    argv: list[str] | None = None,
    workers: int = 1,
    name: str = "sbd",
    src: str | None = None,
    **env: str,
) -> Proc:
    """Our server, started the way users start it (``sbd serve``) unless ``argv`` says otherwise."""
    port = free_port()
    if argv is None:
        argv = [sbd_bin(), "serve", "--host", HOST, "--port", str(port)]
        if workers > 1:
            argv += ["--workers", str(workers)]
    else:
        argv = [a.replace("{port}", str(port)) for a in argv]
    return Proc(name, argv, port, sbd_env(redis_url, src, **env)).start(
        http_ok(port, "/health/ready")
    )


def start_peerjs() -> Proc:
    port = free_port()
    argv = ["node", str(NODE_DIR / "peerjs_server.js"), "--host", HOST, "--port", str(port)]
    return Proc("peerjs", argv, port).start(port_open(port))


def start_ceiling(stack: str) -> Proc:
    """One of bench/ceiling/'s minimal relays: asgi (under uvicorn), websockets, picows."""
    port = free_port()
    py = sys.executable
    if stack == "asgi":
        argv = [
            py,
            "-m",
            "uvicorn",
            "bench.ceiling.asgi_relay:app",
            "--host",
            HOST,
            "--port",
            str(port),
            "--ws-per-message-deflate",
            "false",
            "--log-level",
            "warning",
            "--no-access-log",
        ]
    else:
        argv = [py, "-m", f"bench.ceiling.{stack}_relay", "--host", HOST, "--port", str(port)]
    pythonpath = os.pathsep.join((str(REPO), str(BENCH_DIR / ".pydeps")))
    return Proc(f"ceiling-{stack}", argv, port, {"PYTHONPATH": pythonpath}).start(port_open(port))


def start_socketio(redis_url: str | None = None, name: str = "socketio") -> Proc:
    port = free_port()
    argv = ["node", str(NODE_DIR / "socketio_relay.js"), "--host", HOST, "--port", str(port)]
    if redis_url:
        argv += ["--redis", redis_url]
    return Proc(name, argv, port).start(port_open(port))


@contextlib.contextmanager
def running(*procs: Proc) -> Iterator[tuple[Proc, ...]]:
    try:
        yield procs
    finally:
        for p in procs:
            p.stop()


def sbd_tokens(count: int) -> list[str]:
    """Access tokens minted the documented way, ``sbd token USER --ttl S``."""
    env = {**os.environ, **sbd_env()}
    tokens = []
    for i in range(count):
        out = subprocess.run(
            [sbd_bin(), "token", f"bench-user-{i}", "--ttl", "7200"],
            capture_output=True,
            text=True,
            env=env,
            check=True,
            cwd=REPO,
        )
        tokens.append(out.stdout.strip())
    return tokens


# ---------------------------------------------------------------- load generator


class LoadgenError(RuntimeError):
    pass


def run_loadgen(
    cfg: dict[str, Any],
    on_event: Callable[[dict[str, Any]], None] | None = None,
    timeout: float = 240.0,
) -> dict[str, Any]:
    """Run bench/node/loadgen.js with ``cfg``; ``on_event`` sees each progress event."""
    cfg = {"hard_limit_s": int(timeout), **cfg}
    proc = subprocess.Popen(
        ["node", str(NODE_DIR / "loadgen.js"), json.dumps(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=NODE_DIR,
    )
    lines: queue.Queue[str | None] = queue.Queue()
    errors: list[str] = []

    def pump_out() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    def pump_err() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            errors.append(line.rstrip())
            if os.environ.get("BENCH_VERBOSE"):
                print("   loadgen:", line.rstrip(), file=sys.stderr)

    threading.Thread(target=pump_out, daemon=True).start()
    threading.Thread(target=pump_err, daemon=True).start()
    deadline = time.monotonic() + timeout + 10
    result: dict[str, Any] | None = None
    try:
        while True:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise LoadgenError("load generator timed out") from None
            if line is None:
                break
            line = line.strip()
            if not line.startswith("{"):
                continue
            event = json.loads(line)
            if event.get("event") == "result":
                result = event
            elif on_event is not None:
                on_event(event)
    finally:
        if proc.poll() is None:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    if result is None:
        raise LoadgenError("load generator gave no result:\n" + "\n".join(errors[-20:]))
    result["stderr_tail"] = errors[-5:]
    return result
