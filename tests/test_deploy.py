"""The deployment kit in deploy/, each file checked by the best tool available here:
``systemd-analyze`` for the unit, ``promtool`` for the alert rules (their own unit tests too),
tether's config loader for the example TOML, and a real server's /metrics for every metric the
dashboard and the alerts name. Where a tool is missing, a parser test stands in for it."""

from __future__ import annotations

import configparser
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support.server import inprocess_server
from tether.server.config import FIELDS, build_settings, load_toml

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "terminal-websocket.service"
EXAMPLE = DEPLOY / "tether.example.toml"
RULES = DEPLOY / "prometheus" / "tether-alerts.yml"
RULE_TESTS = DEPLOY / "prometheus" / "tether-alerts.test.yml"
DASHBOARD = DEPLOY / "grafana" / "tether-dashboard.json"
OPERATIONS = ROOT / "docs" / "operations.md"
ROLLBACK_ALERTS = {
    "TetherCpuHigh",
    "TetherMemoryHigh",
    "TetherConnectionErrorRateHigh",
    "TetherBreakersOnManySessions",
}


# ------------------------------------------------------------------------------ systemd unit
def unit_sections() -> dict[str, dict[str, str]]:
    parser = configparser.ConfigParser(interpolation=None, strict=True, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    return {name: dict(parser[name]) for name in parser.sections()}


def test_unit_runs_tether_serve_with_drain_friendly_stop_and_hardening() -> None:
    sections = unit_sections()
    assert set(sections) == {"Unit", "Service", "Install"}
    service = sections["Service"]
    assert re.fullmatch(
        r"/\S+/tether serve --config /etc/tether/tether\.toml", service["ExecStart"]
    )
    assert service["User"] == "tether" and service["Restart"] == "on-failure"
    assert service["KillMode"] == "process" and service["KillSignal"] == "SIGTERM"
    assert int(service["TimeoutStopSec"]) >= 15  # drain_grace + kill_grace + margin
    hardening = {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "tmpfs",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "RestrictSUIDSGID": "yes",
        "LockPersonality": "yes",
        "SystemCallArchitectures": "native",
    }
    assert {key: service.get(key) for key in hardening} == hardening
    assert service["LogsDirectory"] == "tether" and "TasksMax" in service
    assert service["BindPaths"] == "/home" and "/home" in service["ReadWritePaths"].split()
    assert sections["Install"]["WantedBy"] == "multi-user.target"


def test_unit_keeps_the_shells_through_a_crash_and_reloads_with_sighup() -> None:
    service = unit_sections()["Service"]
    # tether notifies READY=1 and stores PTYs and state (docs/operations.md): systemd must
    # accept the notifications, keep the fds, and leave the shells when the main process dies.
    assert service["Type"] == "notify" and service["NotifyAccess"] == "main"
    assert int(service["FileDescriptorStoreMax"]) >= 2 * 2000 + 2  # 2 per session, max_sessions
    assert service["KillMode"] == "process"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["Restart"] in ("on-failure", "always")


def test_unit_gives_only_the_capabilities_that_switching_to_owners_accounts_needs() -> None:
    # Shells run as each owner's account (docs/security.md): tether, not root, needs to switch
    # users (SETUID, SETGID) and to end those users' processes (KILL); nothing else.
    service = unit_sections()["Service"]
    needed = {"CAP_SETUID", "CAP_SETGID", "CAP_KILL"}
    assert set(service["CapabilityBoundingSet"].split()) == needed
    assert set(service["AmbientCapabilities"].split()) == needed
    assert service["User"] == "tether" and service["NoNewPrivileges"] == "yes"


def test_example_config_runs_owners_shells_as_their_accounts(tmp_path: Path) -> None:
    text = EXAMPLE.read_text()
    assert re.search(r"^# allow_same_user_shells = false", text, re.M)
    assert re.search(r"^# user_map = ", text, re.M) and "account" in text


def installed_unit(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this environment's tether (verify checks it exists)."""
    tether = Path(sys.executable).with_name("tether")
    if not tether.exists():
        pytest.skip("the tether console script is not installed in this environment")
    text = re.sub(r"^ExecStart=\S+", f"ExecStart={tether}", UNIT.read_text(), flags=re.M)
    unit = tmp_path / UNIT.name
    unit.write_text(text)
    return unit


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    unit = installed_unit(tmp_path)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=30
    )
    complaints = [line for line in result.stderr.splitlines() if unit.name in line]
    assert result.returncode == 0 and not complaints, result.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
def test_unit_exposure_score_is_low(tmp_path: Path) -> None:
    unit = installed_unit(tmp_path)
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--threshold=30", str(unit)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if "--offline" in result.stderr and "unrecognized" in result.stderr:
        pytest.skip("this systemd-analyze cannot score a unit file offline")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr


# ------------------------------------------------------------------------------ example TOML
_SETTING_LINE = re.compile(r"^#?\s*([a-z_]+)\s*=", re.M)


def test_example_config_loads_into_settings(tmp_path: Path) -> None:
    raw = load_toml(EXAMPLE)
    for project in raw["projects"]:  # same ids and names, directories that exist here
        project["directory"] = str(tmp_path / project["id"])
        (tmp_path / project["id"]).mkdir()
    settings = build_settings(raw, cwd=tmp_path)
    assert [(p.id, p.name) for p in settings.projects] == [("web", "Web front end"), ("api", None)]
    assert settings.host == "127.0.0.1" and settings.port == 4001
    assert settings.auth == "token" and settings.tokens_file == Path("/etc/tether/tokens.toml")
    assert settings.log_file == Path("/var/log/tether/terminal-websocket.log")
    assert settings.trusted_proxies == ("127.0.0.1",)


def test_example_config_names_every_setting_and_only_real_ones() -> None:
    text = EXAMPLE.read_text()
    named = set(_SETTING_LINE.findall(text)) - {"id", "directory", "name"}
    if "[[projects]]" in text:
        named.add("projects")
    real = set(FIELDS)
    assert named - real == set(), "the example names settings that do not exist"
    assert real - named == set(), "settings missing from the example (add them, commented)"


def test_example_commented_defaults_are_the_real_defaults() -> None:
    # A line whose comment says "default: …" shows an example value of a computed default.
    commented = dict(
        re.findall(
            r"^# ([a-z_]+) = ([0-9.]+|true|false)\s(?!.*default:)", EXAMPLE.read_text(), re.M
        )
    )
    assert commented, "no commented defaults found"
    for name, shown in commented.items():
        default = FIELDS[name].default
        expected = str(default).lower() if isinstance(default, bool) else default
        assert (shown if isinstance(expected, str) else float(shown)) == expected, name


# ------------------------------------------------------------------------------ alert rules
def rule_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = yaml.safe_load(RULES.read_text())["groups"]
    return groups


def all_rules() -> list[dict[str, Any]]:
    return [rule for group in rule_groups() for rule in group["rules"]]


def test_alert_rules_have_the_shape_prometheus_needs() -> None:
    names = [group["name"] for group in rule_groups()]
    assert len(names) == len(set(names))
    for rule in all_rules():
        assert ("alert" in rule) != ("record" in rule), rule
        assert isinstance(rule["expr"], str) and rule["expr"].strip()
        if "alert" in rule:
            assert re.fullmatch(r"Tether[A-Za-z]+", rule["alert"])
            assert rule["labels"]["severity"] in {"critical", "warning"}
            assert {"summary", "description", "runbook"} <= rule["annotations"].keys()
            assert re.fullmatch(r"\d+[smh]", rule.get("for", "0m"))


def test_every_rollback_trigger_is_an_alert() -> None:
    rollback = {r["alert"] for r in all_rules() if r.get("labels", {}).get("rollback") == "true"}
    assert rollback == ROLLBACK_ALERTS
    by_name = {r.get("alert"): r for r in all_rules()}
    assert "> 2" in by_name["TetherCpuHigh"]["expr"] and by_name["TetherCpuHigh"]["for"] == "5m"
    assert "> 4e9" in by_name["TetherMemoryHigh"]["expr"]
    assert "> 0.05" in by_name["TetherConnectionErrorRateHigh"]["expr"]
    assert "> 0.10" in by_name["TetherBreakersOnManySessions"]["expr"]
    assert {"TetherReconnectionLoop", "TetherIdleReaperStalled"} <= by_name.keys()


def test_every_runbook_points_at_a_section_of_operations_md() -> None:
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", heading.lower()).strip().replace(" ", "-")
        for heading in re.findall(r"^#+ (.+)$", OPERATIONS.read_text(), re.M)
    }
    for rule in all_rules():
        if "alert" in rule:
            page, _, anchor = rule["annotations"]["runbook"].partition("#")
            assert page == "docs/operations.md" and anchor in anchors, rule["alert"]


