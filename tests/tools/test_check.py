"""``tether check``: the pure helpers, and full runs through ``main(argv)`` against real servers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import ServerProcess, start_server
from tether.cli import main
from tether.protocol.policy import PolicyEvent, State
from tether.tools.check import expand
from tether.tools.check_breaker import read_schedule, within
from tether.tools.figures import describe, percentile, summarize


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with start_server() as running:
        yield running


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, object]]:
    status = main(["check", "--json", *argv])
    return status, json.loads(capsys.readouterr().out)


def test_all_scenarios_pass_against_a_started_server(
    server: ServerProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    status, report = run_json(
        capsys, "--url", server.ws_url, "--scenario=all", "--time-scale", "0.01"
    )
    scenarios = report["scenarios"]
    assert isinstance(scenarios, list)
    assert [s["name"] for s in scenarios] == [
        "connect", "session-reuse", "circuit-breaker", "legacy-migration", "performance",
    ]  # fmt: skip
    assert [s["failures"] for s in scenarios] == [[]] * 5
    assert status == 0 and report["passed"] is True and report["project"] == "default"
    breaker = scenarios[2]["figures"]
    assert breaker["expected_schedule_s"] == [0.01, 0.02, 0.04, 0.08, 0.16]
    assert len(breaker["observed_schedule_s"]) == 5
    assert breaker["opened_after_failures"] == 5
    assert breaker["storm_retry_after_s"] >= 1
    assert breaker["client_waited_after_4129_s"] >= 1  # retry-after is never scaled


def test_check_leaves_no_session_behind(
    server: ServerProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    import urllib.request

    status, _ = run_json(capsys, "--url", server.base_url, "--scenario", "connect,legacy-migration")
    assert status == 0
    with urllib.request.urlopen(f"{server.base_url}/stats/sessions", timeout=5) as response:
        stats = json.load(response)
    assert [s for s in stats["sessions"] if s["state"] != "ended"] == []


def test_table_output_for_people(server: ServerProcess, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["check", "--url", server.base_url, "--scenario", "connect,performance"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert "connect" in out and "PASS" in out and "all scenarios passed" in out
    # Piped, still text: no Python dicts or booleans; a missed tether target is a labelled note.
    assert "{" not in out and "False" not in out and "True" not in out
    assert "note: tether target connect p99 < 10 ms" in out
    assert "connect_p99_under_10ms" not in out
    # Progress went to stderr, one line as each scenario starts and ends.
    assert "connect: running" in captured.err and "performance: PASS" in captured.err


def test_json_is_the_only_thing_on_stdout(
    server: ServerProcess, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out_file = tmp_path / "check.json"
    argv = ["check", "--url", server.base_url, "--scenario", "connect", "--json"]
    assert main([*argv, "--out", str(out_file)]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)  # the whole of stdout
    assert report == json.loads(out_file.read_text())
    figures = report["scenarios"][0]["figures"]
    assert set(figures) >= {"connect", "first_output", "command", "ping"}
    assert figures["connect"]["count"] == 1
    assert "connect: PASS" in captured.err


def test_dead_url_fails_with_a_clear_message(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--url", "ws://127.0.0.1:9/ws/terminal", "--time-scale", "0.01"]) != 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        "tether check: cannot reach the server at http://127.0.0.1:9: "
        "connection refused (is the server running?)\n"
    )


def test_dead_url_json_fails_too(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["check", "--json", "--url", "http://127.0.0.1:9"])
    report = json.loads(capsys.readouterr().out)
    assert status != 0 and report["passed"] is False and "cannot reach" in report["error"]


def test_embedded_server_when_no_url(capsys: pytest.CaptureFixture[str]) -> None:
    status, report = run_json(capsys, "--scenario", "connect", "--time-scale", "0.01")
    assert status == 0 and report["passed"] is True
    assert str(report["url"]).startswith("ws://127.0.0.1:")


@pytest.mark.parametrize(
    "argv", [["--scenario", "nope"], ["--url", "ftp://x"], ["--time-scale", "0"]]
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", *argv]) == 2


def test_expand_scenarios() -> None:
    assert expand(["all"])[0] == "connect" and len(expand(["all"])) == 5
    assert expand(["performance", "connect"]) == ["connect", "performance"]
    with pytest.raises(ValueError, match="unknown scenario"):
        expand(["bogus"])


def test_percentiles() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.99) == 99
    assert percentile([3.0], 0.99) == 3
    assert summarize([0.001, 0.002, 0.003])["p50"] == 2
    assert summarize([]) == {"count": 0}
    assert describe(summarize([])) == "no samples"
    assert describe(summarize([0.001, 0.003])) == "p50 1.0 ms, p99 3.0 ms (2 samples)"


def _event(state: State, failures: int = 0, delay: float | None = None) -> PolicyEvent:
    return PolicyEvent(state, 0, failures, delay)


def test_read_schedule_from_timed_events() -> None:
    log = [(0.0, _event(State.WAITING, 0, 1))]
    now = 0.0
    for k, delay in enumerate([1, 2, 4, 8, 16], start=1):
        now += delay
        log.append((now, _event(State.CONNECTING, k - 1)))
        if k < 5:
            log.append((now, _event(State.WAITING, k, delay * 2)))
    log.append((now, _event(State.OPEN, 5, 30)))
    log.append((now + 30, _event(State.HALF_OPEN, 5)))
    schedule = read_schedule(log)
    assert schedule.waits == [1, 2, 4, 8, 16]
    assert schedule.attempts_before_open == 5
    assert schedule.failures_at_open == 5
    assert schedule.open_to_half_open == 30


def test_read_schedule_without_open() -> None:
    schedule = read_schedule([(0.0, _event(State.WAITING, 0, 1)), (1.0, _event(State.CONNECTING))])
    assert (schedule.waits, schedule.failures_at_open, schedule.open_to_half_open) == (
        [1],
        None,
        None,
    )


def test_within_tolerates_lateness_never_earliness() -> None:
    assert within(1.0, 1.0) and within(1.05, 1.0)
    assert not within(0.9, 1.0) and not within(2.0, 1.0)
