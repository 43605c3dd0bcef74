"""``tether stress --rapid-reconnect``: tight connect/disconnect cycles, then a leak check.

::

    report = await run_stress(StressOptions(iterations=200, concurrency=10))

The iterations are shared among five phases, each checking what it does:

- **same keys**: users typing into ``cat`` are cut (abruptly or cleanly) and resume by offset,
  over and over; every resume must start where the stream stopped and every keystroke is echoed
  once (:class:`tether.tools.loaduser.TypingUser`).
- **new keys**: a fresh session each cycle — first byte, sometimes an abort and a resume — then
  ``exit`` (4012).
- **concurrent creates**: a group of connects for one new key at once: exactly one ``created``
  hello, one session in ``/stats/sessions``; a group larger than the per-key storm threshold must
  see exactly the surplus refused with 4129.
- **aborts mid-replay**: a session holding a few hundred KB of output is replayed from random
  offsets and cut at random points; every replay must match what was read live.
- **storm**: one key gets threshold + 1 quick attempts: the last is refused with 4129
  ``retry-after=1``, an early retry too, the attempt after ``retry-after`` is admitted; a second
  trip doubles ``retry-after``; after quiet the key is admitted again.

Same-key attempts are paced to stay within the server's per-key storm rule (read from
``/stats/circuit-breaker``) except where the storm is the test. A few bystander users type through
the whole run and must be unaffected. At the end: as many shells and fds as before, RSS within
10 MB of the start, CPU under 5 % within 10 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

import aiohttp

from tether.client import fetch_json, websocket_url
from tether.errors import UnknownProject
from tether.protocol.client import ClientProtocol
from tether.protocol.codes import CloseCode, retry_after_seconds
from tether.protocol.ids import composite_key
from tether.tools import figures
from tether.tools.embedded import EmbeddedServer
from tether.tools.leftovers import OpenedSessions
from tether.tools.loadkit import (
    KeyPacer,
    ProcessSample,
    Recorder,
    ServerProbe,
    ToolReport,
    Verdict,
    resolve_project,
)
from tether.tools.loaduser import (
    Refused,
    TypingUser,
    UserFailed,
    Wire,
    client_id,
    new_http,
    read_at_least,
    read_until,
    read_until_closed,
    session_id,
)

MB = 1_000_000
SETTLE_SECONDS = 20.0
SPAWN_BUDGET_MS = 5.0  # per shell spawn; docs/benchmarks.md: ~550 new sessions/s, under 2 ms each
REPLAY_COMMAND = b"head -c 240000 /dev/urandom | base64 -w 120; echo __STRESS_''DONE__\r"
REPLAY_DONE = b"__STRESS_DONE__"
SHARES = {"same-key": 0.5, "new-key": 0.25, "concurrent-create": 0.1, "abort-replay": 0.15}


@dataclass(frozen=True)
class StressOptions:
    url: str | None = None
    also: tuple[str, ...] = ()  # other nodes of a cluster: connects spread over all of them
    project: str | None = None
    iterations: int = 1000
    concurrency: int = 20
    bystanders: int = 3
    seed: int | None = None
    token: str | None = None  # credential where the server has auth on
    server_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class StressProgress:
    phase: str
    elapsed: float
    iterations: int
    total: int
    storm_refusals: int
    errors: int


ProgressCallback = Callable[[StressProgress], None]


async def run_stress(
    options: StressOptions, progress: ProgressCallback | None = None, *, strict: bool = False
) -> ToolReport:
    """Run the stress test against ``options.url`` (or an embedded server).

    Raises :class:`~tether.errors.UnknownProject` when the server does not offer
    ``options.project``. Every session the run opened and that still runs is ended before it
    returns, also when it is cancelled (Ctrl-C)."""
    if options.url is None:
        async with EmbeddedServer(*options.server_args) as server:
            embedded = StressOptions(**{**asdict(options), "url": server.base_url})
            return await run_stress(embedded, progress, strict=strict)
    try:
        project = await resolve_project(options.url, options.project, options.token)
        breakers = await fetch_json(options.url, "/stats/circuit-breaker", token=options.token)
        thresholds = breakers["thresholds"]
    except UnknownProject:
        raise  # bad input, not a failed run
    except Exception as exc:
        report = ToolReport("stress", options.url, options.project or "?", asdict(options))
        report.error = str(exc) or type(exc).__name__  # one line: tether.client.problems
        return report
    report = ToolReport("stress", options.url, project, asdict(options), strict=strict)
    opened = OpenedSessions((options.url, *options.also), project, options.token)
    try:
        await _StressRun(options, project, thresholds["key"], report, progress, opened).run()
    finally:  # every session still open when the run was cancelled (Ctrl-C)
        await opened.end_leftovers()
    return report


class _StressRun:
    def __init__(
        self,
        options: StressOptions,
        project: str,
        key_rule: dict[str, Any],
        report: ToolReport,
        progress: ProgressCallback | None,
        opened: OpenedSessions,
    ) -> None:
        assert options.url is not None
        self.options, self.project, self.report, self.progress = options, project, report, progress
        self.opened = opened
        self.url = options.url
        self.ws_url = websocket_url(options.url)
        self.urls = (options.url, *options.also)
        self.ws_urls = [websocket_url(url) for url in self.urls]
        self.threshold, self.window = int(key_rule["threshold"]), float(key_rule["window"])
        self.rng = random.Random(options.seed)
        self.recorder = Recorder()
        self.bystander_recorder = Recorder()
        self.token = options.token
        self.probe = ServerProbe(self.url, token=options.token)
        self.plan = share_out(options.iterations)
        self.done = 0
        self.phase = "baseline"
        self.started = time.monotonic()
        self.checks: dict[str, Any] = {}
        self.http: aiohttp.ClientSession | None = None

    # -- bookkeeping -------------------------------------------------------------------------
    def _tick(self, amount: int = 1) -> None:
        if self.phase != "storm":  # its attempts are a fixed check, not iterations
            self.done += amount
        if self.progress is not None:
            self.progress(
                StressProgress(
                    self.phase,
                    time.monotonic() - self.started,
                    self.done,
                    sum(self.plan.values()),
                    self.recorder.close_codes[CloseCode.STORM],
                    self.recorder.counts["errors"],
                )
            )

    def _refused(self, refused: Refused, where: str) -> None:
        self.recorder.close_codes[refused.code] += 1
        if refused.code == CloseCode.STORM:
            self.recorder.error(
                f"{where}: the server refused us with 4129 ({refused.reason}) — its storm rule "
                "counts this client as a storm; raise its thresholds or slow down"
            )
        else:
            self.recorder.error(f"{where}: refused {refused.code} {refused.reason}")

    async def _open(self, params: dict[str, str] | ClientProtocol, where: str) -> Wire | None:
        """Connect with ``params`` (a first query, or a protocol to resume with)."""
        assert self.http is not None
        if not isinstance(params, ClientProtocol):
            params = {"project": self.project, **params}
        result = await Wire.open(self.http, self.rng.choice(self.ws_urls), params)
        if isinstance(result, Refused):
            self._refused(result, where)
            return None
        return result

    def _new_session(self) -> str:
        """A fresh session id, remembered: ended at the end if it still runs."""
        session = session_id()
        self.opened.remember(session)
        return session

    def _user(self, recorder: Recorder) -> TypingUser:
        assert self.http is not None
        user = TypingUser(self.http, self.url, self.project, recorder, urls=self.urls)
        self.opened.remember(user.session)
        return user

    # -- the run -----------------------------------------------------------------------------
    async def run(self) -> None:
        await self.probe.locate()
        before = await self._settled_sample(None)
        async with new_http(self.token) as http:
            self.http = http
            bystanders = [
                self._user(self.bystander_recorder) for _ in range(self.options.bystanders)
            ]
            await asyncio.gather(*(b.start() for b in bystanders), return_exceptions=True)
            stop = asyncio.Event()
            typing = [asyncio.create_task(self._keep_typing(b, stop)) for b in bystanders]
            try:
                for name, phase in self._phases():
                    self.phase = name
                    await self._guard(name, phase)
                stop.set()
                await asyncio.gather(*typing, return_exceptions=True)
                await self._end_bystanders(bystanders)
            finally:  # cancelled (Ctrl-C): no verifying, run_stress ends the sessions
                stop.set()
                await asyncio.gather(*typing, return_exceptions=True)
                await asyncio.gather(*(b.close() for b in bystanders))
        self.phase = "settling"
        self._tick(0)
        after = await self._settled_sample(before)
        cpu = await self._quiet_cpu()
        self._report(before, after, cpu, bystanders)

    def _phases(self) -> list[tuple[str, Callable[[], Awaitable[None]]]]:
        return [
            ("same-key", self._same_key),
            ("new-key", self._new_key),
            ("concurrent-create", self._concurrent_create),
            ("abort-replay", self._abort_replay),
            ("storm", self._storm),
        ]

    async def _guard(self, name: str, phase: Callable[[], Awaitable[None]]) -> None:
        try:
            async with asyncio.timeout(300):
                await phase()
        except (UserFailed, TimeoutError, AssertionError) as exc:
            self.recorder.error(f"{name}: {type(exc).__name__}: {exc}")

    async def _workers(
        self, count: int, job: Callable[[int], Awaitable[None]], *, iterations: bool = True
    ) -> None:
        """Run ``job(i)`` for i in range(count) on ``concurrency`` workers; each job is one
        iteration (whatever its outcome) unless ``iterations`` is False (set-up, clean-up)."""
        indices = iter(range(count))

        async def worker() -> None:
            for index in indices:
                try:
                    await job(index)
                except (UserFailed, TimeoutError, AssertionError) as exc:
                    self.recorder.error(f"{self.phase} #{index}: {exc}")
                if iterations:
                    self._tick()

        await asyncio.gather(*(worker() for _ in range(max(1, self.options.concurrency))))

    # -- bystanders --------------------------------------------------------------------------
    async def _keep_typing(self, user: TypingUser, stop: asyncio.Event) -> None:
        with contextlib.suppress(UserFailed):
            while not stop.is_set() and user.marker_end is not None and not user.failed:
                await user.type_line(user.rng.randint(4, 16), (0.01, 0.05))
                await asyncio.sleep(0.1)

    async def _end_bystanders(self, bystanders: list[TypingUser]) -> None:
        async def end(user: TypingUser) -> None:
            with contextlib.suppress(UserFailed):
                if user.marker_end is not None and not user.failed:
                    await user.verify_replay()
                    await user.finish()

        await asyncio.gather(*(end(b) for b in bystanders))

    # -- phase: same keys --------------------------------------------------------------------
    async def _same_key(self) -> None:
        cycles = self.plan["same-key"]
        # Each key sees its create, its cycles and the final replay check: stay within the rule.
        per_key = max(1, self.threshold - 2)
        keys = max(min(self.options.concurrency, cycles), math.ceil(cycles / per_key))
        assert self.http is not None
        users = [self._user(self.recorder) for _ in range(keys)]
        pacers = [KeyPacer(self.threshold, self.window) for _ in users]
        try:
            start, finish = self._start_user, self._finish_user
            await self._workers(keys, lambda i: start(users[i], pacers[i]), iterations=False)
            await self._workers(cycles, lambda i: self._cycle(users[i % keys], pacers[i % keys]))
            await self._workers(keys, lambda i: finish(users[i], pacers[i]), iterations=False)
        finally:
            await asyncio.gather(*(user.close() for user in users))
            await self._kill_leftovers(users)
        failed = [user.failed for user in users if user.failed]
        self.checks["same_key"] = {"keys": keys, "cycles": cycles, "users_failed": len(failed)}

    async def _start_user(self, user: TypingUser, pacer: KeyPacer) -> None:
        pacer.record(time.monotonic())
        await user.start()

    async def _cycle(self, user: TypingUser, pacer: KeyPacer) -> None:
        if user.failed:
            return
        await asyncio.sleep(pacer.delay(time.monotonic()))
        pacer.record(time.monotonic())
        await user.cut(abrupt=self.rng.random() < 0.5)
        await user.send(self.rng.choice(b"abcdef").to_bytes(1, "big"))
        await user.wait_for(lambda: user.verified >= len(user.expected), 10, "an echo")

    async def _finish_user(self, user: TypingUser, pacer: KeyPacer) -> None:
        if user.failed or user.marker_end is None:
            return
        await user.send(b"\r")
        await user.wait_for(lambda: user.verified >= len(user.expected), 10, "the last line")
        await asyncio.sleep(pacer.delay(time.monotonic()))
        pacer.record(time.monotonic())
        await user.verify_replay()
        await user.finish()

    async def _kill_leftovers(self, users: list[TypingUser]) -> None:
        """Sessions of users that failed are ended (before the leak check)."""
        keys = [composite_key(u.session, self.project) for u in users if u.exit_code is None]
        self.recorder.count("killed_leftovers", len(await self.opened.end(keys)))

    # -- phase: new keys ---------------------------------------------------------------------
    async def _new_key(self) -> None:
        await self._workers(self.plan["new-key"], self._new_key_cycle)

    async def _new_key_cycle(self, index: int) -> None:
        session, client = self._new_session(), client_id()
        wire = await self._open({"session": session, "client": client}, "new key")
        if wire is None:
            return
        received = await read_at_least(wire, 1)
        if index % 2:
            wire.abort()  # the same protocol resumes: offset, create=0, the client id
            offset = wire.position
            resumed = await self._open(wire.protocol, "resume new key")
            if resumed is None:
                return
            if resumed.hello.replay_from != offset or resumed.hello.created or not received:
                self.recorder.error(f"new key resume: unexpected hello {resumed.hello}")
            wire = resumed
        await self._exit(wire, "new key")

    async def _exit(self, wire: Wire, where: str) -> None:
        await wire.send(b"exit\r")
        code = await read_until_closed(wire, 15)
        if code != CloseCode.EXITED:
            self.recorder.error(f"{where}: exit closed with {code}, not 4012")
        else:
            self.recorder.count("exits")

    # -- phase: concurrent creates -----------------------------------------------------------
    async def _concurrent_create(self) -> None:
        group = self.threshold + 2 if self.options.concurrency >= self.threshold else 0
        group = group or max(2, self.options.concurrency)
        sizes = group_sizes(self.plan["concurrent-create"], group)
        outcomes = [await self._create_round(size) for size in sizes]
        self.checks["concurrent_create"] = {
            "rounds": len(sizes),
            "group": group,
            "rounds_with_one_shell": sum(1 for ok in outcomes if ok),
        }

    async def _create_round(self, group: int) -> bool:
        session = self._new_session()
        results = await asyncio.gather(
            *(
                self._timed_connect({"session": session, "client": client_id()})
                for _ in range(group)
            )
        )
        wires = [r for r in results if isinstance(r, Wire)]
        refused = [r for r in results if isinstance(r, Refused)]
        created = [w for w in wires if w.hello.created]
        keys = {w.hello.key for w in wires}
        expect_admitted = min(group, self.threshold)
        listed = await self._every_node("/stats/sessions", "sessions")
        entries = [s for s in listed if s["session"] == session]
        ok = (
            len(created) == 1
            and len(keys) == 1
            and len(entries) == 1
            and len(wires) == expect_admitted
            and all(r.code == CloseCode.STORM for r in refused)
        )
        if not ok:
            self.recorder.error(
                f"concurrent create of {session}: {len(created)} created, {len(wires)} admitted "
                f"(expected {expect_admitted}), {len(entries)} sessions listed, refusals "
                f"{sorted(r.code for r in refused)}"
            )
        self.recorder.count("storm_refusals_expected", len(refused))
        if wires:
            await self._exit(wires[0], "concurrent create")
        await asyncio.gather(*(read_until_closed(w, 10) for w in wires[1:]))
        self._tick(group)
        return ok

    async def _timed_connect(self, params: dict[str, str]) -> Wire | Refused:
        """A connect of the concurrent creates: its time to the hello is a ``connect`` figure."""
        started = time.perf_counter()
        result = await self._open_quietly(params)
        if isinstance(result, Wire):
            self.recorder.latency(figures.CONNECT, time.perf_counter() - started)
        return result

    async def _open_quietly(self, params: dict[str, str]) -> Wire | Refused:
        assert self.http is not None
        url = self.rng.choice(self.ws_urls)
        return await Wire.open(self.http, url, {"project": self.project, **params})

    # -- phase: aborts mid-replay ------------------------------------------------------------
    async def _abort_replay(self) -> None:
        cycles = self.plan["abort-replay"]
        per_session = max(1, self.threshold - 2)
        count = math.ceil(cycles / per_session)
        sources = await asyncio.gather(*(self._replay_source() for _ in range(count)))
        live = [s for s in sources if s is not None]
        if not live:
            self._tick(cycles)  # tried: each failed for want of a source (the errors say why)
            return
        await self._workers(cycles, lambda i: self._replay_cycle(*live[i % len(live)]))
        for session, _, wire in live:
            await self._exit(wire, f"replay source {session}")

    async def _replay_source(self) -> tuple[str, bytes, Wire] | None:
        session = self._new_session()
        wire = await self._open({"session": session, "client": client_id()}, "replay source")
        if wire is None:
            return None
        prompt = await read_at_least(wire, 1)
        await wire.send(REPLAY_COMMAND)
        transcript = prompt + await read_until(wire, REPLAY_DONE + b"\r\n", 60)
        return session, transcript, wire

    async def _replay_cycle(self, session: str, reference: bytes, keeper: Wire) -> None:
        offset = self.rng.choice([0, self.rng.randrange(len(reference))])
        params = {"session": session, "offset": str(offset), "create": "0"}
        wire = await self._open(params, "replay")
        if wire is None:
            return
        wanted = self.rng.randrange(1, len(reference) - offset + 1)
        got = await read_at_least(wire, wanted)
        wire.abort()
        start = wire.hello.replay_from
        got = got[: len(reference) - start]  # the prompt may follow what the source read
        if start != offset or got != reference[start : start + len(got)]:
            self.recorder.error(f"replay of {session} from {offset} differs from the live stream")
        else:
            self.recorder.count("replays_exact")

    # -- phase: storm ------------------------------------------------------------------------
    async def _storm(self) -> None:
        session, client = self._new_session(), client_id()
        params = {"session": session, "client": client}
        codes: list[int] = []
        for _ in range(self.threshold):  # all admitted: the threshold is not exceeded
            codes.append(await self._attempt(params))
        tripped = await self._attempt_full(params)
        again = await self._attempt_full(params)
        breaker = await self._breaker_state(f"{session}:{self.project}")
        await asyncio.sleep((retry_after_seconds(tripped[1]) or 1) + 0.1)
        half_open = await self._attempt(params)
        for _ in range(self.threshold - 1):
            codes.append(await self._attempt(params))
        second = await self._attempt_full(params)
        await asyncio.sleep((retry_after_seconds(second[1]) or 1) + 0.1)
        recovered = await self._attempt(params)
        self.checks["storm"] = {
            "threshold": self.threshold,
            "window": self.window,
            "admitted_before_trip": sum(1 for c in codes[: self.threshold] if c == 0),
            "trip": list(tripped),
            "early_retry": list(again),
            "breaker_while_open": breaker,
            "half_open_admitted": half_open == 0,
            "second_trip": list(second),
            "recovered_after_quiet": recovered == 0,
        }
        expected = (
            all(code == 0 for code in codes)
            and tripped[0] == CloseCode.STORM
            and retry_after_seconds(tripped[1]) == 1
            and again[0] == CloseCode.STORM
            and breaker == "open"
            and half_open == 0
            and second[0] == CloseCode.STORM
            and retry_after_seconds(second[1]) == 2
            and recovered == 0
        )
        self.checks["storm"]["as_configured"] = expected
        if not expected:
            self.recorder.error(
                f"storm detection did not behave as configured: {self.checks['storm']}"
            )
        await self._end_session(params)

    async def _attempt(self, params: dict[str, str]) -> int:
        return (await self._attempt_full(params))[0]

    async def _attempt_full(self, params: dict[str, str]) -> tuple[int, str]:
        """Connect and close at once: (0, "") when admitted, else (code, reason)."""
        result = await self._open_quietly(params)
        self._tick()
        if isinstance(result, Refused):
            self.recorder.close_codes[result.code] += 1
            if result.code == CloseCode.STORM:
                self.recorder.count("storm_refusals_expected")
            return result.code, result.reason
        await result.close()
        return 0, ""

    async def _every_node(self, path: str, field: str) -> list[dict[str, Any]]:
        """The rows under ``field`` of ``path`` on every node (one node unless clustered)."""
        rows: list[dict[str, Any]] = []
        for url in self.urls:
            rows += (await fetch_json(url, path, token=self.token))[field]
        return rows

    async def _breaker_state(self, key: str) -> str:
        # A key's breaker is on its owner node, which sees every attach of the key.
        for row in await self._every_node("/stats/circuit-breaker", "key"):
            if row["key"] == key:
                return str(row["state"])
        return "absent"

    async def _end_session(self, params: dict[str, str]) -> None:
        wire = await self._open(params | {"create": "0"}, "storm cleanup")
        if wire is not None:
            await self._exit(wire, "storm cleanup")

    # -- after the run -----------------------------------------------------------------------
    async def _settled_sample(self, before: ProcessSample | None) -> ProcessSample:
        """A sample once shells and fds are back to ``before`` (or stable), at most 20 s."""
        deadline = time.monotonic() + SETTLE_SECONDS
        sample = await self.probe.sample()
        while time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            previous, sample = sample, await self.probe.sample()
            if before is not None and (sample.shells, sample.fds) == (before.shells, before.fds):
                break
            if before is None and (sample.shells, sample.fds) == (previous.shells, previous.fds):
                break
        return sample

    async def _quiet_cpu(self) -> float:
        """The lowest 1-second CPU % seen within 10 s after the run."""
        lowest, deadline = 100.0, time.monotonic() + 10
        while time.monotonic() < deadline:
            lowest = min(lowest, await self.probe.cpu_percent(1.0))
            if lowest < 5:
                break
        return lowest

    def _report(
        self,
        before: ProcessSample,
        after: ProcessSample,
        cpu: float,
        bystanders: list[TypingUser],
    ) -> None:
        by = self.bystander_recorder
        by_ok = [b for b in bystanders if not b.failed and b.marker_end is not None]
        self.checks["bystanders"] = {
            "users": len(bystanders),
            "unaffected": len(by_ok),
            "unexpected_closes": by.counts["unexpected_closes"],
            "lines": by.counts["lines"],
            figures.ECHO: by.summary().get(figures.ECHO, {"count": 0}),
        }
        counts = self.recorder.counts
        self.report.figures = {
            "iterations": self.done,
            "plan": self.plan,
            "elapsed_s": round(time.monotonic() - self.started, 2),
            "latency_ms": self.recorder.summary(),
            "close_codes": {str(c): n for c, n in sorted(self.recorder.close_codes.items())},
            "storm_refusals_expected": counts["storm_refusals_expected"],
            "replays_exact": counts["replays_exact"],
            "exits": counts["exits"],
            "checks": self.checks,
            "server_before": _sample_json(before),
            "server_after": _sample_json(after),
            "quiet_cpu_percent": round(cpu, 2),
            "measured_locally": self.probe.is_local,
        }
        self.report.errors = self.recorder.errors + by.errors
        self.report.verdicts = self._verdicts(before, after, cpu, len(by_ok), len(bystanders))

    def _verdicts(
        self, before: ProcessSample, after: ProcessSample, cpu: float, ok: int, bystanders: int
    ) -> list[Verdict]:
        errors = self.recorder.counts["errors"]
        storm = self.checks.get("storm", {})
        creates = self.checks.get("concurrent_create", {})
        rss_delta = (after.rss_bytes - before.rss_bytes) / MB
        verdicts = [
            Verdict("no duplicates, no loss, no unexpected refusal", "correctness", "0 errors",
                    str(errors), errors == 0),
            Verdict("never two shells for one key", "correctness",
                    f"{creates.get('rounds', 0)} rounds", str(creates.get("rounds_with_one_shell")),
                    creates.get("rounds") == creates.get("rounds_with_one_shell") is not None),
            Verdict("storm detection as configured, recovers after quiet", "correctness",
                    "4129 retry-after=1, then 2; admitted after", str(storm.get("as_configured")),
                    bool(storm.get("as_configured"))),
            Verdict("other sessions unaffected", "correctness", f"{bystanders} of {bystanders}",
                    str(ok), ok == bystanders),
            Verdict("server RSS after vs before", "original", "within 10 MB",
                    f"{rss_delta:+.1f} MB", abs(rss_delta) <= 10),
            Verdict("server CPU within 10 s after", "original", "< 5 %", f"{cpu:.1f} %", cpu < 5),
            self._burst_connect_verdict(),
        ]  # fmt: skip
        if self.probe.is_local:
            verdicts += [
                Verdict("no leaked shell", "correctness", str(before.shells), str(after.shells),
                        after.shells == before.shells),
                Verdict("no leaked fd", "correctness", str(before.fds), str(after.fds),
                        after.fds == before.fds),
            ]  # fmt: skip
        return verdicts

    def _burst_connect_verdict(self) -> Verdict:
        """Connects here come in bursts (``concurrency`` users created at once, groups of
        concurrent creates): the server spawns their shells one after another on its event
        loop, so the last hello of a burst of N waits for N spawns. Target: the plan's 100 ms
        session latency plus :data:`SPAWN_BUDGET_MS` per connect of the largest burst."""
        burst = max(self.options.concurrency, self.checks.get("concurrent_create", {}).get(
            "group", 0))  # fmt: skip
        target = figures.SESSION_LATENCY_TARGET_MS + SPAWN_BUDGET_MS * burst
        p99 = self.recorder.summary().get(figures.CONNECT, {}).get("p99")
        return Verdict(
            f"{figures.CONNECT} p99, bursts of {burst} new sessions at once",
            "tether",
            f"< {target:g} ms",
            "no samples" if p99 is None else f"{p99:.1f} ms",
            p99 is not None and p99 < target,
        )


def _sample_json(sample: ProcessSample) -> dict[str, Any]:
    return {
        "rss_mib": round(sample.rss_bytes / 2**20, 2),
        "cpu_seconds": round(sample.cpu_seconds, 2),
        "fds": sample.fds,
        "shells": sample.shells,
    }


def share_out(iterations: int) -> dict[str, int]:
    """The iterations of each phase in :data:`SHARES`: summing exactly to ``iterations``
    (largest remainders), at least one each. The storm phase's fixed attempts are not
    iterations."""
    if iterations < len(SHARES):
        raise ValueError(f"at least {len(SHARES)} iterations: one per phase")
    exact = {name: share * iterations for name, share in SHARES.items()}
    plan = {name: math.floor(value) for name, value in exact.items()}
    by_remainder = sorted(SHARES, key=lambda name: plan[name] - exact[name])
    for name in by_remainder[: iterations - sum(plan.values())]:
        plan[name] += 1
    for name in SHARES:
        if plan[name] == 0:
            plan[name] = 1
            plan[max(plan, key=plan.__getitem__)] -= 1
    return plan


def group_sizes(total: int, group: int) -> list[int]:
    """Rounds of at most ``group`` simultaneous connects, ``total`` connects in all."""
    full, rest = divmod(total, group)
    return [group] * full + ([rest] if rest else [])
