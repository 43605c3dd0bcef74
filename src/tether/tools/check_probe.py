"""Building blocks of ``tether check``: results, figures, and a shell probe over a Terminal.

No printing here: scenarios return :class:`ScenarioResult` records, the CLI renders them.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from tether.client import Terminal, connect, fetch_json
from tether.errors import ConnectFailed
from tether.protocol.codes import CloseCode
from tether.protocol.policy import ReconnectPolicy, State
from tether.tools.leftovers import OpenedSessions
from tether.tools.leftovers import end_shell as end_shell  # scenarios and tests import it here

Status = Literal["pass", "fail", "skip"]
CANONICAL_ID = re.compile(r"session_[0-9]{13}_[a-z0-9]{6,32}")


@dataclass(frozen=True)
class ScenarioResult:
    """The outcome of one scenario: its status, its figures, and what went wrong."""

    name: str
    status: Status
    figures: dict[str, Any]
    failures: tuple[str, ...]
    seconds: float
    notes: tuple[str, ...] = ()  # informational: never a failure, even of a target missed

    @property
    def passed(self) -> bool:
        """True unless the scenario failed (a skipped scenario does not fail the run)."""
        return self.status != "fail"

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "name": self.name,
            "status": self.status,
            "figures": self.figures,
            "failures": list(self.failures),
            "notes": list(self.notes),
            "seconds": round(self.seconds, 3),
        }


@dataclass
class Context:
    """What every scenario is told: the server, the project, and the client-side time scale."""

    url: str  # the WebSocket endpoint
    project: str
    token: str | None = None
    time_scale: float = 1.0
    strict: bool = False
    notes: dict[str, Any] = field(default_factory=dict)  # facts one scenario leaves for another
    also: tuple[str, ...] = ()  # the other nodes of a cluster (WebSocket endpoints)
    progress: Callable[[str], None] | None = None  # told what a long step waits for
    opened: OpenedSessions = field(init=False)  # every shell opened, ended when the check ends
    _opened: int = 0

    def __post_init__(self) -> None:
        self.opened = OpenedSessions((self.url, *self.also), self.project, self.token)

    def say(self, message: str) -> None:
        """Tell the person waiting what is going on (a step that takes seconds)."""
        if self.progress is not None:
            self.progress(message)

    def remember(self, term: Terminal) -> None:
        """A session this check opened: ended by :meth:`end_leftovers` if still there."""
        if term.key is not None and term.session_id is not None:
            self.opened.remember(term.session_id, term.key)

    async def end_leftovers(self) -> list[str]:
        """End every session this check opened that still runs (after a failure, or Ctrl-C):
        a check leaves no shell behind. Returns the keys it ended."""
        return await self.opened.end_leftovers()

    def next_url(self) -> str:
        """The node for the next connection: the nodes in turn (a session made through one is
        resumed through the next)."""
        urls = (self.url, *self.also)
        self._opened += 1
        return urls[(self._opened - 1) % len(urls)]

    async def sessions(self) -> list[dict[str, Any]]:
        """Every node's ``/stats/sessions`` entries."""
        entries: list[dict[str, Any]] = []
        for url in (self.url, *self.also):
            stats = await fetch_json(url, "/stats/sessions", token=self.token)
            entries += stats.get("sessions", [])
        return entries

    def now(self) -> float:
        """The event loop's clock."""
        return asyncio.get_running_loop().time()


class Outcome:
    """Collects a scenario's figures, failed expectations and informational notes."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.figures: dict[str, Any] = {}
        self.failures: list[str] = []
        self.notes: list[str] = []
        self.skipped = ""

    def expect(self, condition: bool, message: str) -> bool:
        """Record ``message`` as a failure unless ``condition``; returns ``condition``."""
        if not condition:
            self.failures.append(message)
        return condition

    def result(self, seconds: float) -> ScenarioResult:
        """The final record."""
        status: Status = "fail" if self.failures else ("skip" if self.skipped else "pass")
        if self.skipped:
            self.figures.setdefault("skipped", self.skipped)
        return ScenarioResult(
            self.name, status, self.figures, tuple(self.failures), seconds, tuple(self.notes)
        )


async def open_terminal(ctx: Context, url: str | None = None, **options: Any) -> Terminal:
    """Connect; a server storm refusal (4129) is retried on the reconnection policy's schedule
    (its backoff, at least ``retry-after``) until the policy's breaker would open."""
    options.setdefault("ping_interval", None)
    policy = ReconnectPolicy(time_scale=ctx.time_scale)
    while True:
        try:
            term = await connect(
                url or ctx.next_url(),
                project=ctx.project,
                token=ctx.token,
                time_scale=ctx.time_scale,
                **options,
            )
            ctx.remember(term)
            return term
        except ConnectFailed as exc:
            if exc.code != CloseCode.STORM:
                raise
            policy.on_attempt_failed(ctx.now(), exc.code, exc.reason)
            if policy.state is not State.WAITING:
                raise ConnectFailed(
                    "refused by the storm detector again and again", CloseCode.STORM
                ) from exc
            await asyncio.sleep(max(0.0, (policy.retry_at or 0.0) - ctx.now()))
            policy.on_timer(ctx.now())


class Probe:
    """Reads a terminal's output while keeping a transcript of every stream byte read."""

    def __init__(self, term: Terminal) -> None:
        self.term = term
        hello = term.protocol.hello
        self.start = hello.replay_from if hello else 0  # stream position of transcript[0]
        self.transcript = bytearray()

    async def wait_for(self, pattern: re.Pattern[bytes], timeout: float = 10.0) -> re.Match[bytes]:
        """Read until ``pattern`` matches the bytes read by this probe so far."""
        async with asyncio.timeout(timeout):
            while (match := pattern.search(self.transcript)) is None:
                await self.read_some()
        return match

    async def shell_pid(self, timeout: float = 10.0) -> int:
        """Ask the shell for its PID with a fresh nonce (proves the shell itself answers)."""
        nonce = "tq" + secrets.token_hex(6)
        # The echoed command line shows "tq… $$", never "tq…-<digits>": only the shell's answer
        # matches.
        await self.term.send(f"printf '%s-%s\\n' {nonce} $$\r")
        match = await self.wait_for(re.compile(rb"%s-(\d+)" % nonce.encode()), timeout)
        return int(match.group(1))

    async def drain(self) -> None:
        """After the terminal closed: read what is left of the output."""
        async for chunk in self.term.output():
            self.transcript += chunk

    async def read_some(self) -> None:
        """Read one more chunk into the transcript."""
        async for chunk in self.term.output():
            self.transcript += chunk
            return
        raise ConnectFailed("the terminal closed")


async def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` until true; raises TimeoutError naming ``what``."""
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.002)
    except TimeoutError:
        raise TimeoutError(f"timed out waiting for {what}") from None