promtool = pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool missing")


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["promtool", *args], capture_output=True, text=True, timeout=60, cwd=RULES.parent
    )


@promtool
def test_promtool_checks_the_rules() -> None:
    result = run_promtool("check", "rules", RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr


@promtool
def test_promtool_unit_tests_of_the_alerts_pass() -> None:
    result = run_promtool("test", "rules", RULE_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    tested = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text()))
    assert tested == {r["alert"] for r in all_rules() if "alert" in r}, "every alert is tested"


# ------------------------------------------------------------------------------ dashboard
def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]


def test_dashboard_structure() -> None:
    board = dashboard()
    assert board["title"] == "tether" and board["uid"] and board["schemaVersion"] >= 30
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert "tether_build_info" in variables["instance"]["definition"]
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24 and grid["h"] > 0
        if panel["type"] == "row":
            continue
        assert panel["title"] and panel["targets"] and panel["datasource"]["uid"] == "${datasource}"
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs))
        for target in panel["targets"]:
            assert "$instance" in target["expr"], target["expr"]
    titles = " ".join(p["title"] for p in board["panels"]).lower()
    for topic in ("sessions", "latency", "reconnect", "breaker", "cpu", "memory", "error"):
        assert topic in titles, topic


@promtool
def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    rules = [
        {"record": f"dashboard:query_{number}:check", "expr": _concrete(expr)}
        for number, expr in enumerate(dashboard_exprs())
    ]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _concrete(expr: str) -> str:
    """A dashboard query with Grafana's variables replaced by values."""
    return expr.replace("$__rate_interval", "1m").replace("$instance", ".*")


