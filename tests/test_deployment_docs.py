"""docs/deployment.md cannot drift: each shell command in it is one the suite
runs, with options the real `sbd` parser accepts, and each SBD_* name it
mentions is a setting the service reads."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from second_brain_database.cli import build_parser
from second_brain_database.config import Settings

DOC = Path(__file__).resolve().parent.parent / "docs" / "deployment.md"
# Each program a command in the doc may start with, and where the suite runs it.
EXERCISED = {
    "export": "sets a variable (checked below)",
    "sbd": "tests/test_cli_ops.py, tests/test_workers.py, tests/servers.py",
    "nginx": "tests/edge.py Nginx.test_config (nginx -t -c)",
    "turnserver": "tests/edge.py Coturn.start (turnserver -c)",
}
SBD_SUBCOMMANDS_RUN_BY_TESTS = {
    "check", "serve", "rooms", "room", "notice", "kick", "close-room", "webhooks"
}  # fmt: skip
# Read by the CLI, not by Settings.
CLI_VARIABLES = {"SBD_ADMIN_URL", "SBD_ADMIN_TOKEN"}


def shell_commands() -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    commands = []
    for block in blocks:
        for line in block.splitlines():
            line = re.sub(r"\s+# .*$", "", line).strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def test_every_shell_command_is_one_the_suite_runs() -> None:
    commands = shell_commands()
    assert len(commands) >= 10
    for command in commands:
        program = command.split()[0]
        assert program in EXERCISED, f"{command!r}: no test runs {program}"


def test_every_sbd_command_parses_with_the_real_cli() -> None:
    parser = build_parser()
    seen = set()
    for command in shell_commands():
        argv = shlex.split(command)
        if argv[0] != "sbd":
            continue
        args = parser.parse_args(argv[1:])  # exits (fails the test) on a bad option
        seen.add(args.command)
        assert args.command in SBD_SUBCOMMANDS_RUN_BY_TESTS, command
    assert {"check", "serve", "rooms", "kick"} <= seen


def test_nginx_and_coturn_commands_match_how_the_tests_start_them() -> None:
    commands = shell_commands()
    assert "nginx -t -c /etc/nginx/nginx.conf" in commands
    assert "turnserver -c /etc/turnserver.conf" in commands


def test_every_setting_named_is_one_the_service_reads() -> None:
    names = set(re.findall(r"\bSBD_[A-Z_]+[A-Z]\b", DOC.read_text()))
    fields = {f"SBD_{name.upper()}" for name in Settings.model_fields}
    assert names - fields - CLI_VARIABLES == set()
    exported = {c.split()[1].split("=")[0] for c in shell_commands() if c.startswith("export ")}
    assert exported <= fields
