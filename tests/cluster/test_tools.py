"""``tether check``, ``tether load`` and ``tether stress`` spread over the nodes of a cluster
(a repeated ``--url``): sessions made through one node are resumed through others, exactly."""

from __future__ import annotations

import json
from collections.abc import Iterator

import aiohttp
import pytest

from tests.cluster.conftest import Cluster, running_cluster
from tests.cluster.test_cluster import connect
from tether.cli import main
from tether.tools.load import LoadOptions, run_load

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def tools_cluster() -> Iterator[Cluster]:
    with running_cluster(3, "--storm-threshold", "1000") as running:
        yield running


async def test_load_reconnects_land_on_random_nodes_and_stay_exact(tools_cluster: Cluster) -> None:
    urls = [tools_cluster.base_url(index) for index in range(3)]
    options = LoadOptions(
        url=urls[0],
        also=tuple(urls[1:]),
        connections=6,
        duration=4,
        ramp_up=0,
        reconnect_every=0.5,
        think=(0.0, 0.1),
        seed=3,
    )
    report = await run_load(options)
    assert report.error is None, report.error
    assert report.figures["users_exact"] == 6, report.errors
    assert report.figures["reconnect_attempts"] > 0


def test_check_through_every_node(
    tools_cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["check", "--scenario", "connect,session-reuse,legacy-migration", "--json"]
    for index in range(3):
        argv += ["--url", tools_cluster.base_url(index)]
    status = main(argv)
    out = capsys.readouterr().out
    assert status == 0, out


def test_stress_spread_over_the_nodes(
    tools_cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["stress", "--iterations", "40", "--concurrency", "6", "--seed", "5"]
    for index in range(3):
        argv += ["--url", tools_cluster.base_url(index)]
    status = main(argv)
    captured = capsys.readouterr()
    assert status == 0, captured.out[-3000:] + captured.err[-2000:]


async def test_operator_cli_shows_and_acts_on_the_whole_cluster(
    tools_cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    async with aiohttp.ClientSession() as http:
        opened = [await connect(http, tools_cluster.ws_url(index)) for index in range(3)]
        keys = {hello["key"] for _, hello in opened}
        assert main(["sessions", "list", "--json", "--url", tools_cluster.base_url(1)]) == 0
        listed = json.loads(capsys.readouterr().out)
        mine = {entry["key"]: entry["node"] for entry in listed if entry["key"] in keys}
        assert sorted(mine.values()) == ["node0", "node1", "node2"]
        assert main(["stats", "--url", tools_cluster.base_url(2)]) == 0
        shown = capsys.readouterr().out
        assert "cluster nodes" in shown and "node0" in shown and "node2 *" in shown
        assert main(["sessions", "list", "--url", tools_cluster.base_url(0)]) == 0
        assert "node" in capsys.readouterr().out
        key = opened[2][1]["key"]
        assert main(["sessions", "kill", key, "--url", tools_cluster.base_url(0)]) == 0
        capsys.readouterr()
        ws = opened[2][0]
        message = await ws.receive(timeout=10)
        while message.type is not aiohttp.WSMsgType.CLOSE:
            message = await ws.receive(timeout=10)
        assert message.data == 4013
        argv = ["sessions", "clear", "--yes", "--url", tools_cluster.base_url(1)]
        assert main(argv) == 0
        capsys.readouterr()
        for ws, _ in opened[:2]:
            message = await ws.receive(timeout=10)
            while message.type is not aiohttp.WSMsgType.CLOSE:
                message = await ws.receive(timeout=10)
            assert message.data == 4013
