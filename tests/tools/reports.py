"""What a user of ``tether load`` / ``tether stress`` reads, checked against the JSON report."""

from __future__ import annotations

from typing import Any


def assert_user_sees_the_verdicts(status: int, out: str, report: dict[str, Any], tool: str) -> None:
    """One FAIL per failed verdict that counts, then a last line and an exit status that say the
    same. (Timing targets may miss on a loaded machine: the user is then told which one.)"""
    failed = [v for v in report["verdicts"] if not v["passed"] and v["kind"] != "tether"]
    last = out.strip().splitlines()[-1]
    assert out.count("FAIL") == (len(failed) + 1 if failed else 0), out
    if failed:
        assert status == 1 and last.startswith(f"FAIL — {tool} against")
    else:
        assert status == 0 and last.startswith(f"PASS — {tool} against")
