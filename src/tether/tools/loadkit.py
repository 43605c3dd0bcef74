"""Shared pieces of ``tether load``, ``tether stress`` and ``bench/`` (no printing here).

- :func:`summarize` / :func:`percentile` (from :mod:`tether.tools.figures`, where every figure's
  name is defined): latency figures (p50/p95/p99/max) in milliseconds.
- :class:`Recorder`, :class:`Verdict`, :class:`ToolReport`: what a run gathers and reports.
- The client side (a lean connection, the verified typing user) is :mod:`tether.tools.loaduser`.
- :class:`ServerProbe`: the server's CPU, RSS, fds and shells, from ``/proc`` when local, else from
  ``GET /stats/sessions``.
- The embedded server the tools start when given no URL is :mod:`tether.tools.embedded`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

import psutil

from tether.client import fetch_json, fetch_projects, http_url
from tether.client.problems import unknown_project
from tether.errors import ClientError, UnknownProject
from tether.tools.figures import percentile, summarize

LOOPBACK = ("127.", "::1", "localhost")
__all__ = ["Recorder", "ServerProbe", "ToolReport", "Verdict", "percentile", "summarize"]


# ------------------------------------------------------------------------------------ figures
@dataclass
class Recorder:
    """Latencies, counters, close codes and errors gathered by many users."""

    latencies: dict[str, list[float]] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)
    close_codes: Counter[int] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    max_errors: int = 200

    def latency(self, name: str, seconds: float) -> None:
        self.latencies.setdefault(name, []).append(seconds)

    def count(self, name: str, amount: int = 1) -> None:
        self.counts[name] += amount

    def error(self, message: str) -> None:
        self.counts["errors"] += 1
        if len(self.errors) < self.max_errors:
            self.errors.append(message)

    def summary(self) -> dict[str, dict[str, float]]:
        return {name: summarize(values) for name, values in sorted(self.latencies.items())}


@dataclass(frozen=True)
class Verdict:
    """One target: ``kind`` is ``correctness``, ``original`` (the plan's) or ``tether``."""

    name: str
    kind: str
    target: str
    measured: str
    passed: bool


@dataclass
class ToolReport:
    """Every figure of a run and the verdicts; ``passed`` ignores tether's own unless strict."""

    tool: str
    url: str
    project: str
    options: dict[str, Any]
    figures: dict[str, Any] = field(default_factory=dict)
    verdicts: list[Verdict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    error: str | None = None
    strict: bool = False

    @property
    def passed(self) -> bool:
        counted = [v for v in self.verdicts if self.strict or v.kind != "tether"]
        return self.error is None and bool(counted) and all(v.passed for v in counted)

    def to_json(self) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "url": self.url,
            "project": self.project,
            "passed": self.passed,
            "error": self.error,
            "options": self.options,
            "figures": self.figures,
            "verdicts": [asdict(v) for v in self.verdicts],
            "errors": self.errors,
        }


class KeyPacer:
    """Keeps attempts on one key within the server's per-key storm rule (pure; time passed in)."""

    def __init__(self, threshold: int, window: float, margin: float = 0.05) -> None:
        self.threshold, self.window, self.margin = threshold, window, margin
        self._attempts: deque[float] = deque()

    def delay(self, now: float) -> float:
        """Seconds to wait before the next attempt so that it is not refused."""
        while self._attempts and self._attempts[0] <= now - self.window:
            self._attempts.popleft()
        if len(self._attempts) < self.threshold:
            return 0.0
        return self._attempts[0] + self.window + self.margin - now

    def record(self, now: float) -> None:
        self._attempts.append(now)


# -------------------------------------------------------------------------- the server probe
@dataclass(frozen=True)
class ProcessSample:
    """The server process at one moment (``fds``/``shells`` are None when not local)."""

    at: float
    cpu_seconds: float
    rss_bytes: int
    fds: int | None
    shells: int | None


class ServerProbe:
    """Samples the server process: through ``/proc`` when it runs here, else over HTTP."""

    def __init__(self, url: str, pid: int | None = None, token: str | None = None) -> None:
        self.url = url
        self.token = token
        self.pid = pid
        self._process: psutil.Process | None = None
        self.samples: list[ProcessSample] = []

    @property
    def is_local(self) -> bool:
        return self._process is not None

    async def locate(self) -> None:
        """Find the server's pid (``/stats/sessions``) and whether ``/proc`` shows it here."""
        if self.pid is None:
            with contextlib.suppress(Exception):
                stats = await fetch_json(self.url, "/stats/sessions", token=self.token)
                self.pid = int(stats["server"]["pid"])
        host = urlsplit(http_url(self.url)).hostname or ""
        if self.pid is not None and host.startswith(LOOPBACK):
            with contextlib.suppress(psutil.Error):
                process = psutil.Process(self.pid)
                if "tether" in " ".join(process.cmdline()):
                    self._process = process

    async def sample(self) -> ProcessSample:
        """One sample, also kept in :attr:`samples`."""
        if self._process is not None:
            sample = self._sample_local(self._process)
        else:
            stats = await fetch_json(self.url, "/stats/sessions", token=self.token)
            facts = stats["server"]
            sample = ProcessSample(
                time.monotonic(), float(facts["cpu_seconds"]), int(facts["rss_bytes"]), None, None
            )
        self.samples.append(sample)
        return sample

    @staticmethod
    def _sample_local(process: psutil.Process) -> ProcessSample:
        with process.oneshot():
            times = process.cpu_times()
            rss = process.memory_info().rss
            fds = process.num_fds()
        shells = sum(1 for child in process.children(recursive=True) if _is_live(child))
        return ProcessSample(time.monotonic(), times.user + times.system, rss, fds, shells)

    def children_uss(self) -> int:
        """Unique memory of every process under the server (the shells), in bytes."""
        if self._process is None:
            return 0
        total = 0
        for child in self._process.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                total += child.memory_full_info().uss
        return total

    async def run(self, interval: float, stop: asyncio.Event) -> None:
        """Sample every ``interval`` seconds until ``stop`` is set."""
        while not stop.is_set():
            with contextlib.suppress(Exception):
                await self.sample()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)

    def series(self) -> list[dict[str, float]]:
        """CPU % and RSS MiB over time (relative seconds) from the samples."""
        points = []
        for before, after in zip(self.samples, self.samples[1:], strict=False):
            elapsed = after.at - before.at
            if elapsed <= 0:
                continue
            points.append(
                {
                    "t": round(after.at - self.samples[0].at, 2),
                    "cpu_percent": round(
                        100 * (after.cpu_seconds - before.cpu_seconds) / elapsed, 1
                    ),
                    "rss_mib": round(after.rss_bytes / 2**20, 2),
                }
            )
        return points

    async def cpu_percent(self, seconds: float) -> float:
        """The server's CPU % over the next ``seconds``."""
        first = await self.sample()
        await asyncio.sleep(seconds)
        second = await self.sample()
        return 100 * (second.cpu_seconds - first.cpu_seconds) / max(1e-9, second.at - first.at)


def _is_live(process: psutil.Process) -> bool:
    try:
        return bool(process.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


async def first_project(url: str, token: str | None = None) -> str:
    """The first project ``GET /api/projects`` lists."""
    return await resolve_project(url, None, token)


async def resolve_project(url: str, project: str | None, token: str | None = None) -> str:
    """``project`` if the server offers it (else :class:`UnknownProject` naming those it does),
    or the first it lists when None."""
    projects = await fetch_projects(url, token=token)
    if project is not None and project not in projects:
        raise UnknownProject(unknown_project(project, projects), project)
    if not projects:
        raise ClientError(f"{http_url(url)}/api/projects lists no project")
    return project or projects[0]


def is_loopback_url(url: str) -> bool:
    return (urlsplit(http_url(url)).hostname or "").startswith(LOOPBACK)
