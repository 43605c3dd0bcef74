"""tether's ASGI front in the worked example (examples/fastapi_app.py) under a real uvicorn:
the same protocol as `tether serve` — byte-exact resume, exactly-once input, close codes."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import urllib.error
import urllib.request
from collections.abc import Iterator

import aiohttp
import pytest

from tests.asgi.uvicorn import UvicornApp, example_app
from tests.support.exactness import assert_replay_matches, assert_typed_exactly_once
from tests.support.server import eventually
from tether.client import Terminal, connect
from tether.tools.check_probe import Probe
from tether.tools.proxy import TcpProxy

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def running() -> Iterator[UvicornApp]:
    with example_app() as app:
        yield app


async def until_connected_through(proxy: TcpProxy, term: Terminal, accepted: int) -> None:
    await eventually(
        lambda: proxy.statistics().accepted > accepted and term.is_connected, 20, "no resume"
    )


async def test_resumes_byte_exact_with_exactly_once_input_through_cuts(running: UvicornApp) -> None:
    token = await asyncio.to_thread(running.login)
    async with TcpProxy("127.0.0.1", running.port) as proxy:
        url = proxy.url(path="/term/ws/terminal")
        term = await connect(url, project="default", token=token, time_scale=0.001)
        probe = Probe(term)
        await probe.shell_pid()
        await term.send("stty -echo; echo cat-rea''dy; cat > typed.txt\r")
        await probe.wait_for(re.compile(rb"cat-ready"))
        typed = bytearray()
        for index in range(120):
            line = f"line-{index:04d}-{'z' * (index % 40)}\n".encode()
            typed += line
            await term.send(line)
            if index % 40 == 7:  # the connection dies with input in flight
                accepted = proxy.statistics().accepted
                proxy.abort_all()
            if index % 40 == 10:  # ... and a few lines were typed while it was away
                await until_connected_through(proxy, term, accepted)
        await assert_typed_exactly_once(term, probe, typed)
        assert proxy.statistics().aborted >= 3
        session = str(term.session_id)
        await term.detach()
        await probe.drain()
    # A fresh connection replays from 0: what the cut connections delivered was exact.
    replay = await connect(
        f"{running.term_url}/ws/terminal",
        project="default",
        session=session,
        offset=0,
        create=False,
        token=token,
    )
    await assert_replay_matches(replay, probe)


async def test_without_login_the_socket_closes_4001_and_http_answers_401(
    running: UvicornApp,
) -> None:
    async with aiohttp.ClientSession() as http:
        url = f"{running.term_url}/ws/terminal?project=default"
        async with http.ws_connect(url, protocols=("tether.v1",)) as ws:
            message = await ws.receive(timeout=10)
            assert message.type is aiohttp.WSMsgType.CLOSE
            assert ws.close_code == 4001
        headers = {"Authorization": "Bearer bob.forged"}
        async with http.ws_connect(url, protocols=("tether.v1",), headers=headers) as ws:
            await ws.receive(timeout=10)
            assert ws.close_code == 4001
        async with http.get(f"{running.term_url}/api/projects") as response:
            assert response.status == 401
            assert (await response.json())["error"]["code"] == "unauthorized"


async def test_the_hook_decides_projects_and_a_bad_parameter_is_4000(running: UvicornApp) -> None:
    token = await asyncio.to_thread(running.login, "bob", "builder")
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.get(f"{running.term_url}/api/projects") as response:
            assert await response.json() == [{"id": "default"}]  # no directory: not an operator
        base = f"{running.term_url}/ws/terminal"
        async with http.ws_connect(f"{base}?project=other", protocols=("tether.v1",)) as ws:
            await ws.receive(timeout=10)
            assert ws.close_code == 4003
        async with http.ws_connect(f"{base}?project=default&cols=x") as ws:
            closing = await ws.receive(timeout=10)
            assert ws.close_code == 4000
            assert "cols" in closing.extra  # the reason names the parameter


async def test_too_big_a_frame_closes_1009_and_the_session_stays(running: UvicornApp) -> None:
    token = await asyncio.to_thread(running.login)
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        url = f"{running.term_url}/ws/terminal?project=default"
        async with http.ws_connect(url, protocols=("tether.v1",), max_msg_size=0) as ws:
            hello = json.loads((await ws.receive(timeout=10)).data)
            await ws.send_bytes(b"x" * (1024 * 1024 + 1))
            while (await ws.receive(timeout=10)).type is not aiohttp.WSMsgType.CLOSE:
                pass
            assert ws.close_code == 1009
        again = f"{url}&session={hello['session']}&create=0"
        async with http.ws_connect(again, protocols=("tether.v1",), max_msg_size=0) as ws:
            assert json.loads((await ws.receive(timeout=10)).data)["session"] == hello["session"]
            await ws.send_str(json.dumps({"type": "input", "data": "exit\r"}))
            while (await ws.receive(timeout=10)).type is not aiohttp.WSMsgType.CLOSE:
                pass
            assert ws.close_code == 4012


async def test_sigterm_closes_clients_with_1001_then_ends_the_shells() -> None:
    with example_app() as running:
        token = await asyncio.to_thread(running.login)
        term = await connect(f"{running.term_url}/ws/terminal", project="default", token=token)
        pid = await Probe(term).shell_pid()
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
            url = f"{running.term_url}/ws/terminal?project=default"
            async with http.ws_connect(url, protocols=("tether.v1",)) as ws:
                await ws.receive(timeout=10)  # the hello
                running.process.send_signal(signal.SIGTERM)
                while (await ws.receive(timeout=10)).type is not aiohttp.WSMsgType.CLOSE:
                    pass
                assert ws.close_code == 1001  # not uvicorn's own 1012
        # uvicorn re-raises the signal it handled once it is done: ended by SIGTERM, in order.
        assert await asyncio.to_thread(running.process.wait, 20) == -signal.SIGTERM
        assert not os.path.exists(f"/proc/{pid}"), "the shell outlived the application"
        await term.close()


def test_probes_and_page_under_the_mount(running: UvicornApp) -> None:
    with urllib.request.urlopen(f"{running.term_url}/healthz", timeout=10) as response:
        assert json.load(response) == {"status": "ok"}
    with urllib.request.urlopen(f"{running.term_url}/", timeout=10) as response:
        page = response.read().decode()
    assert 'src="static/app.js"' in page  # relative: it works under any mount point
    with urllib.request.urlopen(f"{running.term_url}/static/app.js", timeout=10) as response:
        assert "javascript" in response.headers["Content-Type"]
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"{running.term_url}/static/nothing.js", timeout=10)
    assert missing.value.code == 404
    assert json.load(missing.value)["error"]["code"] == "not_found"


async def test_a_client_that_pings_then_falls_silent_is_dropped_and_its_session_stays() -> None:
    with example_app(heartbeat="0.2") as running:
        token = await asyncio.to_thread(running.login)
        url = f"{running.term_url}/ws/terminal?project=default"
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
            quiet = await http.ws_connect(url, protocols=("tether.v1",))  # no application pings
            await quiet.receive(timeout=10)
            pinger = await http.ws_connect(url, protocols=("tether.v1",))
            hello = json.loads((await pinger.receive(timeout=10)).data)
            await pinger.send_str(json.dumps({"type": "ping", "t": 7}))
            while (message := await pinger.receive(timeout=10)).type is aiohttp.WSMsgType.TEXT:
                if json.loads(message.data)["type"] == "pong":
                    break
            # Silent from now on: four heartbeats (0.8 s) later the front lets it go.
            while (await pinger.receive(timeout=10)).type not in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.ERROR,
            ):
                pass
            assert not quiet.closed  # it never pinged: the ASGI server's keepalive watches it
            again = f"{url}&session={hello['session']}&create=0"
            async with http.ws_connect(again, protocols=("tether.v1",)) as ws:
                assert json.loads((await ws.receive(timeout=10)).data)["created"] is False
            await quiet.close()


async def test_own_sessions_listed_renamed_and_ended_by_their_owner(running: UvicornApp) -> None:
    bob = await asyncio.to_thread(running.login, "bob", "builder")
    alice = await asyncio.to_thread(running.login)
    api = f"{running.term_url}/api"
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {bob}"}) as as_bob,
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {alice}"}) as as_alice,
    ):
        url = f"{running.term_url}/ws/terminal?project=default"
        async with as_bob.ws_connect(url, protocols=("tether.v1",)) as ws:
            key = json.loads((await ws.receive(timeout=10)).data)["key"]
            async with as_bob.get(f"{api}/me/sessions") as response:
                assert [s["key"] for s in (await response.json())["sessions"]] == [key]
            async with as_alice.get(f"{api}/me/sessions") as response:
                assert (await response.json())["sessions"] == []  # not alice's
            rename = as_bob.patch(f"{api}/me/sessions/{key}", json={"name": "build"})
            async with rename as response:
                assert (await response.json())["name"] == "build"
            text = {"Content-Type": "text/plain"}
            plain = as_bob.patch(f"{api}/me/sessions/{key}", data="x", headers=text)
            async with plain as response:
                assert response.status == 415
            foreign = {"Origin": "http://evil.example"}
            async with as_bob.delete(f"{api}/me/sessions/{key}", headers=foreign) as response:
                assert response.status == 403
            async with as_bob.delete(f"{api}/sessions/{key}") as response:
                assert response.status == 403  # the operator API
            async with as_bob.delete(f"{api}/me/sessions/{key}") as response:
                assert await response.json() == {"ended": key}
            while (await ws.receive(timeout=10)).type is not aiohttp.WSMsgType.CLOSE:
                pass
            assert ws.close_code == 4013
