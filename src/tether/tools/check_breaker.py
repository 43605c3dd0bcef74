"""The circuit-breaker scenario of ``tether check``.

The client runs through a local :class:`~tether.tools.proxy.TcpProxy`; cutting the proxy makes the
server unreachable. The scenario checks the client's schedule (1, 2, 4, 8, 16 s between attempts,
scaled by ``--time-scale``), that the breaker opens at exactly the 5th consecutive failure and goes
half-open after 30 s, and recovery (same shell, exact output): the proxy is restored as soon as the
breaker opens, so the half-open attempt is the one that resumes (about 61 s at time scale 1, the
contract's own windows; progress is reported meanwhile through :meth:`Context.say`). Then it
trips the server's per-key storm detector and checks that the client honours ``retry-after``
(in real seconds: the server's value is never scaled).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from tether.client import ClientEvent, Terminal, connect
from tether.errors import ConnectFailed
from tether.protocol.codes import CloseCode, retry_after_seconds
from tether.protocol.policy import FAILURES_TO_OPEN, PolicyEvent, State, backoff_delay
from tether.tools.check_probe import Context, Outcome, Probe, end_shell, open_terminal, wait_until
from tether.tools.check_scenarios import check_replay
from tether.tools.proxy import TcpProxy

STORM_ATTEMPTS = 40
Timed = tuple[float, PolicyEvent]


@dataclass(frozen=True)
class Schedule:
    """What the client did after the cut, read from its timed policy events."""

    waits: list[float]  # seconds between entering WAITING and the attempt, in order
    attempts_before_open: int
    failures_at_open: int | None
    open_to_half_open: float | None


def read_schedule(log: list[Timed]) -> Schedule:
    """Pure: the observed schedule in a list of (time, policy event)."""
    waits: list[float] = []
    opened = next((i for i, (_, e) in enumerate(log) if e.state is State.OPEN), None)
    before_open = log if opened is None else log[:opened]
    for index, (at, event) in enumerate(before_open):
        if event.state is State.WAITING:
            after = next((t for t, e in log[index + 1 :] if e.state is State.CONNECTING), None)
            if after is not None:
                waits.append(after - at)
    attempts = sum(1 for _, e in before_open if e.state is State.CONNECTING)
    if opened is None:
        return Schedule(waits, attempts, None, None)
    open_at, open_event = log[opened]
    half = next((t for t, e in log[opened:] if e.state is State.HALF_OPEN), None)
    return Schedule(waits, attempts, open_event.failures, None if half is None else half - open_at)


def within(observed: float, expected: float) -> bool:
    """A timer fired on time: never early, and late by a little at most (a loaded machine)."""
    return expected * 0.99 - 0.003 <= observed <= expected * 1.1 + 0.15


async def circuit_breaker_scenario(ctx: Context, out: Outcome) -> None:
    """See the module docstring."""
    parts = urlsplit(ctx.url)
    if parts.scheme != "ws" or parts.hostname is None:
        out.skipped = "needs a ws:// URL (the local proxy cannot carry TLS for the server's name)"
        return
    async with TcpProxy(parts.hostname, parts.port or 80) as proxy:
        proxied = urlunsplit(("ws", f"127.0.0.1:{proxy.port}", parts.path, "", ""))
        await _breaker(ctx, out, proxy, proxied)
        await _storm(ctx, out, proxy, proxied)


async def _breaker(ctx: Context, out: Outcome, proxy: TcpProxy, url: str) -> None:
    term = await open_terminal(ctx, url)
    log: list[Timed] = []
    term.add_listener(lambda e: log.append((ctx.now(), e)) if isinstance(e, PolicyEvent) else None)
    probe = Probe(term)
    scale = ctx.time_scale
    try:
        pid = await probe.shell_pid()
        proxy.cut()
        backoff = sum(backoff_delay(k) for k in range(1, FAILURES_TO_OPEN + 1)) * scale
        ctx.say(f"server cut off: {FAILURES_TO_OPEN} attempts over {backoff:g} s until the "
                "breaker opens")  # fmt: skip
        await wait_until(lambda: _count(log, State.OPEN) >= 1, backoff + 20, "the breaker open")
        # Back at once: the breaker holds the client off until half-open, whose one attempt
        # must then reach the same shell (the 30 s are the contract: waited for, not skipped).
        await proxy.restore()
        open_for = term.policy.open_seconds * scale
        ctx.say(f"breaker open: server back; the client waits {open_for:g} s to try again")
        await wait_until(lambda: term.is_connected, open_for + 20, "resume")
        hello = term.protocol.hello
        out.expect(hello is not None and not hello.created, "recovery created a new shell")
        out.expect(await probe.shell_pid() == pid, "recovery reached another shell")
        _judge_schedule(ctx, out, read_schedule(log))
        session = str(term.session_id)
        await term.detach()
        await probe.drain()
        await check_replay(ctx, out, session, bytes(probe.transcript), end=True)
    finally:
        await term.close()


def _count(log: list[Timed], state: State) -> int:
    return sum(1 for _, event in log if event.state is state)


def _judge_schedule(ctx: Context, out: Outcome, schedule: Schedule) -> None:
    scale = ctx.time_scale
    expected = [backoff_delay(k) * scale for k in range(1, FAILURES_TO_OPEN + 1)]
    out.figures["expected_schedule_s"] = [round(d, 3) for d in expected]
    out.figures["observed_schedule_s"] = [round(d, 3) for d in schedule.waits]
    out.figures["opened_after_failures"] = schedule.failures_at_open
    ctx.notes["breaker_opened_after"] = schedule.failures_at_open
    out.expect(len(schedule.waits) == len(expected), "not 5 waits before the breaker opened")
    for index, (seen, wanted) in enumerate(zip(schedule.waits, expected, strict=False)):
        out.expect(within(seen, wanted), f"wait {index + 1}: {seen:.3f} s, expected {wanted:.3f}")
    out.expect(schedule.attempts_before_open == FAILURES_TO_OPEN, "not 5 attempts before open")
    out.expect(schedule.failures_at_open == FAILURES_TO_OPEN, "breaker did not open at the 5th")
    half = schedule.open_to_half_open
    out.figures["expected_open_s"] = round(30 * scale, 3)
    out.figures["observed_open_s"] = None if half is None else round(half, 3)
    out.expect(half is not None and within(half, 30 * scale), "half-open not after 30 s")


async def _storm(ctx: Context, out: Outcome, proxy: TcpProxy, url: str) -> None:
    term = await open_terminal(ctx, url)
    log: list[tuple[float, ClientEvent]] = []
    term.add_listener(lambda event: log.append((ctx.now(), event)))
    try:
        refused_at, retry_after = await _trip_storm(ctx, str(term.session_id))
        out.figures["storm_refused_at_attempt"] = refused_at
        out.figures["storm_retry_after_s"] = retry_after
        if not out.expect(retry_after is not None, "no 4129 with retry-after from the server"):
            return
        assert retry_after is not None
        ctx.say(f"storm detector tripped: the client must wait its retry-after of {retry_after} s")
        proxy.abort_all()
        await wait_until(lambda: term.state is State.WAITING, 10, "the client to notice")
        term.reconnect_now()
        await wait_until(lambda: term.is_connected, retry_after + 20, "reconnect after 4129")
        _judge_storm(out, log, retry_after)
    finally:
        await end_shell(term)


async def _trip_storm(ctx: Context, session: str) -> tuple[int | None, int | None]:
    """Connect to one key quickly until the server refuses with 4129; (attempt, retry-after)."""
    for attempt in range(1, STORM_ATTEMPTS + 1):  # counts the connects that name the key
        try:
            extra: Terminal = await connect(
                ctx.url,
                project=ctx.project,
                token=ctx.token,
                session=session,
                create=False,
                ping_interval=None,
            )
        except ConnectFailed as exc:
            if exc.code != CloseCode.STORM:
                raise
            return attempt, retry_after_seconds(exc.reason)
        await extra.detach()
    return None, None


def _judge_storm(out: Outcome, log: list[tuple[float, ClientEvent]], retry_after: int) -> None:
    policy = [(t, e) for t, e in log if isinstance(e, PolicyEvent)]
    refused = next(((t, e) for t, e in policy if e.code == CloseCode.STORM), None)
    if not out.expect(refused is not None, "the client's retry was not refused with 4129"):
        return
    assert refused is not None
    at, event = refused
    retry = next((t for t, e in policy if t >= at and e.state is State.CONNECTING), None)
    waited = None if retry is None else retry - at
    out.figures["client_waited_after_4129_s"] = None if waited is None else round(waited, 3)
    out.expect((event.delay or 0) >= retry_after, "the client's delay ignored retry-after")
    out.expect(waited is not None and waited >= retry_after - 0.01, "retried before retry-after")
