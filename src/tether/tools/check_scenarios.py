"""The scenarios of ``tether check``: each takes a Context and fills an Outcome (no printing).

Every shell a scenario starts is ended with ``exit`` before it returns, so a check leaves no
session behind on the server it validates. Connections to one session are kept below the
server's per-key storm threshold (10 in 10 s) except where the storm is the point.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import uuid

from tether.client import Terminal
from tether.protocol.messages import Hello
from tether.tools import figures
from tether.tools.check_probe import (
    CANONICAL_ID,
    Context,
    Outcome,
    Probe,
    end_shell,
    open_terminal,
)
from tether.tools.figures import summarize

SESSION_REUSE_ROUNDS = 7  # + the first connect + the replay check stays under 10 per key
CONNECT_SAMPLES = 10
RECONNECTS_PER_SESSION = 3
ECHO_SAMPLES = 10


# ------------------------------------------------------------------------------------ connect
async def connect_scenario(ctx: Context, out: Outcome) -> None:
    """A new session: hello fields, the shell answers a nonce, latency (:mod:`.figures`)."""
    started = ctx.now()
    term = await open_terminal(ctx, cols=100, rows=30)
    hello_at = ctx.now()
    out.figures[figures.CONNECT] = summarize([hello_at - started])
    try:
        _check_new_hello(ctx, out, _hello(term))
        out.figures["session"] = term.session_id
        probe = Probe(term)
        await probe.read_some()
        out.figures[figures.FIRST_OUTPUT] = summarize([ctx.now() - hello_at])
        asked = ctx.now()
        out.figures["pid"] = await probe.shell_pid()
        out.figures[figures.COMMAND] = summarize([ctx.now() - asked])
        out.figures[figures.PING] = summarize([await term.ping()])
    finally:
        out.expect(await end_shell(term), "the shell did not end with 4012 after `exit`")


def _hello(term: Terminal) -> Hello:
    """The terminal's last hello (its fields were checked by the client protocol's parser)."""
    assert term.protocol.hello is not None
    return term.protocol.hello


def _check_new_hello(ctx: Context, out: Outcome, hello: Hello) -> None:
    session = hello.session
    out.expect(CANONICAL_ID.fullmatch(session) is not None, f"bad session id {session!r}")
    out.expect(hello.key == f"{session}:{ctx.project}", "hello.key is not session:project")
    out.expect(hello.created, "hello.created is not true for a new session")
    for name in ("replay_from", "gap", "input_acked"):
        out.expect(getattr(hello, name) == 0, f"hello.{name} is {getattr(hello, name)!r}, not 0")
    out.expect((hello.cols, hello.rows) == (100, 30), "size not applied")


# ------------------------------------------------------------------------------ session reuse
async def session_reuse_scenario(ctx: Context, out: Outcome) -> None:
    """Disconnect and reconnect many times: same shell, one session, exact replay."""
    term = await open_terminal(ctx)
    probe = Probe(term)
    first_pid = await probe.shell_pid()
    stream, latencies = bytearray(), []
    session, client_id = term.session_id, term.client_id
    for round_ in range(SESSION_REUSE_ROUNDS + 1):
        if round_:
            started = ctx.now()
            term = await open_terminal(
                ctx, session=session, offset=len(stream), create=False, client_id=client_id
            )
            latencies.append(ctx.now() - started)
            _check_resume_hello(out, _hello(term), session, len(stream), round_)
            probe = Probe(term)
            pid = await probe.shell_pid()
            out.expect(pid == first_pid, f"round {round_}: PID {pid}, not {first_pid}")
        await term.detach()
        await probe.drain()
        stream += probe.transcript
    out.figures |= {"rounds": SESSION_REUSE_ROUNDS, "pid": first_pid, "stream_bytes": len(stream)}
    out.figures[figures.REATTACH] = summarize(latencies)
    await _check_single_session(ctx, out, f"{session}:{ctx.project}", first_pid)
    await check_replay(ctx, out, str(session), bytes(stream), end=True)


def _check_resume_hello(
    out: Outcome, hello: Hello, session: str | None, offset: int, round_: int
) -> None:
    out.expect(hello.session == session, f"round {round_}: another session id")
    out.expect(not hello.created, f"round {round_}: a new shell was created")
    out.expect(hello.replay_from == offset, f"round {round_}: replay_from != offset")
    out.expect(hello.gap == 0, f"round {round_}: gap {hello.gap}")


async def _check_single_session(ctx: Context, out: Outcome, key: str, pid: int) -> None:
    mine = [entry for entry in await ctx.sessions() if entry.get("key") == key]
    out.expect(len(mine) == 1, f"{len(mine)} sessions listed for {key} in /stats/sessions")
    if mine and mine[0].get("pid") is not None:
        out.expect(mine[0]["pid"] == pid, "/stats/sessions shows another PID")


async def check_replay(ctx: Context, out: Outcome, session: str, stream: bytes, end: bool) -> None:
    """A fresh connection with offset 0 must replay exactly the bytes received so far."""
    term = await open_terminal(ctx, session=session, offset=0, create=False)
    try:
        probe, hello = Probe(term), _hello(term)
        if not out.expect(hello.replay_from == 0, "early output no longer buffered"):
            return
        size = len(stream)
        out.expect(hello.head >= size, "head is before what was received")
        async with asyncio.timeout(10):
            while len(probe.transcript) < size:
                await probe.read_some()
        out.expect(bytes(probe.transcript[:size]) == stream, "replay differs from the stream")
        out.figures["replay_exact"] = bytes(probe.transcript[:size]) == stream
    finally:
        if end:
            await end_shell(term)
        else:
            await term.close()


# --------------------------------------------------------------------------- legacy migration
def _legacy_ids(project: str) -> dict[str, str]:
    """One fresh legacy id of each form (fresh, so a check never touches a user's session)."""
    tag = secrets.randbelow(10**9)
    return {
        "uuid": str(uuid.uuid4()),
        "term-N": f"term-{tag}",
        "number": str(10**9 + tag),
        "session-ts-x": f"session-1754900000000-{secrets.token_hex(3)}",
    }


async def legacy_migration_scenario(ctx: Context, out: Outcome) -> None:
    """Legacy ids reach the same shell again and are told their canonical id."""
    mapping: dict[str, str] = {}
    for form, legacy in _legacy_ids(ctx.project).items():
        canonical = await _legacy_round_trip(ctx, out, form, legacy)
        if canonical:
            mapping[form] = canonical
            if form == "term-N":
                composite = f"{legacy}:{ctx.project}"
                again = await _legacy_round_trip(ctx, out, "composite", composite, canonical)
                out.expect(again == canonical, "old composite id reached another session")
    out.figures["canonical"] = mapping
    for canonical in mapping.values():
        term = await open_terminal(ctx, session=canonical, create=False)
        await end_shell(term)


async def _legacy_round_trip(
    ctx: Context, out: Outcome, form: str, legacy: str, existing: str | None = None
) -> str | None:
    """Connect twice with ``legacy``; the canonical id when both reached the same shell."""
    pids, ids = [], []
    for round_ in range(2):
        term = await open_terminal(ctx, session=legacy, create=round_ == 0 and existing is None)
        hello = _hello(term)
        ids.append(hello.session)
        out.expect(
            hello.legacy in (legacy, legacy.rsplit(":", 1)[0]),
            f"{form}: hello.legacy is {hello.legacy!r}",
        )
        pids.append(await Probe(term).shell_pid())
        await term.detach()
    _check_canonical(out, form, legacy, ids[0])
    same = out.expect(ids[0] == ids[1] and pids[0] == pids[1], f"{form}: not the same shell")
    return ids[0] if same else None


def _check_canonical(out: Outcome, form: str, legacy: str, canonical: str) -> None:
    out.expect(CANONICAL_ID.fullmatch(canonical) is not None, f"{form}: bad id {canonical!r}")
    stamp = re.search(r"(?<![0-9])[0-9]{13}(?![0-9])", legacy)
    expected = stamp.group(0) if stamp else "0" * 13
    out.expect(canonical[8:21] == expected, f"{form}: timestamp part is not {expected}")


# -------------------------------------------------------------------------------- performance
async def performance_scenario(ctx: Context, out: Outcome) -> None:
    """Connect/reconnect latency, echo round trip, memory per session, reconnection success."""
    terms: list[Terminal] = []
    connects: list[float] = []
    try:
        for _ in range(CONNECT_SAMPLES):
            started = ctx.now()
            terms.append(await open_terminal(ctx))
            connects.append(ctx.now() - started)
        echoes = await _echo_samples(ctx, terms[0])
        memory = await _memory_per_session(ctx, {t.key for t in terms})
        reconnects, failures, terms = await _reconnect_samples(ctx, terms)
    finally:
        await asyncio.gather(*(end_shell(term) for term in terms))
    attempts = len(reconnects) + failures
    success = len(reconnects) / attempts if attempts else 0.0
    out.figures |= {figures.CONNECT: summarize(connects), figures.REATTACH: summarize(reconnects)}
    out.figures |= {figures.COMMAND: summarize(echoes), "reconnect_success": round(success, 4)}
    out.figures["memory_mb"] = memory
    _judge_performance(ctx, out, connects, reconnects, success, memory)


async def _echo_samples(ctx: Context, term: Terminal) -> list[float]:
    probe, samples = Probe(term), []
    for _ in range(ECHO_SAMPLES):
        started = ctx.now()
        await probe.shell_pid()
        samples.append(ctx.now() - started)
    return samples


async def _memory_per_session(ctx: Context, keys: set[str | None]) -> float | None:
    sizes = [e.get("memory_bytes") for e in await ctx.sessions() if e.get("key") in keys]
    known = [size for size in sizes if isinstance(size, int)]
    return round(max(known) / 2**20, 2) if known else None


async def _reconnect_samples(
    ctx: Context, terms: list[Terminal]
) -> tuple[list[float], int, list[Terminal]]:
    samples, failures, current = [], 0, []
    for term in terms:
        for _ in range(RECONNECTS_PER_SESSION):
            session, position = await term.detach()
            started = ctx.now()
            try:
                term = await open_terminal(ctx, session=session, offset=position, create=False)
            except Exception:
                failures += 1
                term = await open_terminal(ctx, session=session, create=False)
                continue
            samples.append(ctx.now() - started)
        current.append(term)
    return samples, failures, current


def _judge_performance(
    ctx: Context,
    out: Outcome,
    connects: list[float],
    reconnects: list[float],
    success: float,
    memory: float | None,
) -> None:
    target = figures.SESSION_LATENCY_TARGET_MS
    connect_p99 = out.figures[figures.CONNECT]["p99"]
    out.expect(connect_p99 < target, f"connect p99 {connect_p99} ms ≥ {target:g} ms")
    out.expect(memory is None or memory < 50, f"memory per session {memory} MB ≥ 50 MB")
    out.expect(success > 0.99, f"reconnection success {success:.2%} ≤ 99%")
    opened_at = ctx.notes.get("breaker_opened_after")
    if opened_at is not None:
        out.figures["breaker_opened_after_failures"] = opened_at
        out.expect(opened_at <= 5, f"breaker opened after {opened_at} failures, not ≤ 5")
    reattach_p99 = out.figures[figures.REATTACH].get("p99")
    out.expect(reattach_p99 is not None, "no reattach measured")
    own = {  # tether's own targets: fail the run only with --strict
        f"connect p99 < 10 ms ({connect_p99:g} ms)": connect_p99 < 10,
        f"reattach p99 < 5 ms ({reattach_p99} ms)": reattach_p99 is not None and reattach_p99 < 5,
    }
    for target_text, met in own.items():
        if ctx.strict:
            out.expect(met, f"tether target missed: {target_text}")
        else:
            verdict = "met" if met else "missed (informational; --strict fails on it)"
            out.notes.append(f"tether target {target_text}: {verdict}")
