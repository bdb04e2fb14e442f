"""The ``sbd`` command: serve, manage logins, mint tokens."""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Sequence

from second_brain_database.config import get_settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sbd", description="WebRTC signaling service")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1, help="processes (needs SBD_REDIS_URL)")
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
    token.set_defaults(run=_token)

    args = parser.parse_args(argv)
    try:
        result: int = args.run(args)
    except ValueError as exc:
        print(f"sbd: {exc}", file=sys.stderr)
        return 2
    return result


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from second_brain_database.logging_setup import configure_logging

    settings = get_settings()
    if args.workers > 1 and settings.redis_url is None:
        raise ValueError("--workers > 1 needs SBD_REDIS_URL: the embedded broker is per process")
    uvicorn.run(
        "second_brain_database.main:app",
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_config=configure_logging(settings.log_level),
        ws_max_size=settings.max_message_bytes,
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=10,
    )
    return 0


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
            args.user, name=args.name, ttl=args.ttl, rooms=args.room, role=args.role
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
