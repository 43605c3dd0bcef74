"""Three tether nodes on loopback sharing one real redis-server, for the cluster tests.

The leases are short (``LEASE`` seconds, renewed every ``RENEW_EVERY``), so that a node that is
killed or paused is declared lost within a test's patience. The test process is a child
subreaper: the shells of a node killed with SIGKILL become its children, and are reaped here.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass

import psutil
import pytest

from tests.support.redis import RedisServer, redis_server
from tests.support.server import ServerProcess, poll_until
from tether.server import pty

LEASE = 2.0
RENEW_EVERY = 0.5
CLUSTER_ENV = {
    "TETHER_CLUSTER_LEASE": str(LEASE),
    "TETHER_CLUSTER_RENEW_EVERY": str(RENEW_EVERY),
    "TETHER_CLUSTER_TIMEOUT": "0.5",
    "TETHER_CLUSTER_RECORD_INTERVAL": "0.5",
    "TETHER_CLUSTER_SWEEP_AFTER": "30",
}


@dataclass
class Cluster:
    redis: RedisServer
    nodes: list[ServerProcess]

    def ws_url(self, index: int) -> str:
        return self.nodes[index].ws_url

    def base_url(self, index: int) -> str:
        return self.nodes[index].base_url

    def shells(self) -> list[int]:
        """Every shell the nodes run (their direct children)."""
        found = []
        for node in self.nodes:
            if node.process is None:
                continue
            with contextlib.suppress(psutil.NoSuchProcess):
                found += [child.pid for child in psutil.Process(node.pid).children()]
        return found

    def kill(self, index: int) -> list[int]:
        """SIGKILL a whole node; returns its shells' pids (orphans, now ours to reap)."""
        node = self.nodes[index]
        shells = [child.pid for child in psutil.Process(node.pid).children()]
        os.kill(node.pid, signal.SIGKILL)
        assert node.process is not None
        node.process.wait(10)
        node.stop()
        return shells


def start_node(
    redis_url: str, name: str, *extra: str, env: dict[str, str] | None = None
) -> ServerProcess:
    args = ("--redis-url", redis_url, "--node-id", name, "--idle-timeout", "60", *extra)
    return ServerProcess(args=args, env={**CLUSTER_ENV, **(env or {})}).start()


@contextlib.contextmanager
def running_cluster(
    size: int = 3, *extra: str, env: dict[str, str] | None = None
) -> Iterator[Cluster]:
    pty.become_subreaper()
    with redis_server() as redis:
        nodes: list[ServerProcess] = []
        try:
            for index in range(size):
                nodes.append(start_node(redis.url, f"node{index}", *extra, env=env))
            yield Cluster(redis, nodes)
        finally:
            for node in nodes:
                node.cleanup()


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    with running_cluster() as running:
        yield running


def reap(pids: list[int], timeout: float = 10.0) -> None:
    """Wait for orphaned shells (ours as subreaper) to exit, and reap them."""
    left = set(pids)

    def all_reaped() -> bool:
        for pid in list(left):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid if not psutil.pid_exists(pid) else 0
            if done:
                left.discard(pid)
        return not left

    poll_until(all_reaped, timeout, lambda: f"shells left running: {sorted(left)}")