# ------------------------------------------------------------------------------ metric names
_NAME = re.compile(r"(?<![\w:])((?:tether|process)_[a-z0-9_]+)\b")  # not inside a:b:c


def referenced_metrics(expr: str) -> set[str]:
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    return set(_NAME.findall(without_strings))


def exported_names(text: str) -> tuple[set[str], set[str]]:
    """(every series name /metrics can carry, the family names) from a real scrape."""
    names: set[str] = set()
    families: set[str] = set()
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    for family in text_string_to_metric_families(text):
        families.add(family.name)
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names, families


@pytest.fixture(scope="module")
def metrics_text() -> str:
    import asyncio

    import aiohttp

    async def scrape() -> str:
        async with (
            inprocess_server() as srv,
            aiohttp.ClientSession() as http,
            http.get(f"{srv.base_url}/metrics") as response,
        ):
            return await response.text()

    return asyncio.run(scrape())


def test_every_metric_the_dashboard_and_alerts_name_exists(metrics_text: str) -> None:
    exported, _ = exported_names(metrics_text)
    queries = dashboard_exprs() + [rule["expr"] for rule in all_rules()]
    named = set().union(*(referenced_metrics(q) for q in queries))
    assert {
        "tether_sessions",
        "tether_connect_seconds_bucket",
        "process_cpu_seconds_total",
    } <= named
    assert named - exported == set(), f"not exported: {sorted(named - exported)}"
    recorded = {rule["record"] for rule in all_rules() if "record" in rule}
    used = set(re.findall(r"\b(instance:[a-z_]+:[a-z0-9_]+)\b", " ".join(queries)))
    assert used <= recorded


def test_operations_md_explains_every_metric_and_alert(metrics_text: str) -> None:
    text = OPERATIONS.read_text()
    _, families = exported_names(metrics_text)
    for family in sorted(f for f in families if f.startswith("tether_")):
        assert re.search(rf"`{family}(_total)?[`{{]", text), f"{family} is not documented"
    for rule in all_rules():
        if "alert" in rule:
            assert f"`{rule['alert']}`" in text, f"{rule['alert']} is not documented"
