"""Write docs/configuration.md from ``Settings`` (`make docs`).

Each setting's description is the docstring under its field in
``second_brain_database/config.py``; this script only lays them out, so the
page cannot say something the code does not. ``--check`` exits 1 when the
file on disk differs from what would be written (tests/test_configuration_docs.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from second_brain_database.config import Settings

TARGET = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
COMMAND = "make docs"

HEADER = f"""# Configuration

Every setting is an environment variable with the prefix `SBD_` (or a line
of a `.env` file in the working directory; the environment wins). Lists are
comma-separated. The contract (PROTOCOL.md, "Process, configuration,
layout") fixes the names and defaults of the settings it lists; the others
are this implementation's.

This page is generated from `Settings` in
`src/second_brain_database/config.py` by `scripts/gen_config_docs.py`
(`{COMMAND}`); a test fails when it is out of date.

| variable | meaning | default |
| --- | --- | --- |
"""


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        return "generated per process"
    value: Any = field.default
    if value is PydanticUndefined or value is None:
        return "unset"
    if isinstance(value, list):
        return f"`{','.join(value)}`" if value else "unset"
    if isinstance(value, Path):
        return f"`{value.as_posix()}`"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, str):
        return f"`{value}`"
    return f"`{json.dumps(value)}`"


def render() -> str:
    rows = []
    for name, field in Settings.model_fields.items():
        if not field.description:
            raise SystemExit(f"Settings.{name} has no description (a docstring under it)")
        meaning = " ".join(field.description.split()).replace("|", "\\|")
        rows.append(f"| `SBD_{name.upper()}` | {meaning} | {_default(field)} |")
    return HEADER + "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = TARGET.read_text() if TARGET.exists() else ""
        if current != text:
            print(f"{TARGET} is out of date: run `{COMMAND}`", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text)
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
