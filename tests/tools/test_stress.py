"""tether stress: a short real run through the CLI; correctness (no leak, no duplicate)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tether.cli import main
from tether.tools.stress import StressOptions, group_sizes, run_stress, share_out


def test_stress_cli_short_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report_file = tmp_path / "stress.json"
    argv = ["stress", "--rapid-reconnect", "--iterations", "200", "--concurrency", "10"]
    status = main([*argv, "--seed", "3", "--json", "--out", str(report_file)])
    out = capsys.readouterr().out
    report = json.loads(out)  # --json: the report, and nothing else, on stdout
    assert report == json.loads(report_file.read_text())
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
    assert figures["iterations"] == 200 == sum(figures["plan"].values())
    assert figures["latency_ms"]["connect"]["count"] > 0
    burst = [v for v in report["verdicts"] if v["name"].startswith("connect p99, bursts of")]
    assert len(burst) == 1 and burst[0]["target"].startswith("< ")
    assert status == (0 if report["passed"] else 1)


async def test_stress_reports_an_unreachable_server() -> None:
    report = await run_stress(StressOptions(url="ws://127.0.0.1:9/ws/terminal", iterations=10))
    assert report.error is not None and "cannot reach the server" in report.error
    assert not report.passed


def test_iterations_are_shared_out_exactly() -> None:
    for iterations in (4, 10, 13, 200, 999):
        plan = share_out(iterations)
        assert sum(plan.values()) == iterations and min(plan.values()) >= 1
    assert share_out(200) == {
        "same-key": 100, "new-key": 50, "concurrent-create": 20, "abort-replay": 30,
    }  # fmt: skip
    assert group_sizes(20, 12) == [12, 8] and group_sizes(24, 12) == [12, 12]


def test_stress_cli_says_why_it_cannot_run(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["stress", "--rapid-reconnect", "--url", "http://127.0.0.1:9"])
    assert status == 1
    assert "cannot reach the server" in capsys.readouterr().err
