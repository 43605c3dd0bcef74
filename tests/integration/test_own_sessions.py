"""``/api/me/sessions``: any signed-in caller lists, renames and ends its OWN sessions (the page's
session list). Another owner's session answers exactly as an unknown key does (404), so that its
existence is not revealed; the display name lives in the session record and survives an upgrade
in place and a crash of the worker."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.cluster.conftest import running_cluster
from tests.integration.test_security import token_server
from tests.support.auth import ALICE, BOB, bearer
from tests.support.server import (
    InProcessServer,
    ServerProcess,
    eventually,
    server_stats,
    wait_generation,
)
from tests.support.wsclient import must_connect
from tether.server.store.record import SessionRecord

pytestmark = pytest.mark.timeout(60)


async def http(
    base_url: str, method: str, path: str, token: str | None = None, body: Any = None
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, base_url + path, headers=headers, json=body) as response,
    ):
        return response.status, json.loads(await response.text())


async def test_an_owner_lists_renames_and_ends_only_its_own_sessions(tmp_path: Path) -> None:
    async with token_server(tmp_path) as srv:
        url = srv.base_url
        web = await must_connect(srv.ws_url, headers=bearer(ALICE), project="web", cols=90, rows=30)
        second = await must_connect(srv.ws_url, headers=bearer(ALICE), project="web")
        bobs = await must_connect(srv.ws_url, headers=bearer(BOB), project="web")
        mine, bob_key = web.hello["key"], bobs.hello["key"]

        status, body = await http(url, "GET", "/api/me/sessions", ALICE)
        assert status == 200
        listed = body["sessions"]
        assert [s["key"] for s in listed] == [mine, second.hello["key"]], "oldest first, hers only"
        first = listed[0]
        assert (first["project"], first["state"], first["clients"]) == ("web", "attached", 1)
        assert (first["cols"], first["name"], first["owner"]) == (90, "", "alice")
        assert first["created_at"].endswith("Z")
        status, body = await http(url, "GET", "/api/me/sessions", BOB)
        assert [s["key"] for s in body["sessions"]] == [bob_key]
        status, body = await http(url, "GET", "/api/me/sessions")
        assert status == 401 and body["error"]["code"] == "unauthorized"

        status, body = await http(url, "PATCH", f"/api/me/sessions/{mine}", ALICE, {"name": "db ✓"})
        assert status == 200 and body["name"] == "db ✓"
        status, body = await http(url, "GET", "/api/me/sessions", ALICE)
        assert body["sessions"][0]["name"] == "db ✓"
        record = await eventually(lambda: _stored(srv, mine, "db ✓"), what="name not mirrored")
        assert record.name == "db ✓"

        # Someone else's session: the same 404 as a key that does not exist.
        unknown = "session_1754900000000_aaaaaaaaaaaaaaaaaaaa:web"
        for key in (mine, unknown):
            for method, payload in (("PATCH", {"name": "mine now"}), ("DELETE", None)):
                status, body = await http(url, method, f"/api/me/sessions/{key}", BOB, payload)
                assert status == 404 and body["error"] == {
                    "code": "not_found",
                    "message": f"no session {key}",
                }
        status, body = await http(url, "GET", "/api/me/sessions", ALICE)
        assert body["sessions"][0]["name"] == "db ✓", "bob's rename changed nothing"

        # Bob ends his own; alice ends hers: the clients are told why.
        status, body = await http(url, "DELETE", f"/api/me/sessions/{bob_key}", BOB)
        assert status == 200 and body == {"ended": bob_key}
        assert await bobs.wait_closed() == 4013
        assert bobs.close_reason == "session ended by its owner"
        status, body = await http(url, "DELETE", f"/api/me/sessions/{mine}", ALICE)
        assert status == 200 and await web.wait_closed() == 4013
        status, body = await http(url, "GET", "/api/me/sessions", ALICE)
        assert [s["key"] for s in body["sessions"]] == [second.hello["key"]]
        for conn in (web, second, bobs):
            await conn.close()


def _stored(srv: InProcessServer, key: str, name: str) -> Any:
    async def check() -> SessionRecord | None:
        record = await srv.server.manager.store.get_record(key)
        return record if record is not None and record.name == name else None

    return check()


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ({"name": "x" * 65}, "at most 64 characters"),
        ({"name": "bell\x07"}, "printable"),
        ({"name": 7}, "must be a string"),
        ({"title": "x"}, "body must be"),
        ([1], "body must be"),
    ],
)
async def test_a_bad_name_is_refused_with_a_reason(
    tmp_path: Path, payload: Any, problem: str
) -> None:
    async with token_server(tmp_path) as srv:
        conn = await must_connect(srv.ws_url, headers=bearer(ALICE), project="web")
        path = f"/api/me/sessions/{conn.hello['key']}"
        status, body = await http(srv.base_url, "PATCH", path, ALICE, payload)
        assert status == 400 and problem in body["error"]["message"]
        status, body = await http(srv.base_url, "PATCH", path, ALICE, {"name": "x" * 64})
        assert status == 200, "64 characters are fine"
        await conn.close()


def test_a_record_written_before_display_names_still_loads() -> None:
    data = {
        "version": 1,
        "key": "session_1754900000000_k3j9x0a1b2c3d4e5f6g7:web",
        "session_id": "session_1754900000000_k3j9x0a1b2c3d4e5f6g7",
        "project": "web",
        "owner": "alice",
        "pid": 42,
        "cols": 80,
        "rows": 24,
        "created_at": 1754900000.0,
        "last_activity": 1754900000.0,
        "state": "detached",
        "input_counts": {},
        "end_code": None,
        "end_reason": "",
    }
    assert SessionRecord.from_dict(data).name == ""


async def test_the_name_survives_an_upgrade_in_place_and_a_crash() -> None:
    with ServerProcess(supervise=True).start() as srv:
        conn = await must_connect(srv.ws_url, project="default")
        key = conn.hello["key"]
        status, _ = await http(
            srv.base_url, "PATCH", f"/api/me/sessions/{key}", body={"name": "kept"}
        )
        assert status == 200
        status, _ = await http(srv.base_url, "POST", "/api/restart")
        assert status == 202
        await wait_generation(srv.base_url, 2)
        assert await _names(srv) == {key: "kept"}
        worker = (await asyncio.to_thread(server_stats, srv.base_url))["server"]["pid"]
        os.kill(worker, signal.SIGKILL)
        await wait_generation(srv.base_url, 3)
        assert await _names(srv) == {key: "kept"}
        await conn.close()


async def _names(srv: ServerProcess) -> dict[str, str]:
    _, body = await http(srv.base_url, "GET", "/api/me/sessions")
    return {s["key"]: s["name"] for s in body["sessions"]}


async def test_across_a_cluster_any_node_lists_renames_and_ends_ones_own(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(
        f'[[tokens]]\nowner = "alice"\ntoken = "{ALICE}"\nprojects = "*"\n\n'
        f'[[tokens]]\nowner = "bob"\ntoken = "{BOB}"\nprojects = "*"\n',
        encoding="utf-8",
    )
    args = ("--auth", "token", "--tokens-file", str(tokens), "--cluster-secret-env", "SECRET")
    secret = {"SECRET": "cluster-secret-for-own-sessions-0123"}
    with running_cluster(2, *args, env=secret) as nodes:  # a real redis-server, two nodes
        conn = await must_connect(nodes.ws_url(0), headers=bearer(ALICE), project="default")
        key, elsewhere = conn.hello["key"], nodes.base_url(1)
        path = f"/api/me/sessions/{key}"
        status, body = await http(elsewhere, "PATCH", path, ALICE, {"name": "on node0"})
        assert status == 200 and body["name"] == "on node0", body
        for token, expected in ((ALICE, [(key, "on node0", "node0")]), (BOB, [])):
            listed = await eventually(
                lambda token=token, expected=expected: _listed(elsewhere, token, expected),
                what="the name is not seen from the other node",
            )
            assert listed
        for method, payload in (("PATCH", {"name": "bob's"}), ("DELETE", None)):
            status, body = await http(elsewhere, method, path, BOB, payload)
            assert status == 404 and body["error"]["code"] == "not_found"
        status, body = await http(elsewhere, "DELETE", path, ALICE)
        assert status == 200 and body == {"ended": key}
        assert await conn.wait_closed() == 4013
        assert conn.close_reason == "session ended by its owner"
        await conn.close()


async def _listed(base_url: str, token: str, expected: list[tuple[str, str, str]]) -> bool:
    _, body = await http(base_url, "GET", "/api/me/sessions", token)
    return [(s["key"], s.get("name"), s["node"]) for s in body["sessions"]] == expected
