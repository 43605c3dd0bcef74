"""tether load: a short real run through the CLI and the module API; correctness, never timing."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from tests.tools.reports import assert_user_sees_the_verdicts
from tether.cli import main
from tether.tools.embedded import EmbeddedServer
from tether.tools.load import LoadOptions, _LoadRun, run_load
from tether.tools.loadkit import ToolReport


def test_load_cli_short_run_is_exact(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report_file = tmp_path / "load.json"
    # No --reconnect-every: a default run, however short, cuts and resumes every user.
    argv = ["load", "--connections", "20", "--duration", "10", "--ramp-up", "2"]
    argv += ["--seed", "7", "--out", str(report_file)]
    status = main(argv)
    out = capsys.readouterr().out
    report = json.loads(report_file.read_text())
    figures = report["figures"]
    assert figures["users_exact"] == 20, report["errors"]
    assert figures["users_failed"] == 0
    assert figures["clean_exits"] == 20
    assert figures["reconnect_attempts"] > 20  # every user was cut at least once or so
    assert figures["reconnect_successes"] == figures["reconnect_attempts"]
    assert figures["unexpected_closes"] == 0
    latency = figures["latency_ms"]
    assert latency["echo"]["count"] > 0 and latency["reattach"]["count"] > 0
    # One connect and one first output per user: the shell's start is not in the connect.
    assert latency["connect"]["count"] == latency["first_output"]["count"] == 20
    names = [v["name"] for v in report["verdicts"]]
    assert "connect p99" in names and "reattach p99" in names and "first_output p99" not in names
    assert "{" not in out  # the report is tables, never a JSON blob between them
    assert "first_output: a new session: from the hello" in out  # each figure defined
    correctness = [v for v in report["verdicts"] if v["kind"] == "correctness"]
    assert correctness and all(v["passed"] for v in correctness)
    # The plot is drawn in a child process: matplotlib keeps font files open for good.
    plot_file = tmp_path / "load.png"
    code = "import json, sys; from tether.tools.load import write_plot; "
    code += "write_plot(json.load(open(sys.argv[1])), sys.argv[2])"
    command = [sys.executable, "-c", code, str(report_file), str(plot_file)]
    subprocess.run(command, check=True, timeout=120)
    assert plot_file.read_bytes().startswith(b"\x89PNG")
    assert_user_sees_the_verdicts(status, out, report, tool="load")


async def test_load_api_against_a_given_url_without_cuts() -> None:
    async with EmbeddedServer() as server:
        options = LoadOptions(
            url=server.base_url.replace("http://", "ws://") + "/ws/terminal",
            connections=3,
            duration=2,
            ramp_up=0,
            reconnect_every=0,
            think=(0.0, 0.1),
        )
        report = await run_load(options)
    assert report.error is None
    assert report.project == "default"
    assert report.figures["users_exact"] == 3
    assert report.figures["reconnect_attempts"] == 0
    assert report.figures["memory"]["measured_locally"]


def test_a_figure_without_samples_fails_its_target() -> None:
    options = LoadOptions(url="ws://127.0.0.1:9", connections=1, duration=10)
    assert options.cut_every == 2.5  # a quarter of a short run: resumes happen
    run = _LoadRun(options, "default", ToolReport("load", "ws://127.0.0.1:9", "default", {}), None)
    verdict = run._latency_verdict("reattach", 100, "original")
    assert (verdict.measured, verdict.passed) == ("no samples", False)
    run.recorder.latency("reattach", 0.004)
    assert run._latency_verdict("reattach", 100, "original").passed


async def test_load_reports_an_unreachable_server() -> None:
    report = await run_load(LoadOptions(url="http://127.0.0.1:9", connections=1, duration=1))
    assert report.error is not None and "cannot reach" in report.error
    assert not report.passed


def test_load_cli_rejects_a_bad_url() -> None:
    assert main(["load", "--url", "ftp://x", "--duration", "1"]) == 2


async def test_load_with_a_token_against_a_server_with_auth(tmp_path: Path) -> None:
    token = "load-test-token-0123456789abcdef"
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(
        f'[[tokens]]\ntoken = "{token}"\nowner = "loader"\nprojects = "*"\noperator = true\n'
    )
    args = ("--auth", "token", "--tokens-file", str(tokens), "--allow-same-user-shells")
    async with EmbeddedServer(*args) as server:
        options = LoadOptions(url=server.base_url, connections=2, duration=2, ramp_up=0)
        refused = await run_load(options)
        assert refused.error is not None  # /api/projects needs the credential
        report = await run_load(replace(options, token=token))
    assert report.error is None, report.errors
    assert report.figures["users_exact"] == 2
