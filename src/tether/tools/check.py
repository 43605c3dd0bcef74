"""``tether check``: validate that a running tether deployment behaves (no printing here).

::

    report = await run_check("ws://127.0.0.1:4001", ["all"], time_scale=0.01)
    report.passed, [r.to_json() for r in report.results]

Scenarios: ``connect``, ``session-reuse``, ``circuit-breaker``, ``legacy-migration``,
``performance`` (``all`` runs them in that order). With ``url=None`` an embedded server is started
(``python -m tether serve`` on a free loopback port with a temporary project) and stopped after.
A server that cannot be reached fails the run with a message saying so (``report.error``); an
unknown project raises :class:`~tether.errors.UnknownProject`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from tether.client import websocket_url
from tether.errors import ClientError, UnknownProject
from tether.tools.check_breaker import circuit_breaker_scenario
from tether.tools.check_probe import Context, Outcome, ScenarioResult
from tether.tools.check_scenarios import (
    connect_scenario,
    legacy_migration_scenario,
    performance_scenario,
    session_reuse_scenario,
)
from tether.tools.embedded import EmbeddedServer
from tether.tools.loadkit import resolve_project

Scenario = Callable[[Context, Outcome], Awaitable[None]]
SCENARIOS: dict[str, Scenario] = {
    "connect": connect_scenario,
    "session-reuse": session_reuse_scenario,
    "circuit-breaker": circuit_breaker_scenario,
    "legacy-migration": legacy_migration_scenario,
    "performance": performance_scenario,
}
SCENARIO_TIMEOUT = 300.0

__all__ = [
    "SCENARIOS",
    "CheckProgress",
    "CheckReport",
    "EmbeddedServer",
    "ScenarioResult",
    "run_check",
]


@dataclass(frozen=True)
class CheckProgress:
    r"""What a live display is told: a scenario ``start``\s, has a ``note`` (what a long step
    waits for), or is ``done`` (with its result)."""

    scenario: str
    event: Literal["start", "note", "done"]
    message: str = ""
    result: ScenarioResult | None = None


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
    progress: Callable[[CheckProgress], None] | None = None,
    also: Sequence[str] = (),
) -> CheckReport:
    """Run ``scenarios`` against ``url`` (or an embedded server when None); ``also``: the other
    nodes of a cluster, which connections use in turn. ``progress`` is told when each scenario
    starts and ends, and what a long one waits for.

    Every session the check opened and that still runs is ended before it returns, also when a
    scenario fails or the run is cancelled (Ctrl-C). Raises :class:`~tether.errors.UnknownProject`
    when the server does not offer ``project``."""
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
        project = await resolve_project(url, project, token)
    except UnknownProject:
        raise  # bad input, not a failed check
    except ClientError as exc:
        return CheckReport(endpoint, project, time_scale, error=str(exc))
    others = tuple(websocket_url(other) for other in also)
    tell = progress or (lambda _: None)
    ctx = Context(endpoint, project, token, time_scale, strict, also=others)
    report = CheckReport(endpoint, project, time_scale)
    try:
        for name in names:
            tell(CheckProgress(name, "start"))
            ctx.progress = lambda message, name=name: tell(CheckProgress(name, "note", message))
            result = await run_scenario(name, ctx)
            report.results.append(result)
            tell(CheckProgress(name, "done", result=result))
    finally:
        await ctx.end_leftovers()
    return report


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
