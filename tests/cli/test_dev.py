"""``./dev``'s probe for a Python interpreter: a pyenv shim for a version that is not selected
prints "command not found" on stderr; the probe must stay quiet and take the next candidate."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHIM = """#!/bin/sh
echo "pyenv: $(basename "$0"): command not found" >&2
echo "The \\`$(basename "$0")' command exists in these Python versions:" >&2
echo "  3.13.0" >&2
exit 127
"""


def _probe(bin_dir: Path) -> subprocess.CompletedProcess[str]:
    """Run only the script's ``need_python`` function with ``bin_dir`` first on PATH."""
    function = subprocess.run(
        ["sed", "-n", "/^need_python() {/,/^}/p", str(ROOT / "dev")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert function, "./dev has no need_python function"
    script = f'say() {{ echo "[dev] $*" >&2; }}\n{function}\nneed_python\n'
    return subprocess.run(
        ["bash", "-c", script],
        env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_unselected_pyenv_versions_are_skipped_quietly(tmp_path: Path) -> None:
    for name in ("python3.13", "python3.12"):
        shim = tmp_path / name
        shim.write_text(SHIM)
        shim.chmod(0o755)
    (tmp_path / "python3").symlink_to(sys.executable)
    found = _probe(tmp_path)
    assert found.returncode == 0, found.stderr
    assert found.stderr == ""
    assert found.stdout.strip() in ("python3.11", "python3")
