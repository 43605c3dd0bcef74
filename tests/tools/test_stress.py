"""tether stress: a short real run through the CLI; correctness (no leak, no duplicate)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.tools.reports import assert_user_sees_the_verdicts
from tether.cli import main
from tether.tools.stress import StressOptions, run_stress


def test_stress_cli_short_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report_file = tmp_path / "stress.json"
    argv = ["stress", "--rapid-reconnect", "--iterations", "200", "--concurrency", "10"]
    status = main([*argv, "--seed", "3", "--json", str(report_file)])
    out = capsys.readouterr().out
    report = json.loads(report_file.read_text())
    figures, checks = report["figures"], report["figures"]["checks"]
    assert report["errors"] == []
    assert checks["same_key"]["users_failed"] == 0
    assert (
        checks["concurrent_create"]["rounds"]
        == checks["concurrent_create"]["rounds_with_one_shell"]
    )
    assert checks["storm"]["as_configured"], checks["storm"]
    assert checks["bystanders"]["unaffected"] == checks["bystanders"]["users"]
    assert figures["replays_exact"] == figures["plan"]["abort-replay"]
    before, after = figures["server_before"], figures["server_after"]
    assert (after["shells"], after["fds"]) == (before["shells"], before["fds"])
    correctness = [v for v in report["verdicts"] if v["kind"] == "correctness"]
    assert correctness and all(v["passed"] for v in correctness), correctness
    assert figures["iterations"] >= 200
    assert_user_sees_the_verdicts(status, out, report, tool="stress")


async def test_stress_reports_an_unreachable_server() -> None:
    report = await run_stress(StressOptions(url="ws://127.0.0.1:9/ws/terminal", iterations=10))
    assert report.error is not None and "cannot reach the server" in report.error
    assert not report.passed


def test_stress_cli_says_why_it_cannot_run(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["stress", "--rapid-reconnect", "--url", "http://127.0.0.1:9"])
    assert status == 1
    assert "cannot reach the server" in capsys.readouterr().err
