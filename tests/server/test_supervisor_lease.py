"""The supervisor keeps a cluster node's lease while no worker is ready (issue 14): the
decision (pure), the report a worker sends over the notify socket, and one renewal against a
real redis-server with the registry's own ``RENEW`` script."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
import redis

from tests.support.redis import RedisServer, redis_server
from tether.server import fdstore
from tether.server.supervisor import (
    SUPERVISED_ENV,
    LeaseKeeper,
    ReportedLease,
    renewal_due,
    report_lease,
)

LEASE = ReportedLease(
    node="node-a",
    epoch=7,
    redis_url="redis://127.0.0.1:1/0",
    prefix="t:",
    lease_ms=2000,
    renew_every=0.5,
    timeout=0.5,
)


def test_renews_only_while_no_ready_worker_and_at_most_once_per_interval() -> None:
    def due(now: float, *, ready: bool = False, stopping: bool = False) -> bool:
        return renewal_due(LEASE, 10.0, now, worker_ready=ready, stopping=stopping)

    assert not renewal_due(None, 0.0, 100.0, worker_ready=False, stopping=False)
    assert not due(10.4)  # within renew_every of the last renewal or report
    assert due(10.5) and due(30.0)
    assert not due(30.0, ready=True)  # a ready worker renews it itself
    assert not due(30.0, stopping=True)  # stopping: the worker deregisters


def test_a_report_round_trips_and_garbage_is_ignored() -> None:
    line = LEASE.line()
    name, _, value = line.partition("=")
    assert name == fdstore.LEASE_VARIABLE
    assert ReportedLease.parse(value) == LEASE
    for garbled in ("", "{", "[]", '{"node": "x"}', value.replace('"epoch":7', '"epoch":"x"')):
        assert ReportedLease.parse(garbled) is None


def test_the_worker_reports_to_the_supervisor_only() -> None:
    name = "tether-test-lease-report"
    with fdstore.server_socket(name) as sock:
        environ = {"NOTIFY_SOCKET": "@" + name}
        assert not report_lease(LEASE, environ)  # systemd: not sent
        assert report_lease(LEASE, environ | {SUPERVISED_ENV: "1"})
        store = fdstore.FdStore()
        store.receive(sock)
        assert [ReportedLease.parse(v) for v in store.lease_reports] == [LEASE]
        assert not store.ready and store.entries == []


def test_the_supervisor_imports_no_redis_until_a_lease_is_reported() -> None:
    code = (
        "import sys, time; from tether.server.supervisor import LeaseKeeper, fdstore;"
        "k = LeaseKeeper(); s = fdstore.FdStore(); s.handle('READY=1', []);"
        "k.due(time.monotonic(), worker_ready=False, stopping=False);"
        "sys.exit('redis' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with redis_server() as running:
        yield running


def _registered(server: RedisServer, epoch: int) -> tuple[redis.Redis, ReportedLease]:
    client = redis.Redis.from_url(server.url, decode_responses=True)
    client.flushdb()  # the test's own redis-server
    client.hset("t:node:node-a", mapping={"epoch": epoch, "url": "http://x"})
    client.pexpire("t:node:node-a", 300)
    lease = ReportedLease(
        node="node-a",
        epoch=7,
        redis_url=server.url,
        prefix="t:",
        lease_ms=5000,
        renew_every=0.5,
        timeout=0.5,
    )
    return client, lease


def test_a_renewal_extends_the_lease(server: RedisServer) -> None:
    client, lease = _registered(server, 7)
    keeper = LeaseKeeper()
    try:
        keeper.report(lease.line().partition("=")[2], 0.0)
        keeper.renew(1.0)
        assert client.pttl("t:node:node-a") > 1000
        assert client.sismember("t:nodes", "node-a")
        assert keeper.lease == lease and keeper.renewals == 1
        assert not keeper.due(1.2, worker_ready=False, stopping=False)
    finally:
        keeper.close()
        client.close()


@pytest.mark.parametrize("epoch", [None, 8])  # lost (expired) / replaced (registered again)
def test_a_lost_or_replaced_lease_is_given_up(server: RedisServer, epoch: int | None) -> None:
    client, lease = _registered(server, epoch or 7)
    if epoch is None:
        client.delete("t:node:node-a")
    keeper = LeaseKeeper()
    try:
        keeper.report(lease.line().partition("=")[2], 0.0)
        keeper.renew(1.0)
        assert keeper.lease is None and keeper.renewals == 0
        assert not keeper.due(10.0, worker_ready=False, stopping=False)
        if epoch is not None:
            assert client.hget("t:node:node-a", "epoch") == str(epoch)
            assert client.pttl("t:node:node-a") <= 300
    finally:
        keeper.close()
        client.close()


def test_an_unreachable_redis_is_tried_again() -> None:
    unreachable = ReportedLease(**{**LEASE.__dict__, "redis_url": "redis://127.0.0.1:1/0"})
    keeper = LeaseKeeper()
    try:
        keeper.report(unreachable.line().partition("=")[2], 0.0)
        keeper.renew(1.0)
        assert keeper.lease == unreachable  # kept: tried again after renew_every
        assert keeper.due(1.5, worker_ready=False, stopping=False)
    finally:
        keeper.close()
