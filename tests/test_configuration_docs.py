"""docs/configuration.md is generated from Settings and kept up to date."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from second_brain_database.config import Settings

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gen_config_docs.py"


def test_the_page_is_what_the_settings_say() -> None:
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr + "(regenerate with `make docs`)"


def test_every_setting_is_on_the_page_with_its_description() -> None:
    page = (ROOT / "docs" / "configuration.md").read_text()
    for name, field in Settings.model_fields.items():
        assert field.description, f"Settings.{name} needs a docstring: it is its documentation"
        assert f"`SBD_{name.upper()}`" in page


def test_a_stale_page_is_caught(tmp_path: Path) -> None:
    # The check compares with the real file; run it on a copy of the script
    # whose target is a stale file, so the test can see it fail.
    stale = tmp_path / "configuration.md"
    stale.write_text("# Configuration\n")
    code = SCRIPT.read_text().replace(
        'TARGET = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"',
        f"TARGET = Path({str(stale)!r})",
    )
    script = tmp_path / "gen.py"
    script.write_text(code)
    run = subprocess.run(
        [sys.executable, str(script), "--check"], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 1
    assert "out of date: run `make docs`" in run.stderr
