"""``tether check``: validate that a running tether deployment behaves (no printing here).

::

    report = await run_check("ws://127.0.0.1:4001", ["all"], time_scale=0.01)
    report.passed, [r.to_json() for r in report.results]

Scenarios: ``connect``, ``session-reuse``, ``circuit-breaker``, ``legacy-migration``,
``performance`` (``all`` runs them in that order). With ``url=None`` an embedded server is started
(``python -m tether serve`` on a free loopback port with a temporary project) and stopped after.
A server that cannot be reached fails every scenario with a message saying so.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tether.client import fetch_projects, http_url, websocket_url
from tether.errors import ClientError, ConnectFailed
from tether.tools.check_breaker import circuit_breaker_scenario
from tether.tools.check_probe import Context, Outcome, ScenarioResult
from tether.tools.check_scenarios import (
    connect_scenario,
    legacy_migration_scenario,
    performance_scenario,
    session_reuse_scenario,
)
from tether.tools.embedded import EmbeddedServer

Scenario = Callable[[Context, Outcome], Awaitable[None]]
SCENARIOS: dict[str, Scenario] = {
    "connect": connect_scenario,
    "session-reuse": session_reuse_scenario,
    "circuit-breaker": circuit_breaker_scenario,
    "legacy-migration": legacy_migration_scenario,
    "performance": performance_scenario,
}
SCENARIO_TIMEOUT = 300.0

__all__ = ["SCENARIOS", "CheckReport", "EmbeddedServer", "ScenarioResult", "run_check"]


@dataclass(frozen=True)
class CheckReport:
    """Every scenario's result, and the server and settings they ran against."""

    url: str
    project: str | None
    time_scale: float
    results: list[ScenarioResult] = field(default_factory=list)
    error: str | None = None  # set when the run could not start (e.g. unreachable server)

    @property
    def passed(self) -> bool:
        """True when nothing failed and the run could start."""
        return self.error is None and all(result.passed for result in self.results)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "url": self.url,
            "project": self.project,
            "time_scale": self.time_scale,
            "passed": self.passed,
            "error": self.error,
            "scenarios": [result.to_json() for result in self.results],
        }


def expand(names: Sequence[str]) -> list[str]:
    """Scenario names in run order; ``all`` means every one. Raises ValueError for unknown."""
    wanted = set(SCENARIOS) if "all" in names else set(names)
    unknown = wanted - set(SCENARIOS)
    if unknown:
        raise ValueError(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    return [name for name in SCENARIOS if name in wanted]


async def run_check(
    url: str | None,
    scenarios: Sequence[str] = ("all",),
    *,
    project: str | None = None,
    token: str | None = None,
    time_scale: float = 1.0,
    strict: bool = False,
    progress: Callable[[str], None] | None = None,
    also: Sequence[str] = (),
) -> CheckReport:
    """Run ``scenarios`` against ``url`` (or an embedded server when None); ``also``: the other
    nodes of a cluster, which connections use in turn."""
    names = expand(scenarios)
    if url is None:
        async with EmbeddedServer() as server:
            return await run_check(
                server.base_url,
                names,
                project=project,
                token=token,
                time_scale=time_scale,
                strict=strict,
                progress=progress,
            )
    endpoint = websocket_url(url)
    try:
        project = project or await _first_project(url, token)
    except ClientError as exc:
        return CheckReport(endpoint, project, time_scale, error=f"cannot reach the server: {exc}")
    others = tuple(websocket_url(other) for other in also)
    ctx = Context(endpoint, project, token, time_scale, strict, also=others)
    report = CheckReport(endpoint, project, time_scale)
    for name in names:
        if progress is not None:
            progress(name)
        report.results.append(await run_scenario(name, ctx))
    return report


async def _first_project(url: str, token: str | None) -> str:
    projects = await fetch_projects(url, token=token)
    if not projects:
        raise ConnectFailed(f"{http_url(url)}/api/projects lists no project")
    return projects[0]


async def run_scenario(name: str, ctx: Context) -> ScenarioResult:
    """One scenario; any exception becomes a failure that names it."""
    outcome = Outcome(name)
    started = time.monotonic()
    try:
        async with asyncio.timeout(SCENARIO_TIMEOUT):
            await SCENARIOS[name](ctx, outcome)
    except TimeoutError as exc:
        outcome.failures.append(str(exc) or f"timed out after {SCENARIO_TIMEOUT:.0f} s")
    except ClientError as exc:
        outcome.failures.append(f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # a check reports, it does not crash
        outcome.failures.append(f"unexpected {type(exc).__name__}: {exc}")
    return outcome.result(time.monotonic() - started)
