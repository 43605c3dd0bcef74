"""A cluster with auth on: credentials cross the hop, owners stay apart, the operator API works
from any node, and only a node holding the cluster secret may name a client's address."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.cluster.conftest import Cluster, running_cluster
from tests.cluster.test_cluster import connect, refused
from tests.support.auth import bearer
from tether.protocol.messages import SUBPROTOCOL

pytestmark = pytest.mark.timeout(60)

ALICE, BOB, OPS = "alice-cluster-token-0001", "bob-cluster-token-00002", "ops-cluster-token-00003"
TOKENS = f"""
[[tokens]]
owner = "alice"
token = "{ALICE}"
projects = "*"

[[tokens]]
owner = "bob"
token = "{BOB}"
projects = "*"

[[tokens]]
owner = "ops"
token = "{OPS}"
projects = "*"
operator = true
"""
SECRET = "cluster-secret-for-the-tests-0123456789"


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tokens = tmp_path_factory.mktemp("tokens") / "tokens.toml"
    tokens.write_text(TOKENS, encoding="utf-8")
    args: tuple[str, ...] = ("--auth", "token", "--tokens-file", str(tokens))
    args += ("--cluster-secret-env", "TETHER_TEST_SECRET")
    with running_cluster(2, *args, env={"TETHER_TEST_SECRET": SECRET}) as cluster:
        yield cluster


async def test_owners_and_credentials_across_nodes(secured: Cluster) -> None:
    async with (
        aiohttp.ClientSession() as alice,
        aiohttp.ClientSession(headers=bearer(BOB)) as bob,
        aiohttp.ClientSession(headers=bearer(OPS)) as ops,
    ):
        ws, hello = await connect(alice, secured.ws_url(0), token=ALICE, client="client-alice-01")
        again_ws, again = await connect(
            alice, secured.ws_url(1), token=ALICE, session=hello["session"], create=0
        )
        assert again["key"] == hello["key"] and again["created"] is False
        await again_ws.close()
        code, _ = await refused(bob, secured.ws_url(1), session=hello["session"], create=0)
        assert code == 4003
        code, _ = await refused(alice, secured.ws_url(1), session=hello["session"], create=0)
        assert code == 4001  # no credential

        async with ops.get(f"{secured.base_url(1)}/api/sessions") as answer:
            listed = (await answer.json())["sessions"]
        assert [(s["key"], s["node"], s["owner"]) for s in listed] == [
            (hello["key"], "node0", "alice")
        ]
        async with bob.get(f"{secured.base_url(1)}/api/sessions") as answer:
            assert answer.status == 403
        async with ops.get(f"{secured.base_url(1)}/stats/cluster") as answer:
            view = await answer.json()
        assert [(n["node"], n["state"], n["sessions"]) for n in view["nodes"]] == [
            ("node0", "up", 1),
            ("node1", "up", 0),
        ]
        async with ops.delete(f"{secured.base_url(1)}/api/sessions/{hello['key']}") as answer:
            assert answer.status == 200, await answer.text()
        message = await ws.receive(timeout=10)
        while message.type is not aiohttp.WSMsgType.CLOSE:
            message = await ws.receive(timeout=10)
        assert message.data == 4013


async def test_only_a_peer_with_the_secret_names_the_client(secured: Cluster) -> None:
    spoofed = {"X-Tether-Relay": "not-the-secret", "X-Tether-Client": "203.0.113.9"}
    async with aiohttp.ClientSession(headers={**bearer(ALICE), **spoofed}) as http:
        ws = await http.ws_connect(
            secured.ws_url(0), params={"project": "default"}, protocols=(SUBPROTOCOL,)
        )
        hello = json.loads((await ws.receive(timeout=10)).data)
        await ws.close()
    log = Path(secured.nodes[0].log_file).read_text(encoding="utf-8").splitlines()
    connects = [json.loads(line) for line in log if '"event":"connect"' in line]
    mine = [entry for entry in connects if entry["key"] == hello["key"]]
    assert mine and all(entry["addr"] == "127.0.0.1" for entry in mine)
