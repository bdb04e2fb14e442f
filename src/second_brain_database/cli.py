"""The ``sbd`` command: serve, manage logins, mint tokens; the operator
commands (``check``, ``rooms``, ``room``, ``kick``, ...) are in :mod:`.ops.commands`."""

from __future__ import annotations

import argparse
import getpass
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence

from pydantic import ValidationError

from second_brain_database.config import get_settings
from second_brain_database.ops import commands as ops_commands

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.run(args)
    except ValidationError as exc:
        # Each setting that is wrong and why, never the values (secrets).
        for error in exc.errors(include_url=False, include_input=False):
            field = "SBD_" + "_".join(str(part) for part in error["loc"]).upper()
            print(f"sbd: {field if error['loc'] else 'settings'}: {error['msg']}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"sbd: {exc}", file=sys.stderr)
        return 2
    return result


# ``sbd serve --ws``: what uvicorn is given for each choice.
WS_IMPLEMENTATIONS = {
    "native": "second_brain_database.webrtc.native_ws:SignalingWebSocketProtocol",
    "websockets": "websockets",
    "websockets-sansio": "websockets-sansio",
    "wsproto": "wsproto",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sbd", description="WebRTC signaling service")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1, help="processes (needs Redis)")
    serve.add_argument(
        "--forwarded-allow-ips",
        default=os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1"),
        help="comma-separated addresses of reverse proxies whose X-Forwarded-For and "
        "X-Forwarded-Proto are trusted, or '*' (default: 127.0.0.1)",
    )
    serve.add_argument(
        "--no-proxy-headers",
        dest="proxy_headers",
        action="store_false",
        help="ignore X-Forwarded-* headers even from --forwarded-allow-ips",
    )
    serve.add_argument(
        "--ws",
        choices=sorted(WS_IMPLEMENTATIONS),
        default="native",
        help="WebSocket implementation: 'native' (default) gives signaling sessions "
        "a direct path past ASGI (webrtc/native_ws.py); the others are uvicorn's own",
    )
    serve.set_defaults(run=_serve)

    users = commands.add_parser("users", help="manage logins")
    users_commands = users.add_subparsers(dest="users_command", required=True)
    add = users_commands.add_parser("add", help="add or update a login; password from stdin")
    add.add_argument("name")
    add.add_argument("--display-name")
    add.set_defaults(run=_users_add)

    token = commands.add_parser("token", help="print a signed access token")
    token.add_argument("user")
    token.add_argument("--ttl", type=int, help="seconds (default: SBD_ACCESS_TOKEN_TTL)")
    token.add_argument("--room", action="append", help="limit to this room (repeatable)")
    token.add_argument("--name", help="display name")
    token.add_argument("--role", choices=["host", "admin"])
    token.add_argument(
        "--ice",
        choices=["all", "relay"],
        help="relay: hide the user's IP addresses from peers (TURN relay candidates only)",
    )
    token.set_defaults(run=_token)

    ops_commands.register(commands)
    return parser


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from second_brain_database.logging_setup import configure_logging

    settings = get_settings()
    if args.workers > 1 and not settings.uses_redis:
        raise ValueError(
            "--workers > 1 needs Redis (SBD_REDIS_URL or SBD_REDIS_SENTINELS): "
            "the embedded broker is per process"
        )
    if args.workers > 1 and "SBD_INSTANCE_ID" in os.environ:
        # Each worker is an instance of its own (presence, reaping): one id
        # shared by several would hide a dead worker behind a live one.
        raise ValueError("SBD_INSTANCE_ID names one process: unset it to use --workers > 1")
    log_config = configure_logging(settings.log_level, settings.log_format)
    metrics_dir = _shared_metrics_dir() if args.workers > 1 else None
    try:
        uvicorn.run(
            "second_brain_database.main:app",
            host=args.host,
            port=args.port,
            workers=args.workers,
            log_config=log_config,
            proxy_headers=args.proxy_headers,
            forwarded_allow_ips=args.forwarded_allow_ips,
            # Request-head bounds (size, time, how many wait) for every --ws choice.
            http="second_brain_database.webrtc.native_ws:SignalingHttpProtocol",
            ws=WS_IMPLEMENTATIONS[args.ws],
            ws_max_size=settings.max_message_bytes,
            # The native protocol refuses to run with it on (it does not
            # decompress); uvicorn's default is on.
            ws_per_message_deflate=False,
            timeout_graceful_shutdown=10,
        )
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def _shared_metrics_dir() -> str | None:
    """Give the workers one prometheus_client multiprocess directory, so any
    worker's /metrics reports all of them. Returns it when made here (to
    remove at exit); an operator's own PROMETHEUS_MULTIPROC_DIR is kept."""
    if os.environ.get(MULTIPROC_ENV):
        return None
    directory = tempfile.mkdtemp(prefix="sbd-metrics-")
    os.environ[MULTIPROC_ENV] = directory  # inherited by the worker processes
    return directory


def _users_add(args: argparse.Namespace) -> int:
    from second_brain_database.auth.users import UserStore

    if sys.stdin.isatty():
        password = getpass.getpass(f"password for {args.name}: ")
    else:
        password = sys.stdin.readline().rstrip("\n")
    UserStore(get_settings().database_path).add(args.name, password, args.display_name)
    print(f"user {args.name} saved")
    return 0


def _token(args: argparse.Namespace) -> int:
    from second_brain_database.auth.tokens import TokenService

    settings = get_settings()
    if settings.jwt_secret is None:
        raise ValueError("SBD_JWT_SECRET is not set: a server could not verify this token")
    print(
        TokenService(settings).issue(
            args.user,
            name=args.name,
            ttl=args.ttl,
            rooms=args.room,
            role=args.role,
            ice_policy=args.ice,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
