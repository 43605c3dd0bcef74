"""The holes of issue 12, section 3, each reproduced as an attacker would try it, live on
loopback (docs/security.md, "Attacks tried").

Owners: ``alice`` (project web), ``ops`` (every project, operator).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest

from tests.support.auth import ALICE, OPS, bearer, two_projects
from tests.support.rawws import frame, raw_upgrade, read_until_closed
from tests.support.server import (
    InProcessServer,
    eventually,
    inprocess_server,
    poll_until,
    server_process,
)
from tests.support.wsclient import must_connect, must_refuse, strip_ansi
from tether.server.clock import FakeClock

pytestmark = pytest.mark.timeout(60)

# alice and the operator only (one project: --project web alone must accept it).
TOKENS = f"""
[[tokens]]
owner = "alice"
token = "{ALICE}"
projects = ["web"]

[[tokens]]
owner = "ops"
token = "{OPS}"
projects = "*"
operator = true
"""


def _tokens_file(root: Path) -> Path:
    tokens = root / "tokens.toml"
    tokens.write_text(TOKENS, encoding="utf-8")
    tokens.chmod(0o600)
    return tokens


@contextlib.asynccontextmanager
async def token_server(tmp_path: Path, **settings: Any) -> AsyncIterator[InProcessServer]:
    settings.setdefault("projects", two_projects(tmp_path))
    settings.setdefault("allow_same_user_shells", True)
    async with inprocess_server(
        auth="token", tokens_file=str(_tokens_file(tmp_path)), **settings
    ) as srv:
        yield srv


async def _http(
    srv: InProcessServer, method: str, path: str, token: str | None = None, **kwargs: Any
) -> tuple[int, Any]:
    headers = kwargs.pop("headers", {})
    if token is not None:
        headers.update(bearer(token))
    async with (
        aiohttp.ClientSession(auto_decompress=False) as http,
        http.request(method, srv.base_url + path, headers=headers, **kwargs) as response,
    ):
        text = await response.text()
        try:
            return response.status, json.loads(text)
        except ValueError:
            return response.status, text


# ----------------------------------------------------------------------------- CSRF
async def test_cross_site_posts_to_the_operator_api_are_refused(tmp_path: Path) -> None:
    """A page on another site can POST text/plain without a preflight, with the cookie."""
    async with token_server(tmp_path) as srv:
        conn = await must_connect(srv.ws_url, headers=bearer(OPS), project="web")
        cookie = {"Cookie": f"tether_token={OPS}"}
        for origin in ("http://evil.example", "null"):
            headers = {**cookie, "Origin": origin, "Content-Type": "text/plain"}
            for path in ("/api/sessions/clear", "/api/drain"):
                status, body = await _http(srv, "POST", path, headers=headers, data="{}")
                assert status == 403 and body["error"]["code"] == "forbidden_origin", path
            key = next(iter(srv.server.manager.sessions))
            status, _ = await _http(srv, "DELETE", f"/api/sessions/{key}", headers=headers)
            assert status == 403
        # Same site, but a body that is not JSON: a form or text/plain post is refused.
        same = {**cookie, "Origin": srv.base_url, "Content-Type": "text/plain"}
        status, body = await _http(srv, "POST", "/api/sessions/clear", headers=same, data="{}")
        assert status == 415 and body["error"]["code"] == "unsupported_media_type"
        assert srv.server.manager.accepting and len(srv.server.manager.sessions) == 1
        # Programs: no Origin, no body, as today; and JSON from our own origin.
        status, _ = await _http(srv, "POST", "/api/sessions/clear?project=api", OPS)
        assert status == 200
        headers = {"Origin": srv.base_url}
        status, _ = await _http(
            srv, "POST", "/api/sessions/clear", OPS, headers=headers, json={"project": "api"}
        )
        assert status == 200 and len(srv.server.manager.sessions) == 1
        await conn.close()


# ----------------------------------------------------------------------------- smaller leaks
async def test_breaker_stats_show_a_non_operator_only_its_projects(tmp_path: Path) -> None:
    async with token_server(tmp_path) as srv:
        status, body = await _http(srv, "GET", "/stats/circuit-breaker", ALICE)
        assert status == 200
        manager = srv.server.manager
        manager.start_failures.record_failure("api", srv.server.clock.monotonic())
        manager.start_failures.record_failure("web", srv.server.clock.monotonic())
        _, body = await _http(srv, "GET", "/stats/circuit-breaker", ALICE)
        assert [row["project"] for row in body["project"]] == ["web"]
        _, body = await _http(srv, "GET", "/stats/circuit-breaker", OPS)
        assert sorted(row["project"] for row in body["project"]) == ["api", "web"]


async def test_a_failed_shell_start_does_not_send_a_server_path(tmp_path: Path) -> None:
    async with token_server(tmp_path) as srv:
        (tmp_path / "web").rmdir()
        refused = await must_refuse(srv.ws_url, headers=bearer(ALICE), project="web")
        assert refused.code == 1011
        assert str(tmp_path) not in refused.reason and "/" not in refused.reason


async def test_an_https_origin_is_not_ours_on_a_plain_http_server(tmp_path: Path) -> None:
    async with token_server(tmp_path) as srv:
        cookie = {"Cookie": f"tether_token={ALICE}"}
        https = srv.base_url.replace("http://", "https://")
        refused = await must_refuse(srv.ws_url, headers={**cookie, "Origin": https}, project="web")
        assert refused.code == 4003
        ok = await must_connect(
            srv.ws_url, headers={**cookie, "Origin": srv.base_url}, project="web"
        )
        await ok.close()
    # Behind a TLS-terminating proxy (trusted proxies configured) the page's https origin is ours.
    async with token_server(tmp_path, trusted_proxies=["127.0.0.1"]) as srv:
        https = srv.base_url.replace("http://", "https://")
        ok = await must_connect(srv.ws_url, headers={**cookie, "Origin": https}, project="web")
        await ok.close()


async def test_a_frame_of_exactly_the_limit_is_accepted(tmp_path: Path) -> None:
    async with token_server(tmp_path, max_message_size=2048) as srv:
        conn = await must_connect(srv.ws_url, headers=bearer(ALICE), project="web")
        await conn.send(b"#" * 2047 + b"\r")  # exactly 2048 bytes: a comment line for bash
        await conn.send("echo FRAME-$((40+2))\r")
        await conn.read_until("FRAME-42")
        await conn.send(b"#" * 2049)
        assert await conn.wait_closed() == 1009
        await conn.close()


# ----------------------------------------------------------------------------- memory, heartbeat
async def test_unsolicited_pongs_do_not_keep_a_silent_client_alive() -> None:
    async with inprocess_server(clock=FakeClock(), auth="none", heartbeat=5) as srv:
        async with aiohttp.ClientSession() as http:
            url = srv.ws_url + "?project=default"
            ws = await http.ws_connect(url, protocols=("tether.v1",), autoping=False)
            assert (await ws.receive_json())["type"] == "hello"
            closed = False
            for tick in range(4):
                await ws.pong(b"unsolicited")
                await ws.send_json({"type": "ping", "t": tick})
                while True:  # the pong proves the server read the PONG frame before it
                    message = await ws.receive(timeout=5)
                    if message.type is not aiohttp.WSMsgType.TEXT:
                        closed = message.type is not aiohttp.WSMsgType.PING
                        if closed:
                            break
                        continue
                    if json.loads(message.data).get("type") == "pong":
                        break
                if closed:
                    break
                await eventually(_sleeping(srv.clock))
                srv.clock.advance(5)
            else:
                message = await ws.receive(timeout=5)
                while message.type is aiohttp.WSMsgType.PING:
                    message = await ws.receive(timeout=5)
                closed = message.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
            assert closed, "a client that never answers our pings is dropped"
            await ws.close()
        # A client that answers every ping stays.
        conn = await must_connect(srv.ws_url, project="default")
        for _ in range(4):
            await eventually(_sleeping(srv.clock))
            srv.clock.advance(5)
            await conn.send_json({"type": "ping", "t": 1})
            await conn.message("pong")
        await conn.send("echo STILL-$((40+2))\r")
        await conn.read_until("STILL-42")
        await conn.close()


def _sleeping(clock: FakeClock) -> Any:
    async def check() -> bool:
        return clock.sleepers > 0

    return check


def _rss(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


def test_a_client_that_never_reads_cannot_grow_the_server(tmp_path: Path) -> None:
    """The reproducer: pings and PONG frames as fast as possible, never reading the answers."""
    with server_process("--auth", "none", "--heartbeat", "2") as server:
        sock = raw_upgrade(server.port, rcvbuf=4096)
        baseline = peak = _rss(server.pid)
        flood = b"".join(
            frame(0x1, b'{"type":"ping","t":1}') + frame(0xA, b"x") for _ in range(500)
        )
        deadline = time.monotonic() + 15
        dropped = False
        sock.settimeout(0.5)
        while time.monotonic() < deadline and not dropped:
            try:
                sock.sendall(flood)
            except TimeoutError:
                pass  # the server stopped reading: TCP pushes back
            except (BrokenPipeError, ConnectionResetError):
                dropped = True
            peak = max(peak, _rss(server.pid))
        sock.close()
        assert peak - baseline < 150 * 1024 * 1024, f"grew by {(peak - baseline) >> 20} MiB"
        assert dropped, "the connection is dropped once its queue is full"
        kept = [0]

        def released() -> bool:
            kept[0] = _rss(server.pid) - baseline
            return kept[0] < 60 * 1024 * 1024

        poll_until(released, 10, lambda: f"kept {kept[0] >> 20} MiB")
        log = server.log_file.read_text(encoding="utf-8")
        assert '"reason":"client stopped reading"' in log and '"code":1008' in log


# ----------------------------------------------------------------------------- forwarded addresses
async def test_a_client_cannot_choose_its_forwarded_address(tmp_path: Path) -> None:
    """Behind a trusted proxy, a client adding its own X-Forwarded-For line claiming loopback
    (exempt from the address storm rule) is still counted as the address the proxy saw."""
    from multidict import CIMultiDict

    settings = {"address_storm_threshold": 2, "trusted_proxies": ["127.0.0.1"]}
    async with token_server(tmp_path, **settings) as srv:
        forged = CIMultiDict(bearer(ALICE))
        forged.add("X-Forwarded-For", "127.0.0.1")  # the client's own line
        forged.add("X-Forwarded-For", "203.0.113.9")  # the proxy's
        conns = [await must_connect(srv.ws_url, headers=forged, project="web") for _ in range(2)]
        assert (await must_refuse(srv.ws_url, headers=forged, project="web")).code == 4129
        for conn in conns:
            await conn.close()


async def test_a_forwarded_address_that_only_starts_like_loopback_is_counted(
    tmp_path: Path,
) -> None:
    settings = {"address_storm_threshold": 2, "trusted_proxies": ["127.0.0.1"]}
    async with token_server(tmp_path, **settings) as srv:
        headers = {**bearer(ALICE), "X-Forwarded-For": "::1abc"}
        conns = [await must_connect(srv.ws_url, headers=headers, project="web") for _ in range(2)]
        try:
            assert (await must_refuse(srv.ws_url, headers=headers, project="web")).code == 4129
        finally:
            for conn in conns:
                await conn.close()


# ----------------------------------------------------------------------------- failed logins
async def test_failed_logins_are_rate_limited_per_address(tmp_path: Path) -> None:
    settings = {"max_login_failures": 3, "storm_exempt_loopback": False}
    async with token_server(tmp_path, clock=FakeClock(), **settings) as srv:
        for attempt in range(3):
            wrong = f"wrong-token-{attempt:012d}"
            assert (
                await must_refuse(srv.ws_url, headers=bearer(wrong), project="web")
            ).code == 4001
        refused = await must_refuse(srv.ws_url, headers=bearer(ALICE), project="web")
        assert refused.code == 4129 and refused.reason.startswith("retry-after=")
        status, body = await _http(srv, "GET", "/api/projects", ALICE)
        assert status == 429 and body["error"]["code"] == "too_many_requests"
        # Another address (behind no proxy here: the limiter's own table) is not affected.
        assert srv.server.login_retry_after("203.0.113.1") is None
        srv.clock.advance(int(refused.reason.split("=")[1]))
        conn = await must_connect(srv.ws_url, headers=bearer(ALICE), project="web")
        await conn.close()
        # A missing credential is not a failed login (a page loads before it has its token).
        for _ in range(5):
            assert (await must_refuse(srv.ws_url, project="web")).code == 4001
        conn = await must_connect(srv.ws_url, headers=bearer(ALICE), project="web")
        await conn.close()


# ----------------------------------------------------------------------------- reload
async def test_tokens_are_reloaded_without_touching_sessions(tmp_path: Path) -> None:
    async with token_server(tmp_path) as srv:
        conn = await must_connect(srv.ws_url, headers=bearer(ALICE), project="web")
        tokens = tmp_path / "tokens.toml"
        replaced = "alice-secret-token-0002"
        tokens.write_text(TOKENS.replace(ALICE, replaced), encoding="utf-8")
        assert srv.server.reload()
        assert (await must_refuse(srv.ws_url, headers=bearer(ALICE), project="web")).code == 4001
        fresh = await must_connect(srv.ws_url, headers=bearer(replaced), project="web")
        await conn.send("echo KEPT-$((40+2))\r")
        await conn.read_until("KEPT-42")
        # A broken file keeps the tokens in force (and says so in the log).
        tokens.write_text("not toml [", encoding="utf-8")
        assert not srv.server.reload()
        again = await must_connect(srv.ws_url, headers=bearer(replaced), project="web")
        for c in (conn, fresh, again):
            await c.close()


def test_sighup_reloads_the_tokens_file(tmp_path: Path) -> None:
    tokens = _tokens_file(tmp_path)
    args = ("--auth", "token", "--tokens-file", str(tokens), "--project", f"web={tmp_path}")
    env = {"TETHER_ALLOW_SAME_USER_SHELLS": "1"}
    with server_process(*args, env=env) as server:
        replaced = "alice-secret-token-0003"

        def status(token: str) -> int:
            import urllib.error
            import urllib.request

            request = urllib.request.Request(
                f"{server.base_url}/api/projects", headers=bearer(token)
            )
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    return int(response.status)
            except urllib.error.HTTPError as error:
                return int(error.code)

        assert status(ALICE) == 200 and status(replaced) == 401
        tokens.write_text(TOKENS.replace(ALICE, replaced), encoding="utf-8")
        os.kill(server.pid, __import__("signal").SIGHUP)
        poll_until(lambda: status(replaced) == 200, 10, "SIGHUP did not reload the tokens file")
        assert status(ALICE) == 401
        assert server.process is not None and server.process.poll() is None


# ----------------------------------------------------------------------------- malformed input
async def test_a_lone_surrogate_in_input_is_a_bad_field() -> None:
    async with inprocess_server(auth="none") as srv:
        conn = await must_connect(srv.ws_url, project="default")
        await conn.ws.send_str('{"type":"input","data":"\\ud800"}')
        error = await conn.message("error")
        assert error["code"] == "bad_field"
        await conn.send("echo SURVIVED-$((40+2))\r")
        await conn.read_until("SURVIVED-42")
        await conn.close()


# ----------------------------------------------------------------------------- slowloris
def _idle(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    return sock


def _closed_by_server(sock: socket.socket, timeout: float) -> bool:
    """True when the server closes ``sock`` within ``timeout`` (it sends nothing first)."""
    sock.settimeout(timeout)
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def _served(sock: socket.socket, port: int) -> bool:
    sock.settimeout(10)
    sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    return sock.recv(1024).startswith(b"HTTP/1.1 200")


async def test_connections_must_send_their_headers_in_time() -> None:
    async with inprocess_server(auth="none", handshake_timeout=0.5) as srv:
        loop = asyncio.get_running_loop()
        silent = _idle(srv.port)
        started = loop.time()
        assert await asyncio.to_thread(_closed_by_server, silent, 10)
        assert loop.time() - started < 5
        silent.close()

        def dribble() -> int:
            sock = _idle(srv.port)
            sock.sendall(b"GET /healthz HTTP/1.1\r\n")
            lines = 0
            try:
                while lines < 200:  # one header line every 50 ms: never a whole request
                    sock.sendall(f"X-Slow-{lines}: a\r\n".encode())
                    lines += 1
                    if _closed_by_server(sock, 0.05):
                        break
            except (BrokenPipeError, ConnectionResetError):
                pass
            sock.close()
            return lines

        assert await asyncio.to_thread(dribble) < 100, "a dribbling client is cut at the deadline"
        fine = _idle(srv.port)
        assert await asyncio.to_thread(_served, fine, srv.port)
        fine.close()


def test_pending_connections_per_address_are_capped(tmp_path: Path) -> None:
    cap = {"TETHER_MAX_PENDING_PER_ADDRESS": "3"}
    with server_process("--auth", "none", "--no-loopback-exempt", env=cap) as server:
        held = [_idle(server.port) for _ in range(3)]
        extra = _idle(server.port)
        assert _closed_by_server(extra, 5), "one pending connection too many is closed at once"
        extra.close()
        assert _served(held[0], server.port), "the ones within the cap are served"
        # held[0] is settled now: room for one more pending connection.
        another = _idle(server.port)
        assert _served(another, server.port)
        for sock in (*held, another):
            sock.close()
    # Loopback is exempt by default, as from the storm rule; so are trusted proxies.
    for args in ((), ("--no-loopback-exempt", "--trusted-proxy", "127.0.0.1")):
        with server_process("--auth", "none", *args, env=cap) as server:
            held = [_idle(server.port) for _ in range(6)]
            assert all(_served(sock, server.port) for sock in held)
            for sock in held:
                sock.close()


# ----------------------------------------------------------------------------- framing
@pytest.mark.parametrize("split", [None, 1, 3])
async def test_unmasked_client_frames_close_with_1002(split: int | None) -> None:
    async with inprocess_server(auth="none") as srv:

        def attack() -> bytes:
            sock = raw_upgrade(srv.port)
            try:
                # Masked frames are fine (a 200-byte one: a 16-bit length), then an unmasked one.
                sock.sendall(frame(0x2, b"echo MASKED-OK\r") + frame(0x2, b"#" * 200 + b"\r"))
                unmasked = frame(0x2, b"echo UNMASKED\r", masked=False)
                if split is None:
                    sock.sendall(unmasked)
                else:
                    sock.sendall(unmasked[:split])
                    sock.sendall(unmasked[split:])
                return read_until_closed(sock, 10)
            finally:
                sock.close()

        received = await asyncio.to_thread(attack)
        close = received.rfind(b"\x88")
        assert close >= 0, "a close frame is sent"
        assert struct.unpack("!H", received[close + 2 : close + 4])[0] == 1002
        session = next(iter(srv.server.manager.sessions.values()))
        conn = await must_connect(srv.ws_url, project="default", session=session.info.session_id)
        await conn.send("echo DONE-$((40+2))\r")
        output = strip_ansi(await conn.read_until("DONE-42"))
        assert "MASKED-OK" in output and "UNMASKED" not in output, output
        await conn.close()
