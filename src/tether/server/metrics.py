"""Prometheus metrics of one server (its own registry, so several servers can share a process).

Names follow Prometheus conventions (``tether_…_total`` counters, ``_seconds``, ``_bytes``).
Every label value comes from a small fixed set — never a session id, key, owner or address —
so that a busy server cannot blow up the time-series database: a close code a client chose is
reported as ``other`` unless it is one of docs/protocol.md, section 6.

Gauges about live state (sessions by state, open breakers, …) are read from the server's
``snapshot()`` at scrape time. What the server must remember between events to report (recent
re-attaches per session, when each connection started, which breakers were open) is kept by
:class:`ActivityTracker`, which is pure: time is passed in (read from the server's clock).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from tether.protocol.codes import CloseCode
from tether.server.clock import Clock

# The text format would export a ``…_created`` gauge beside every counter and histogram: twice
# the series for a timestamp nobody graphs.
disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in prometheus-client

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_KNOWN_CODES = frozenset(int(code) for code in CloseCode)
# Codes a refusal never carries (they end admitted connections, or only clients see them).
_NEVER_REFUSED = frozenset(
    {CloseCode.ABNORMAL, CloseCode.MESSAGE_TOO_BIG, CloseCode.SERVICE_RESTART, CloseCode.REPLACED}
)
RECONNECT_WINDOW = 60.0  # seconds over which re-attaches per session are counted
_MAX_REMEMBERED_ATTACHES = 1000  # per session; far above any storm threshold in use
_BREAKER_MEMORY = 300.0  # seconds an opening is remembered to report its closing


def close_code_label(code: int | None) -> str:
    """A bounded label value for a close code: known codes as themselves, else ``other``."""
    if code is None:
        return str(int(CloseCode.ABNORMAL))
    return str(code) if code in _KNOWN_CODES else "other"


class ActivityTracker:
    """What the server remembers to report: recent re-attaches, connection starts, breakers."""

    def __init__(self) -> None:
        self._attaches: dict[str, deque[float]] = {}
        self._connected_at: dict[int, float] = {}
        self._open_breakers: dict[tuple[str, str], float] = {}
        self._cpu_sample: tuple[float, float] | None = None

    # ---------------------------------------------------------------- re-attaches per session
    def record_reattach(self, key: str, now: float) -> None:
        times = self._attaches.setdefault(key, deque(maxlen=_MAX_REMEMBERED_ATTACHES))
        times.append(now)

    def forget_session(self, key: str) -> None:
        self._attaches.pop(key, None)

    def busiest_session(self, now: float) -> int:
        """The most re-attaches one session had in the last :data:`RECONNECT_WINDOW` seconds."""
        busiest = 0
        for key in list(self._attaches):
            times = self._attaches[key]
            while times and times[0] <= now - RECONNECT_WINDOW:
                times.popleft()
            if not times:
                del self._attaches[key]
            busiest = max(busiest, len(times))
        return busiest

    # ---------------------------------------------------------------- connection durations
    def connection_started(self, token: int, now: float) -> None:
        self._connected_at[token] = now

    def connection_ended(self, token: int, now: float) -> float | None:
        """Seconds the connection lasted (None if its start was not recorded)."""
        started = self._connected_at.pop(token, None)
        return None if started is None else now - started

    # ---------------------------------------------------------------- breaker changes
    def breaker_opened(self, scope: str, name: str, opened_at: float, now: float) -> bool:
        """Remember an opening; True when it is news (not the opening already reported)."""
        self._prune_breakers(now)
        if self._open_breakers.get((scope, name)) == opened_at:
            return False
        self._open_breakers[(scope, name)] = opened_at
        return True

    def breaker_closed(self, scope: str, name: str) -> bool:
        """Forget an opening; True when the breaker had been reported open."""
        return self._open_breakers.pop((scope, name), None) is not None

    # ---------------------------------------------------------------- CPU
    def cpu_percent(self, now: float, cpu_seconds: float) -> float | None:
        """CPU use in percent of one core since the previous call (None on the first)."""
        previous, self._cpu_sample = self._cpu_sample, (now, cpu_seconds)
        if previous is None or now <= previous[0]:
            return None
        return 100 * (cpu_seconds - previous[1]) / (now - previous[0])

    def _prune_breakers(self, now: float) -> None:
        stale = [k for k, at in self._open_breakers.items() if now - at > _BREAKER_MEMORY]
        for item in stale:
            del self._open_breakers[item]


class LabelCache:
    """The children of a counter with one label, each looked up once: ``labels()`` costs more
    than the increment, on every connection. Label values come from small fixed sets."""

    def __init__(self, metric: Counter) -> None:
        self._metric = metric
        self._children: dict[str, Counter] = {}

    def __call__(self, value: str) -> Counter:
        child = self._children.get(value)
        if child is None:
            child = self._children[value] = self._metric.labels(value)
        return child


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _labelled(name: str, documentation: str, label: str, values: dict[str, int]) -> Metric:
    family = GaugeMetricFamily(name, documentation, labels=[label])
    for label_value, count in values.items():
        family.add_metric([label_value], count)
    return family


class _SnapshotCollector(Collector):
    """Live state, read from the server's ``snapshot()`` at scrape time."""

    def __init__(
        self,
        snapshot: Callable[[], dict[str, Any]],
        activity: ActivityTracker,
        clock: Clock,
    ) -> None:
        self._snapshot = snapshot
        self._activity = activity
        self._clock = clock

    def collect(self) -> Iterator[Metric]:
        facts = self._snapshot()
        yield _labelled("tether_sessions", "Live sessions by state", "state", facts["states"])
        yield _gauge("tether_clients", "Attached clients (open connections)", facts["clients"])
        yield _gauge(
            "tether_buffered_bytes", "Output bytes held in ring buffers", facts["buffered_bytes"]
        )
        yield _gauge(
            "tether_sessions_memory_bytes",
            "Server memory held by sessions (ring buffers and bookkeeping)",
            facts.get("memory_bytes", 0),
        )
        yield _labelled(
            "tether_breakers_open",
            "Server-side breakers refusing attempts now",
            "scope",
            facts["breakers_open"],
        )
        yield _labelled(
            "tether_breakers_tripped",
            "Breakers that tripped and are still remembered (open, half-open or recently closed)",
            "scope",
            facts.get("breakers_tripped", {}),
        )
        yield _gauge(
            "tether_session_reconnects_max",
            f"Most re-attaches one live session had in the last {RECONNECT_WINDOW:g} s",
            self._activity.busiest_session(self._clock.monotonic()),
        )
        yield _gauge(
            "tether_detached_oldest_seconds",
            "How long the longest-detached session has been detached (0 if none)",
            facts.get("detached_oldest_seconds", 0.0),
        )
        yield _gauge(
            "tether_idle_timeout_seconds",
            "Configured idle timeout of detached sessions",
            facts.get("idle_timeout_seconds", 0.0),
        )
        yield _gauge(
            "tether_max_sessions", "Configured session capacity", facts.get("max_sessions", 0)
        )
        yield _gauge("tether_ready", "1 while accepting new sessions", 1 if facts["ready"] else 0)


