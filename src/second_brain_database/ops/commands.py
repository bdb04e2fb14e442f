"""Operator subcommands of ``sbd``: ``check``, ``rooms``, ``room``, ``kick``,
``notice``, ``close-room`` and ``webhooks``."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8000"
CLI_TOKEN_TTL_S = 60


def register(commands: Any) -> None:
    """Add the operator subcommands to ``sbd``'s subparsers."""
    check = commands.add_parser(
        "check", help="verify configuration, Redis, TURN and JWT settings of this host"
    )
    check.add_argument(
        "--no-probe-turn",
        dest="probe_turn",
        action="store_false",
        help="check TURN URLs without allocating a relay on each",
    )
    check.set_defaults(run=_check)

    def admin_parser(name: str, help_text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = commands.add_parser(
            name,
            help=help_text,
            epilog="A room id that begins with '-' goes after '--': sbd room -- -standup",
        )
        parser.add_argument(
            "--url",
            default=os.environ.get("SBD_ADMIN_URL", DEFAULT_URL),
            help=f"a running instance (default: SBD_ADMIN_URL or {DEFAULT_URL})",
        )
        parser.add_argument(
            "--token",
            default=os.environ.get("SBD_ADMIN_TOKEN"),
            help="an admin token (default: SBD_ADMIN_TOKEN, else one signed with SBD_JWT_SECRET)",
        )
        return parser

    rooms = admin_parser("rooms", "list rooms and their peer counts, on every instance")
    rooms.set_defaults(run=_rooms)

    room = admin_parser("room", "show who is in a room")
    room.add_argument("room")
    room.set_defaults(run=_room)

    kick = admin_parser("kick", "remove a peer from a room (closed with 4003, cannot resume)")
    kick.add_argument("room")
    kick.add_argument("peer")
    kick.set_defaults(run=_kick)

    notice = admin_parser("notice", "send everyone in a room a server notice")
    notice.add_argument("room")
    notice.add_argument("message")
    notice.add_argument("--level", choices=["info", "warning"], default="info")
    notice.set_defaults(run=_notice)

    close = admin_parser("close-room", "kick every peer of a room")
    close.add_argument("room")
    close.set_defaults(run=_close_room)

    webhooks = admin_parser(
        "webhooks", "webhook events waiting and failed per URL, the last errors; redeliver"
    )
    webhooks.add_argument("action", nargs="?", choices=["status", "redeliver"], default="status")
    webhooks.add_argument(
        "--id", dest="event_id", help="redeliver only this failed event (its webhook-id)"
    )
    webhooks.set_defaults(run=_webhooks)


def _check(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from second_brain_database.config import Settings
    from second_brain_database.ops.check import run_checks

    try:
        settings = Settings()
    except ValidationError as exc:
        for error in exc.errors(include_url=False, include_input=False):
            field = "SBD_" + "_".join(str(part) for part in error["loc"]).upper()
            print(f"FAIL  settings  {field}: {error['msg']}")
        return 1
    findings = run_checks(settings, probe_turn=args.probe_turn)
    for finding in findings:
        print(finding.line())
    failed = sum(f.status == "FAIL" for f in findings)
    warned = sum(f.status == "warn" for f in findings)
    print(f"{failed} failed, {warned} warnings" if failed or warned else "all checks passed")
    return 1 if failed else 0


def _client(args: argparse.Namespace) -> Any:
    from second_brain_database.ops.admin_client import CLI_ADMIN_USER, AdminClient

    token = args.token
    if not token:
        from second_brain_database.auth.tokens import TokenService
        from second_brain_database.config import get_settings

        settings = get_settings()
        if settings.jwt_secret is None:
            raise ValueError("no admin token: pass --token, set SBD_ADMIN_TOKEN or SBD_JWT_SECRET")
        token = TokenService(settings).issue(
            CLI_ADMIN_USER, ttl=CLI_TOKEN_TTL_S, role="admin", name="sbd command line"
        )
    return AdminClient(args.url, token)


def _admin(args: argparse.Namespace, action: Any) -> int:
    from second_brain_database.ops.admin_client import AdminError

    try:
        print(action(_client(args)))
    except AdminError as exc:
        print(f"sbd {args.command}: {exc}", file=sys.stderr)
        return 1
    return 0


def _rooms(args: argparse.Namespace) -> int:
    from second_brain_database.ops.admin_client import format_rooms

    return _admin(args, lambda client: format_rooms(list(client.rooms())))


def _room(args: argparse.Namespace) -> int:
    from second_brain_database.ops.admin_client import format_room

    return _admin(args, lambda client: format_room(client.room(args.room)))


def _kick(args: argparse.Namespace) -> int:
    def kick(client: Any) -> str:
        client.kick(args.room, args.peer)
        return f"kicked {args.peer} from {args.room}"

    return _admin(args, kick)


def _notice(args: argparse.Namespace) -> int:
    def notice(client: Any) -> str:
        sent = client.notice(args.room, args.message, args.level)
        return f"notice sent to {sent['participants']} peers in {args.room}"

    return _admin(args, notice)


def _webhooks(args: argparse.Namespace) -> int:
    from second_brain_database.ops.admin_client import format_webhooks

    def webhooks(client: Any) -> str:
        if args.action == "redeliver":
            count = client.redeliver_webhooks(args.event_id)["redelivered"]
            return f"queued {count} failed event{'s' * (count != 1)} again"
        return format_webhooks(client.webhooks())

    return _admin(args, webhooks)


def _close_room(args: argparse.Namespace) -> int:
    def close(client: Any) -> str:
        closed = client.close_room(args.room)
        return f"closed {args.room}: kicked {len(closed['kicked'])} peers"

    return _admin(args, close)
