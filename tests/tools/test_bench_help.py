"""``python -m bench --help`` names every target ``--targets`` accepts (from bench/targets.py's
table, so that a new target cannot be missing from the help)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from bench.targets import TARGET_NAMES, make_target

ROOT = Path(__file__).resolve().parents[2]


def test_targets_help_lists_every_target() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=True,
    )
    text = " ".join(done.stdout.split())  # argparse wraps the help to the terminal's width
    assert "comma-separated: tether, asgi, terminado, pty, or a NAME below" in text
    assert set(TARGET_NAMES) == {"tether", "asgi", "terminado", "pty"}


def test_a_name_outside_the_table_is_refused() -> None:
    with pytest.raises(ValueError, match="nope"):
        make_target("nope")
