"""The latency figures of ``tether check``, ``load`` and ``stress``: named and defined once.

Every tool measures a figure the same way and reports it under the same name, with the same
statistics (:func:`summarize`); the docs (docs/client.md, docs/benchmarks.md) quote
:data:`DEFINITIONS`. A new session's **connect** stops at the hello: the server has placed the
session and started its shell, but a login shell takes its own time to print its prompt, which is
**first output**, measured apart.
"""

from __future__ import annotations

import statistics

CONNECT = "connect"
FIRST_OUTPUT = "first_output"
REATTACH = "reattach"
ECHO = "echo"
COMMAND = "command"
PING = "ping"

DEFINITIONS: dict[str, str] = {
    CONNECT: "a new session: from opening the WebSocket handshake to the hello",
    FIRST_OUTPUT: "a new session: from the hello to the shell's first output byte "
    "(the login shell's start)",
    REATTACH: "an existing session resumed by offset: from the handshake to the hello",
    ECHO: "a keystroke, from sending it to its echo",
    COMMAND: "a command line, from sending it to the shell's answer",
    PING: "an application ping, from sending it to its pong",
}

# The plan's "session latency" target, for connect, reattach and echo (not first output: how long
# a login shell takes to start is the shell's business, not the server's).
SESSION_LATENCY_TARGET_MS = 100.0


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (``fraction`` in (0, 1]) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(fraction * len(ordered) + 0.4999)))
    return ordered[rank - 1]


def summarize(seconds: list[float]) -> dict[str, float]:
    """Count, mean, p50, p95, p99 and max of durations in seconds, in milliseconds
    (``{"count": 0}`` without samples)."""
    if not seconds:
        return {"count": 0}
    ms = [value * 1000 for value in seconds]
    return {
        "count": len(ms),
        "mean": round(statistics.fmean(ms), 3),
        "p50": round(percentile(ms, 0.50), 3),
        "p95": round(percentile(ms, 0.95), 3),
        "p99": round(percentile(ms, 0.99), 3),
        "max": round(max(ms), 3),
    }


def describe(summary: dict[str, float]) -> str:
    """One line for a person: ``p50 2.1 ms, p99 3.4 ms (10 samples)``, or ``no samples``."""
    count = int(summary.get("count", 0))
    if not count:
        return "no samples"
    if count == 1:
        return f"{summary['p50']:.1f} ms (1 sample)"
    return f"p50 {summary['p50']:.1f} ms, p99 {summary['p99']:.1f} ms ({count} samples)"
