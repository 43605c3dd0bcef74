"""The operator API and the stats of docs/protocol.md, section 9 through the ASGI front (the
worked example under a real uvicorn): the same JSON as `tether serve` gives for the same state,
operator-only where it is, and the JSON 404 for unknown keys."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.asgi.uvicorn import UvicornApp, example_app
from tests.support.auth import bearer
from tests.support.server import InProcessServer, eventually, inprocess_server
from tether.client import connect
from tether.tools.check_probe import Probe

pytestmark = pytest.mark.timeout(90)

# Every GET route compared between the fronts; {key} is the session each front holds.
READS = (
    "/api/sessions",
    "/api/sessions/{key}",
    "/api/me/sessions",
    "/api/projects",
    "/stats/sessions",
    "/stats/circuit-breaker",
)
UNKNOWN = "session_nobody-here:default"


@pytest.fixture
def running(tmp_path: Path) -> Iterator[UvicornApp]:
    with example_app(record_dir=str(tmp_path / "asgi-casts")) as app:
        yield app


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[InProcessServer]:
    async with inprocess_server(record_dir=str(tmp_path / "aiohttp-casts")) as server:
        yield server


async def open_session(ws_url: str, token: str | None = None) -> str:
    """A session that printed ``recorded`` and was left detached; its key."""
    term = await connect(ws_url, project="default", token=token)
    probe = Probe(term)
    await probe.shell_pid()
    await term.send("echo rec''orded\r")
    await probe.wait_for(re.compile(rb"recorded"))
    key = str(term.key)
    await term.detach()
    await probe.drain()
    return key


async def fetch(
    http: aiohttp.ClientSession, method: str, url: str, **options: Any
) -> tuple[int, str, bytes]:
    async with http.request(method, url, **options) as response:
        return response.status, response.content_type, await response.read()


async def get_json(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    status, kind, body = await fetch(http, "GET", url)
    assert kind == "application/json", (url, kind)
    return status, json.loads(body)


def assert_same_shape(ours: Any, theirs: Any, where: str) -> None:
    """The same keys at every level and the same kinds of values (a list's first items are
    compared when both have one; None stands for any value: a time not set yet)."""
    if ours is None or theirs is None:
        return
    if isinstance(ours, dict):
        assert isinstance(theirs, dict), where
        assert sorted(ours) == sorted(theirs), where
        for name in ours:
            assert_same_shape(ours[name], theirs[name], f"{where}.{name}")
    elif isinstance(ours, list):
        assert isinstance(theirs, list), where
        if ours and theirs:
            assert_same_shape(ours[0], theirs[0], f"{where}[0]")
    else:
        kinds = [
            "number" if isinstance(v, int | float) and not isinstance(v, bool) else type(v)
            for v in (ours, theirs)
        ]
        assert kinds[0] == kinds[1], where


async def test_the_same_json_as_tether_serve_for_the_same_state(
    running: UvicornApp, served: InProcessServer
) -> None:
    alice = await asyncio.to_thread(running.login)  # an operator
    asgi_key = await open_session(f"{running.term_url}/ws/terminal", alice)
    aiohttp_key = await open_session(served.ws_url)
    fronts = {"asgi": (running.term_url, asgi_key), "aiohttp": (served.base_url, aiohttp_key)}
    async with aiohttp.ClientSession(headers=bearer(alice)) as http:
        answers: dict[str, dict[str, Any]] = {name: {} for name in fronts}
        for name, (base, key) in fronts.items():
            for route in READS:
                status, body = await get_json(http, base + route.format(key=key))
                answers[name][route] = body
                assert status == 200, (name, route, body)
            for method, route in [("GET", "/api/sessions/{key}"), ("DELETE", "/api/sessions/{key}"),
                                  ("GET", "/api/sessions/{key}/recording")]:  # fmt: skip
                status, kind, body = await fetch(http, method, base + route.format(key=UNKNOWN))
                assert (status, kind) == (404, "application/json"), (name, method, route)
                assert json.loads(body)["error"]["code"] == "not_found"
        for route in READS:
            assert_same_shape(answers["asgi"][route], answers["aiohttp"][route], route)
        listed = answers["asgi"]["/api/sessions"]["sessions"]
        assert [entry["key"] for entry in listed] == [asgi_key]
        assert answers["asgi"]["/api/sessions/{key}"]["owner"] == "alice"
        assert answers["asgi"]["/stats/sessions"]["totals"]["sessions"] == 1

        # The recording, merged into one asciicast v2 stream by both fronts.
        for name, (base, key) in fronts.items():
            url = f"{base}/api/sessions/{key}/recording"

            async def recorded(url: str = url) -> bytes | None:
                status, kind, body = await fetch(http, "GET", url)
                if status == 404:  # not on disk yet: the recorder writes every 0.25 s
                    return None
                assert (status, kind) == (200, "application/x-asciicast")
                return body if b"recorded" in body else None

            cast = await eventually(recorded, 10, f"{name}: the output was never recorded")
            assert json.loads(cast.splitlines()[0])["version"] == 2

        # Clearing a project, then draining: the same answers.
        drained: dict[str, tuple[int, Any]] = {}
        for name, (base, key) in fronts.items():
            status, kind, body = await fetch(
                http, "POST", f"{base}/api/sessions/clear", json={"project": "default"}
            )
            assert (status, json.loads(body)) == (200, {"cleared": [key], "count": 1}), name
            status, kind, body = await fetch(http, "POST", f"{base}/api/sessions/clear?project=x")
            assert (status, json.loads(body)["error"]["code"]) == (404, "not_found"), name
            status, kind, body = await fetch(http, "POST", f"{base}/api/drain")
            drained[name] = (status, json.loads(body))
            status, _ = await get_json(http, f"{base}/readyz")
            assert status == 503, name
        assert drained["asgi"][0] == drained["aiohttp"][0] == 202
        assert_same_shape(drained["asgi"][1], drained["aiohttp"][1], "/api/drain")


async def test_operator_routes_refuse_others_and_stats_show_their_own(
    running: UvicornApp,
) -> None:
    alice = await asyncio.to_thread(running.login)
    bob = await asyncio.to_thread(running.login, "bob", "builder")  # not an operator
    ws_url = f"{running.term_url}/ws/terminal"
    alice_key, bob_key = await open_session(ws_url, alice), await open_session(ws_url, bob)
    api = running.term_url
    operator_only = [
        ("GET", "/api/sessions"),
        ("GET", f"/api/sessions/{alice_key}"),
        ("GET", f"/api/sessions/{alice_key}/recording"),
        ("DELETE", f"/api/sessions/{alice_key}"),
        ("POST", "/api/sessions/clear"),
        ("POST", "/api/drain"),
    ]
    async with (
        aiohttp.ClientSession() as nobody,
        aiohttp.ClientSession(headers=bearer(bob)) as as_bob,
        aiohttp.ClientSession(headers=bearer(alice)) as as_alice,
    ):
        for method, route in operator_only:
            for http, status, code in [(nobody, 401, "unauthorized"), (as_bob, 403, "forbidden")]:
                answer = await fetch(http, method, api + route)
                assert answer[:2] == (status, "application/json"), (method, route, answer)
                assert json.loads(answer[2])["error"]["code"] == code
        for route in ("/stats/sessions", "/stats/circuit-breaker"):
            status, _ = await get_json(nobody, api + route)
            assert status == 401
        # Nothing was ended or drained by the refused requests.
        status, stats = await get_json(as_alice, f"{api}/stats/sessions")
        assert status == 200
        assert sorted(s["key"] for s in stats["sessions"]) == sorted([alice_key, bob_key])
        assert (await get_json(as_alice, f"{api}/readyz"))[0] == 200
        status, stats = await get_json(as_bob, f"{api}/stats/sessions")
        assert [s["key"] for s in stats["sessions"]] == [bob_key]  # only bob's own
        status, breakers = await get_json(as_bob, f"{api}/stats/circuit-breaker")
        assert status == 200 and breakers["address"] == []  # addresses: operators only
        status, killed = await get_json(as_alice, f"{api}/api/sessions/{bob_key}")
        assert (status, killed["owner"]) == (200, "bob")
        answer = await fetch(as_alice, "DELETE", f"{api}/api/sessions/{bob_key}")
        assert (answer[0], json.loads(answer[2])) == (200, {"killed": bob_key})
        status, listed = await get_json(as_alice, f"{api}/api/sessions")
        assert [s["key"] for s in listed["sessions"]] == [alice_key]
        for method, route in [("POST", "/api/restart"), ("GET", "/stats/cluster")]:
            assert (await fetch(as_alice, method, api + route))[0] == 404  # `tether serve` only
