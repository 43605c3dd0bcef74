"""``tether load``: many simulated users typing into their own sessions, cut and resumed.

::

    report = await run_load(LoadOptions(connections=20, duration=10, reconnect_every=3))
    report.passed, report.to_json()

Each user (:class:`tether.tools.loaduser.TypingUser`)
types at a human pace (a keystroke every 50–200 ms,
a line every few seconds), reads its output, and is cut — mostly abruptly, sometimes with a clean
close — about every ``reconnect_every`` seconds, resuming at once by offset. Every output byte is
checked as it arrives, so loss or duplication of output or keystrokes fails the run; at the end a
fresh connection replays each session from offset 0 and must match byte for byte, then each user
ends its shell (``^D`` → 4012). The server is sampled (CPU %, RSS) throughout.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from tether.errors import UnknownProject
from tether.protocol.codes import CloseCode
from tether.tools import figures
from tether.tools.embedded import EmbeddedServer
from tether.tools.figures import SESSION_LATENCY_TARGET_MS
from tether.tools.leftovers import OpenedSessions
from tether.tools.loadkit import Recorder, ServerProbe, ToolReport, Verdict, resolve_project
from tether.tools.loaduser import TypingUser, UserFailed, new_http

MIB = 2**20


@dataclass(frozen=True)
class LoadOptions:
    """What to run; ``url=None`` starts an embedded server for the run."""

    url: str | None = None
    also: tuple[str, ...] = ()  # other nodes of a cluster: connects spread over all of them
    project: str | None = None
    connections: int = 100
    duration: float = 300.0
    ramp_up: float | None = None  # default: min(10 s, a fifth of the duration)
    reconnect_every: float | None = None  # default: min(30 s, a quarter of the duration); 0: never
    pace: tuple[float, float] = (0.05, 0.2)
    think: tuple[float, float] = (0.5, 3.0)
    line_length: tuple[int, int] = (4, 24)
    abrupt_share: float = 0.7
    sample_interval: float = 1.0
    seed: int | None = None
    token: str | None = None  # credential where the server has auth on
    server_args: tuple[str, ...] = ()

    @property
    def ramp(self) -> float:
        return self.ramp_up if self.ramp_up is not None else min(10.0, self.duration / 5)

    @property
    def cut_every(self) -> float:
        """Mean seconds between cuts of one user: by default short enough that every run,
        however short, exercises resumes (0: never cut)."""
        if self.reconnect_every is not None:
            return self.reconnect_every
        return min(30.0, self.duration / 4)


@dataclass(frozen=True)
class LoadProgress:
    """A snapshot for a live display."""

    elapsed: float
    remaining: float
    users: int
    connected: int
    reconnects: int
    lines: int
    keys_per_second: float
    errors: int
    phase: str


LoadReport = ToolReport


ProgressCallback = Callable[[LoadProgress], None]


async def run_load(
    options: LoadOptions, progress: ProgressCallback | None = None, *, strict: bool = False
) -> LoadReport:
    """Run the load test against ``options.url`` (or an embedded server).

    Raises :class:`~tether.errors.UnknownProject` when the server does not offer
    ``options.project``. Every session the run opened and that still runs is ended before it
    returns, also when it is cancelled (Ctrl-C)."""
    if options.url is None:
        async with EmbeddedServer(*_embedded_args(options)) as server:
            embedded = LoadOptions(**{**asdict(options), "url": server.base_url})
            return await run_load(embedded, progress, strict=strict)
    try:
        project = await resolve_project(options.url, options.project, options.token)
    except UnknownProject:
        raise  # bad input, not a failed run
    except Exception as exc:
        report = ToolReport(
            "load", options.url, options.project or "?", asdict(options), strict=strict
        )
        report.error = str(exc) or type(exc).__name__  # one line: tether.client.problems
        return report
    report = ToolReport("load", options.url, project, asdict(options), strict=strict)
    opened = OpenedSessions((options.url, *options.also), project, options.token)
    try:
        await _LoadRun(options, project, report, progress, opened).run()
    finally:  # a user that failed, or every user when the run was cancelled (Ctrl-C)
        await opened.end_leftovers()
    return report


def _embedded_args(options: LoadOptions) -> tuple[str, ...]:
    extra = ("--max-sessions", str(max(2000, options.connections * 2)))
    return (*extra, *options.server_args)


class _LoadRun:
    def __init__(
        self,
        options: LoadOptions,
        project: str,
        report: LoadReport,
        progress: ProgressCallback | None,
        opened: OpenedSessions | None = None,
    ) -> None:
        assert options.url is not None
        self.options, self.project, self.report = options, project, report
        self.opened = opened
        self.url = options.url
        self.progress = progress
        self.recorder = Recorder()
        self.rng = random.Random(options.seed)
        self.probe = ServerProbe(self.url, token=options.token)
        self.users: list[TypingUser] = []
        self.started = time.monotonic()
        self.deadline = self.started + options.duration
        self.phase = "ramp-up"

    async def run(self) -> None:
        await self.probe.locate()
        baseline = await self.probe.sample()
        stop = asyncio.Event()
        sampler = asyncio.create_task(self.probe.run(self.options.sample_interval, stop))
        ticker = asyncio.create_task(self._tick(stop))
        memory: dict[str, Any] = {}
        async with new_http(self.options.token) as http:
            self.users = [self._new_user(http, index) for index in range(self.options.connections)]
            self.started = time.monotonic()
            self.deadline = self.started + self.options.duration
            try:
                await asyncio.gather(*(self._live(u, i) for i, u in enumerate(self.users)))
                self.phase = "measuring"
                memory = await self._memory(baseline.rss_bytes)
                self.phase = "verifying"
                await asyncio.gather(*(self._end(user) for user in self.users))
            finally:
                await asyncio.gather(*(user.close() for user in self.users))
                stop.set()
                await asyncio.gather(sampler, ticker)
        self._report(memory)

    def _new_user(self, http: Any, index: int) -> TypingUser:
        rng = random.Random(self.rng.random())
        urls = (self.url, *self.options.also)
        user = TypingUser(http, self.url, self.project, self.recorder, rng=rng, urls=urls)
        if self.opened is not None:
            self.opened.remember(user.session)
        return user

    # -- one user ----------------------------------------------------------------------------
    async def _live(self, user: TypingUser, index: int) -> None:
        options = self.options
        await asyncio.sleep(options.ramp * index / max(1, options.connections))
        try:
            await user.start()
        except UserFailed as exc:
            user.failed = user.failed or str(exc)
            self.recorder.error(f"{user.session}: {exc}")
            return
        cutter = asyncio.create_task(self._cut_now_and_then(user))
        try:
            while time.monotonic() < self.deadline and not user.failed:
                await user.type_line(user.rng.randint(*options.line_length), options.pace)
                await asyncio.sleep(user.rng.uniform(*options.think))
        except UserFailed as exc:
            user.failed = user.failed or str(exc)
        finally:
            cutter.cancel()
            await asyncio.gather(cutter, return_exceptions=True)

    async def _cut_now_and_then(self, user: TypingUser) -> None:
        every = self.options.cut_every
        if every <= 0:
            return
        while True:
            await asyncio.sleep(every * user.rng.uniform(0.5, 1.5))
            if time.monotonic() >= self.deadline:
                return
            try:
                await user.cut(abrupt=user.rng.random() < self.options.abrupt_share)
            except UserFailed as exc:
                user.failed = user.failed or str(exc)
                return

    async def _end(self, user: TypingUser) -> None:
        if user.failed or user.marker_end is None:
            return
        try:
            await user.wait_for(lambda: user.is_connected, 30, "a connection")
            await user.verify_replay()
            await user.finish()
        except UserFailed as exc:
            user.failed = user.failed or str(exc)

    # -- measuring ---------------------------------------------------------------------------
    async def _memory(self, baseline_rss: int) -> dict[str, Any]:
        """Memory at full load: server RSS growth and the shells' own memory, per session."""
        sessions = sum(1 for u in self.users if u.marker_end is not None) or 1
        sample = await self.probe.sample()
        server_per_session = max(0, sample.rss_bytes - baseline_rss) / sessions
        shells_per_session = self.probe.children_uss() / sessions
        return {
            "sessions": sessions,
            "server_rss_before_mib": round(baseline_rss / MIB, 2),
            "server_rss_loaded_mib": round(sample.rss_bytes / MIB, 2),
            "server_bytes_per_session": round(server_per_session),
            "shell_bytes_per_session": round(shells_per_session),
            "total_mib_per_session": round((server_per_session + shells_per_session) / MIB, 3),
            "measured_locally": self.probe.is_local,
        }

    async def _tick(self, stop: asyncio.Event) -> None:
        last_keys, last_at = 0, time.monotonic()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
            now = time.monotonic()
            keys = self.recorder.counts["keys"]
            rate = (keys - last_keys) / max(1e-9, now - last_at)
            last_keys, last_at = keys, now
            if self.progress is not None:
                self.progress(self._snapshot(now, rate))

    def _snapshot(self, now: float, rate: float) -> LoadProgress:
        if self.phase == "ramp-up" and now >= self.started + self.options.ramp:
            self.phase = "running"
        counts = self.recorder.counts
        return LoadProgress(
            elapsed=now - self.started,
            remaining=max(0.0, self.deadline - now),
            users=sum(1 for u in self.users if u.marker_end is not None),
            connected=sum(1 for u in self.users if u.is_connected),
            reconnects=counts["reconnect_successes"],
            lines=counts["lines"],
            keys_per_second=rate,
            errors=counts["errors"],
            phase=self.phase,
        )

    # -- the report --------------------------------------------------------------------------
    def _report(self, memory: dict[str, Any]) -> None:
        recorder, counts = self.recorder, self.recorder.counts
        failed = [u for u in self.users if u.failed]
        attempts = counts["reconnect_attempts"]
        success = counts["reconnect_successes"] / attempts if attempts else 1.0
        self.report.figures = {
            "latency_ms": recorder.summary(),
            "latencies_s": {k: [round(v, 6) for v in vs] for k, vs in recorder.latencies.items()},
            "users": len(self.users),
            "users_failed": len(failed),
            "users_exact": len(self.users) - len(failed),
            "lines": counts["lines"],
            "keystrokes": counts["keys"],
            "bytes_typed": sum(u.sent for u in self.users),
            "reconnect_attempts": attempts,
            "reconnect_successes": counts["reconnect_successes"],
            "reconnect_success_rate": round(success, 5),
            "unexpected_closes": counts["unexpected_closes"],
            "clean_exits": counts["clean_exits"],
            "close_codes": {str(code): n for code, n in sorted(recorder.close_codes.items())},
            "memory": memory,
            "server": self.probe.series(),
        }
        self.report.errors = list(recorder.errors)
        storms = recorder.close_codes[CloseCode.STORM]
        if storms:
            self.report.errors.insert(
                0,
                f"the server refused {storms} connects with 4129: its storm rule counts this "
                "load as a reconnect storm (per key, or per address for a non-loopback client); "
                "raise its thresholds or lengthen --reconnect-every",
            )
        self.report.verdicts = self._verdicts(success, memory, len(failed))

    def _verdicts(self, success: float, memory: dict[str, Any], failed: int) -> list[Verdict]:
        users, counts = len(self.users), self.recorder.counts
        verdicts = [
            Verdict("exact streams, keystrokes once", "correctness", f"{users} of {users} users",
                    f"{users - failed} of {users}", failed == 0 and users > 0),
            Verdict("sessions ended cleanly", "correctness", f"{users} exits (4012)",
                    str(counts["clean_exits"]), counts["clean_exits"] == users),
        ]  # fmt: skip
        if self.options.cut_every > 0:  # cut on purpose: resumes must have happened
            attempts = counts["reconnect_attempts"]
            measured = f"{success * 100:.2f} % of {attempts}" if attempts else "no resumes"
            verdicts += [
                Verdict("reconnection success", "original", "> 99 %", measured,
                        attempts > 0 and success > 0.99),
                Verdict("reconnection success", "tether", "100 %", measured,
                        attempts > 0 and success == 1),
            ]  # fmt: skip
        verdicts.append(
            Verdict("memory per session (server + shell)", "original", "< 50 MB",
                    f"{memory['total_mib_per_session']:.2f} MiB",
                    memory["total_mib_per_session"] * MIB < 50e6)
        )  # fmt: skip
        names = [figures.CONNECT, figures.ECHO]
        if self.options.cut_every > 0:
            names.insert(1, figures.REATTACH)
        verdicts += [self._latency_verdict(name, SESSION_LATENCY_TARGET_MS, "original")
                     for name in names]  # fmt: skip
        verdicts.append(self._latency_verdict(figures.ECHO, 20.0, "tether"))
        return verdicts

    def _latency_verdict(self, name: str, target_ms: float, kind: str) -> Verdict:
        """``name``'s p99 under ``target_ms``; a figure with no samples fails (nothing was
        shown to meet the target)."""
        p99 = self.recorder.summary().get(name, {}).get("p99")
        return Verdict(
            f"{name} p99",
            kind,
            f"< {target_ms:g} ms",
            "no samples" if p99 is None else f"{p99:.1f} ms",
            p99 is not None and p99 < target_ms,
        )


def write_plot(report: dict[str, Any], path: str) -> None:
    """A PNG of the latency distributions and the server's CPU % and RSS over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    latencies = report["figures"].get("latencies_s", {})
    series = report["figures"].get("server", [])
    figure, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for name, values in sorted(latencies.items()):
        if values:
            axes[0].hist([v * 1000 for v in values], bins=50, histtype="step", label=name)
    axes[0].set(xlabel="ms", ylabel="count", title="latency", yscale="log")
    axes[0].legend()
    times = [point["t"] for point in series]
    axes[1].plot(times, [point["cpu_percent"] for point in series])
    axes[1].set(xlabel="s", ylabel="%", title="server CPU")
    axes[2].plot(times, [point["rss_mib"] for point in series])
    axes[2].set(xlabel="s", ylabel="MiB", title="server RSS")
    figure.suptitle(f"tether load — {report['url']}")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