class Metrics:
    """Every metric tether exports; see docs/operations.md for what each one means."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]], clock: Clock) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.activity = ActivityTracker()
        r = self.registry
        ProcessCollector(registry=r)  # process_cpu_seconds_total, process_resident_memory_bytes
        r.register(_SnapshotCollector(snapshot, self.activity, clock))
        self.connection_attempts = Counter(
            "tether_connection_attempts_total",
            "WebSocket connection attempts (admitted or refused)",
            registry=r,
        )
        self.connections_opened = Counter(
            "tether_connections_opened_total",
            "WebSocket connections admitted, by kind (create or attach)",
            ["kind"],
            registry=r,
        )
        self.connections_closed = Counter(
            "tether_connections_closed_total",
            "Admitted WebSocket connections closed, by close code",
            ["code"],
            registry=r,
        )
        self.refusals = Counter(
            "tether_connections_refused_total",
            "Connection attempts refused before the hello, by close code",
            ["code"],
            registry=r,
        )
        self.reconnects = Counter(
            "tether_reconnects_total", "Attaches to an existing session", registry=r
        )
        self.resumes = Counter(
            "tether_resumes_total",
            "Re-attaches with an offset, by whether output was lost (gap)",
            ["gap"],
            registry=r,
        )
        self.sessions_created = Counter(
            "tether_sessions_created_total", "Sessions created", registry=r
        )
        self.sessions_ended = Counter(
            "tether_sessions_ended_total",
            "Sessions ended, by reason (exit, reap, kill)",
            ["reason"],
            registry=r,
        )
        self.storm_rejections = Counter(
            "tether_storm_rejections_total",
            "Attempts refused with 4129, by scope (key or address)",
            ["scope"],
            registry=r,
        )
        self.breaker_opens = Counter(
            "tether_breaker_opens_total",
            "Server-side breakers opened, by scope (key, address, project)",
            ["scope"],
            registry=r,
        )
        self.idle_reaps = Counter(
            "tether_idle_reaps_total", "Sessions reaped after the idle timeout", registry=r
        )
        self.input_bytes = Counter(
            "tether_input_bytes_total", "Input bytes written to terminals", registry=r
        )
        self.output_bytes = Counter(
            "tether_output_bytes_total", "Output bytes sent to clients", registry=r
        )
        self.connect_latency = Histogram(
            "tether_connect_seconds",
            "New session: WebSocket upgrade to hello",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.reattach_latency = Histogram(
            "tether_reattach_seconds",
            "Re-attach to an existing session: WebSocket upgrade to hello",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.spawn_failures = Counter(
            "tether_spawn_failures_total", "Shells that failed to start", registry=r
        )
        self.recording_dropped = Counter(
            "tether_recording_dropped_events_total",
            "Recording events dropped: the writer could not keep up, or the disk failed",
            registry=r,
        )
        self.recording_errors = Counter(
            "tether_recording_errors_total", "Failed writes of session recordings", registry=r
        )
        self.info = Gauge("tether_build_info", "Build information", ["version"], registry=r)
        for scope in ("key", "address", "project"):
            self.breaker_opens.labels(scope)  # exported as 0 before the first opening
        for scope in ("key", "address"):
            self.storm_rejections.labels(scope)
        for gap in ("true", "false"):
            self.resumes.labels(gap)
        for kind in ("create", "attach"):
            self.connections_opened.labels(kind)
        for reason in ("exit", "reap", "kill"):
            self.sessions_ended.labels(reason)
        for code in CloseCode:  # known codes exported as 0: rate() sees the first one
            self.connections_closed.labels(str(int(code)))
            if code >= CloseCode.GOING_AWAY and code not in _NEVER_REFUSED:
                self.refusals.labels(str(int(code)))

        # The labelled counters bumped per connection, their children cached.
        self.opened_by_kind = LabelCache(self.connections_opened)
        self.closed_by_code = LabelCache(self.connections_closed)
        self.refused_by_code = LabelCache(self.refusals)
        self.resumes_by_gap = LabelCache(self.resumes)

    def render(self) -> bytes:
        return generate_latest(self.registry)
