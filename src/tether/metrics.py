"""Prometheus metrics of one server (its own registry, so several servers can share a process)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class _SessionCollector(Collector):
    """Sessions by state, read from the manager at scrape time."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Any:
        facts = self._snapshot()
        by_state = GaugeMetricFamily("tether_sessions", "Live sessions by state", labels=["state"])
        for state, count in facts["states"].items():
            by_state.add_metric([state], count)
        yield by_state
        yield GaugeMetricFamily("tether_clients", "Attached clients", value=facts["clients"])
        yield GaugeMetricFamily(
            "tether_buffered_bytes",
            "Output bytes held in ring buffers",
            value=facts["buffered_bytes"],
        )
        yield GaugeMetricFamily(
            "tether_tombstones", "Tombstones of ended sessions", value=facts.get("tombstones", 0)
        )
        breakers = GaugeMetricFamily(
            "tether_breakers_open", "Open server-side breakers", labels=["scope"]
        )
        for scope, count in facts["breakers_open"].items():
            breakers.add_metric([scope], count)
        yield breakers
        yield GaugeMetricFamily(
            "tether_ready", "1 while accepting new sessions", value=1 if facts["ready"] else 0
        )


class Metrics:
    """Every metric tether exports; names follow Prometheus conventions."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        ProcessCollector(registry=r)
        r.register(_SessionCollector(snapshot))
        self.connections_opened = Counter(
            "tether_connections_opened_total",
            "WebSocket connections admitted",
            ["kind"],
            registry=r,
        )
        self.connections_closed = Counter(
            "tether_connections_closed_total",
            "WebSocket connections closed, by close code",
            ["code"],
            registry=r,
        )
        self.connection_attempts = Counter(
            "tether_connection_attempts_total", "WebSocket connection attempts", registry=r
        )
        self.refusals = Counter(
            "tether_connections_refused_total",
            "Connection attempts refused, by close code",
            ["code"],
            registry=r,
        )
        self.reconnects = Counter(
            "tether_reconnects_total", "Attaches to an existing session", registry=r
        )
        self.resumes = Counter(
            "tether_resumes_total", "Resumes by offset, with or without gap", ["gap"], registry=r
        )
        self.sessions_created = Counter(
            "tether_sessions_created_total", "Sessions created", registry=r
        )
        self.sessions_ended = Counter(
            "tether_sessions_ended_total", "Sessions ended, by reason", ["reason"], registry=r
        )
        self.storm_rejections = Counter(
            "tether_storm_rejections_total", "Attempts refused with 4129", ["scope"], registry=r
        )
        self.breaker_opens = Counter(
            "tether_breaker_opens_total", "Server-side breakers opened", ["scope"], registry=r
        )
        self.idle_reaps = Counter(
            "tether_idle_reaps_total", "Sessions reaped after idle timeout", registry=r
        )
        self.input_bytes = Counter(
            "tether_input_bytes_total", "Input bytes written to terminals", registry=r
        )
        self.output_bytes = Counter(
            "tether_output_bytes_total", "Output bytes sent to clients", registry=r
        )
        self.connect_latency = Histogram(
            "tether_connect_seconds",
            "New session: upgrade to hello sent",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.reattach_latency = Histogram(
            "tether_reattach_seconds",
            "Re-attach: upgrade to hello sent",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.spawn_failures = Counter(
            "tether_spawn_failures_total", "Shells that failed to start", registry=r
        )
        self.info = Gauge("tether_build_info", "Build information", ["version"], registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
