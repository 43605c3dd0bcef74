"""Every security rule of docs/security.md against a live server.

Owners here: ``alice`` (project web), ``bob`` (web and api), ``ops`` (every project, operator).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import json
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from multidict import CIMultiDict

from tests.support.auth import ALICE, BOB, JWT_SECRET, OPS, TOKENS, bearer, two_projects
from tests.support.server import InProcessServer, inprocess_server, start_server
from tests.support.wsclient import Conn, connect, must_connect, must_refuse, strip_ansi

pytestmark = pytest.mark.timeout(60)


@contextlib.asynccontextmanager
async def token_server(tmp_path: Path, **settings: Any) -> AsyncIterator[InProcessServer]:
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(TOKENS, encoding="utf-8")
    settings.setdefault("projects", two_projects(tmp_path))
    async with inprocess_server(auth="token", tokens_file=str(tokens), **settings) as srv:
        yield srv


async def _http(
    srv: InProcessServer, method: str, path: str, token: str | None = None, **kwargs: Any
) -> tuple[int, Any]:
    headers = kwargs.pop("headers", {})
    if token is not None:
        headers.update(bearer(token))
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, srv.base_url + path, headers=headers, **kwargs) as response,
    ):
        text = await response.text()
        try:
            return response.status, json.loads(text)
        except ValueError:
            return response.status, text


async def _as(srv: InProcessServer, token: str, **query: Any) -> Conn:
    return await must_connect(srv.ws_url, headers=bearer(token), **query)


async def _refused_as(srv: InProcessServer, token: str | None, **query: Any) -> int:
    headers = bearer(token) if token else None
    return (await must_refuse(srv.ws_url, headers=headers, **query)).code


async def _alive(conn: Conn) -> None:
    await conn.send("echo ALIVE-$((20+22))\r")
    await conn.read_until("ALIVE-42")


async def _close(*conns: Conn) -> None:
    for conn in conns:
        await conn.close()


# ----------------------------------------------------------------------------- credentials
async def test_missing_and_invalid_tokens_get_4001_and_401(tmp_path: Path) -> None:
    async with token_server(tmp_path) as srv:
        for token in (None, "wrong-token-0000000000", ALICE + "x", ALICE[:-1]):
            assert await _refused_as(srv, token, project="web") == 4001
            for path in ("/api/projects", "/stats/sessions", "/stats/circuit-breaker"):
                status, body = await _http(srv, "GET", path, token)
                assert status == 401 and body["error"]["code"] == "unauthorized", path
        assert not srv.server.manager.sessions


async def test_header_cookie_and_query_credentials_are_accepted(tmp_path: Path) -> None:
    async with token_server(tmp_path) as srv:
        header = await must_connect(srv.ws_url, headers=bearer(ALICE), project="web")
        cookie = await must_connect(
            srv.ws_url, headers={"Cookie": f"tether_token={ALICE}"}, project="web"
        )
        query = await must_connect(srv.ws_url, project="web", token=ALICE)
        owners = {s.info.owner for s in srv.server.manager.sessions.values()}
        assert owners == {"alice"} and len(srv.server.manager.sessions) == 3
        status, _ = await _http(srv, "GET", f"/api/projects?token={ALICE}")
        assert status == 200
        await _close(header, cookie, query)


async def test_order_of_checks_parameters_origin_credential_project(tmp_path: Path) -> None:
    async with token_server(tmp_path) as srv:
        assert await _refused_as(srv, None, project="bad/id") == 4000
        foreign = {"Origin": "http://evil.example"}
        refused = await must_refuse(srv.ws_url, headers=foreign, project="web")
        assert refused.code == 4003 and "origin" in refused.reason
        assert await _refused_as(srv, None, project="api") == 4001
        assert await _refused_as(srv, ALICE, project="api") == 4003


# ----------------------------------------------------------------------------- jwt
def _jwt(sub: str = "alice", **claims: Any) -> str:
    body = {"sub": sub, "projects": ["web"], "exp": int(time.time()) + 300, "aud": "tether"}
    body.update(claims)
    return jwt.encode(body, JWT_SECRET, algorithm="HS256")


async def test_jwt_expired_wrong_audience_and_forged_tokens_get_4001(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_TETHER_SIGNING", JWT_SECRET)
    settings = {"jwt_secret_env": "TEST_TETHER_SIGNING", "jwt_audience": "tether", "jwt_leeway": 5}
    async with inprocess_server(auth="jwt", projects=two_projects(tmp_path), **settings) as srv:
        good = await _as(srv, _jwt(), project="web")
        assert good.hello["created"]
        bad_tokens = {
            "expired": _jwt(exp=int(time.time()) - 60),
            "wrong audience": _jwt(aud="another-service"),
            "no audience": jwt.encode(
                {"sub": "alice", "projects": ["web"], "exp": int(time.time()) + 60},
                JWT_SECRET,
                algorithm="HS256",
            ),
            "wrong key": jwt.encode(
                {
                    "sub": "alice",
                    "projects": ["web"],
                    "exp": int(time.time()) + 60,
                    "aud": "tether",
                },
                "another-secret-of-enough-length-0123456789",
                algorithm="HS256",
            ),
            "unsigned": jwt.encode(
                {
                    "sub": "alice",
                    "projects": ["web"],
                    "exp": int(time.time()) + 60,
                    "aud": "tether",
                },
                None,
                algorithm="none",
            ),
        }
        for name, token in bad_tokens.items():
            assert await _refused_as(srv, token, project="web") == 4001, name
            status, _ = await _http(srv, "GET", "/api/projects", token)
            assert status == 401, name
        skewed = await _as(srv, _jwt(exp=int(time.time()) - 2), project="web")  # within leeway
        assert await _refused_as(srv, _jwt(projects=["api"]), project="web") == 4003
        status, _ = await _http(srv, "GET", "/api/sessions", _jwt())
        assert status == 403
        status, _ = await _http(srv, "GET", "/api/sessions", _jwt(sub="ops", tether_operator=True))
        assert status == 200
        await _close(good, skewed)


async def test_jwt_rs256_with_a_public_key(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / "jwt.pub.pem"
    pem.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    async with inprocess_server(
        auth="jwt", jwt_public_key=str(pem), projects=two_projects(tmp_path)
    ) as srv:
        claims = {"sub": "carol", "projects": "*", "exp": int(time.time()) + 60}
        conn = await _as(srv, jwt.encode(claims, key, algorithm="RS256"), project="api")
        assert srv.server.manager.sessions[conn.hello["key"]].info.owner == "carol"
        hs = jwt.encode(claims, JWT_SECRET, algorithm="HS256")
        assert await _refused_as(srv, hs, project="api") == 4001
        await conn.close()


# ----------------------------------------------------------------------------- owners
async def test_another_owners_session_is_forbidden(tmp_path: Path) -> None:
    async with token_server(tmp_path) as srv:
        mine = await _as(srv, ALICE, project="web")
        session = mine.hello["session"]
        for create in (None, 0):
            refused = await must_refuse(
                srv.ws_url, headers=bearer(BOB), project="web", session=session, create=create
            )
            assert refused.code == 4003 and "owner" in refused.reason
        # The operator role grants the operator API, not someone else's shell.
        assert await _refused_as(srv, OPS, project="web", session=session) == 4003
        await _alive(mine)
        # After the session ends its tombstone still belongs to alice.
        status, _ = await _http(srv, "DELETE", f"/api/sessions/{mine.hello['key']}", OPS)
        assert status == 200 and await mine.wait_closed() == 4013
        assert await _refused_as(srv, BOB, project="web", session=session, create=0) == 4003
        assert await _refused_as(srv, BOB, project="web", session=session) == 4003
        await mine.close()


async def test_the_same_legacy_id_is_two_shells_for_two_owners(tmp_path: Path) -> None:
    async with token_server(tmp_path) as srv:
        alice = await _as(srv, ALICE, project="web", session="term-3")
        bob = await _as(srv, BOB, project="web", session="term-3")
        assert alice.hello["created"] and bob.hello["created"]
        assert alice.hello["session"] != bob.hello["session"]
        await _close(alice, bob)


async def test_forbidden_project_and_project_listing(tmp_path: Path) -> None:
    async with token_server(tmp_path) as srv:
        refused = await must_refuse(srv.ws_url, headers=bearer(ALICE), project="api")
        assert refused.code == 4003 and "project" in refused.reason
        assert await _refused_as(srv, BOB, project="unknown") == 4003
        status, listed = await _http(srv, "GET", "/api/projects", ALICE)
        assert status == 200 and listed == [{"id": "web"}], "no directory for a non-operator"
        status, listed = await _http(srv, "GET", "/api/projects", BOB)
        assert [p["id"] for p in listed] == ["web", "api"]
        status, listed = await _http(srv, "GET", "/api/projects", OPS)
        assert all("directory" in p for p in listed) and len(listed) == 2


async def test_operator_api_needs_the_operator_role(tmp_path: Path) -> None:
    async with token_server(tmp_path) as srv:
        conn = await _as(srv, ALICE, project="web")
        key = conn.hello["key"]
        calls = [
            ("GET", "/api/sessions"),
            ("DELETE", f"/api/sessions/{key}"),
            ("POST", "/api/sessions/clear"),
            ("POST", "/api/drain"),
        ]
        for method, path in calls:
            status, body = await _http(srv, method, path)
            assert status == 401 and body["error"]["code"] == "unauthorized", path
            status, body = await _http(srv, method, path, ALICE)
            assert status == 403 and body["error"]["code"] == "forbidden", path
        await _alive(conn)
        status, body = await _http(srv, "GET", "/api/sessions", OPS)
        assert status == 200 and [s["key"] for s in body["sessions"]] == [key]
        status, body = await _http(srv, "POST", "/api/sessions/clear", OPS)
        assert status == 200 and body["cleared"] == [key]
        assert await conn.wait_closed() == 4013
        await conn.close()


async def test_stats_show_an_owner_only_its_own_sessions(tmp_path: Path) -> None:
    async with token_server(tmp_path) as srv:
        alice = await _as(srv, ALICE, project="web")
        bob = await _as(srv, BOB, project="api")
        for token, owners in ((ALICE, {"alice"}), (BOB, {"bob"}), (OPS, {"alice", "bob"})):
            status, body = await _http(srv, "GET", "/stats/sessions", token)
            assert status == 200 and {s["owner"] for s in body["sessions"]} == owners
            assert body["totals"]["sessions"] == len(owners)
        status, body = await _http(srv, "GET", "/stats/circuit-breaker", ALICE)
        assert status == 200 and body["address"] == []
        await _close(alice, bob)


async def test_metrics_and_healthz_access_is_configurable(tmp_path: Path) -> None:
    async with token_server(tmp_path) as srv:
        assert (await _http(srv, "GET", "/metrics"))[0] == 401
        assert (await _http(srv, "GET", "/metrics", ALICE))[0] == 200
        assert (await _http(srv, "GET", "/healthz"))[0] == 200
        assert (await _http(srv, "GET", "/readyz"))[0] == 200
    async with token_server(tmp_path, metrics_auth=False, healthz_auth=True) as srv:
        assert (await _http(srv, "GET", "/metrics"))[0] == 200
        for path in ("/healthz", "/readyz"):
            status, body = await _http(srv, "GET", path)
            assert status == 401 and body["error"]["code"] == "unauthorized"
            assert (await _http(srv, "GET", path, BOB))[0] == 200


# ----------------------------------------------------------------------------- limits
async def test_sessions_per_owner_limit_4010_only_with_auth(tmp_path: Path) -> None:
    async with token_server(tmp_path, max_sessions_per_owner=2) as srv:
        first = await _as(srv, ALICE, project="web")
        second = await _as(srv, ALICE, project="web")
        refused = await must_refuse(srv.ws_url, headers=bearer(ALICE), project="web")
        assert refused.code == 4010
        again = await _as(srv, ALICE, project="web", session=first.hello["session"])
        assert not again.hello["created"], "attaching to one's own session is not limited"
        other = await _as(srv, BOB, project="web")
        await _close(first, second, again, other)
    async with inprocess_server(max_sessions_per_owner=1) as srv:
        one = await must_connect(srv.ws_url, project="default")
        two = await must_connect(srv.ws_url, project="default")
        assert two.hello["created"], "auth none: one local user, no per-owner limit"
        status, body = await _http(srv, "GET", "/api/sessions")
        assert status == 200 and len(body["sessions"]) == 2, "auth none: anonymous is operator"
        assert (await _http(srv, "GET", "/metrics"))[0] == 200
        await _close(one, two)


async def test_server_capacity_and_frame_size_with_auth(tmp_path: Path) -> None:
    async with token_server(tmp_path, max_sessions=1, max_message_size=2048) as srv:
        conn = await _as(srv, ALICE, project="web")
        assert await _refused_as(srv, BOB, project="web") == 1013
        big = await _as(srv, ALICE, project="web", session=conn.hello["session"])
        await big.send(b"x" * 4096)
        assert await big.wait_closed() == 1009
        await _alive(conn)
        await _close(conn, big)


async def test_forwarded_addresses_count_only_behind_trusted_proxies(tmp_path: Path) -> None:
    settings = {"address_storm_threshold": 2, "trusted_proxies": ["127.0.0.1"]}
    async with token_server(tmp_path, **settings) as srv:
        spoofed = {**bearer(BOB), "X-Forwarded-For": "198.51.100.1, 203.0.113.5"}
        conns = [await must_connect(srv.ws_url, headers=spoofed, project="web") for _ in range(2)]
        refused = await must_refuse(srv.ws_url, headers=spoofed, project="web")
        assert refused.code == 4129, "the forwarded client address is rate limited"
        neighbour = {**bearer(BOB), "X-Forwarded-For": "203.0.113.6"}
        conns.append(await must_connect(srv.ws_url, headers=neighbour, project="web"))
        # A proxy may append its own line after one the client sent: the last line counts.
        two_lines = CIMultiDict(bearer(BOB))
        two_lines.add("X-Forwarded-For", "203.0.113.5")  # forged by the client
        two_lines.add("X-Forwarded-For", "203.0.113.7")  # added by the proxy
        conns.append(await must_connect(srv.ws_url, headers=two_lines, project="web"))
        await _close(*conns)
    async with token_server(tmp_path, address_storm_threshold=2) as srv:
        spoofed = {**bearer(BOB), "X-Forwarded-For": "203.0.113.5"}
        conns = [await must_connect(srv.ws_url, headers=spoofed, project="web") for _ in range(3)]
        assert len(conns) == 3, "an untrusted peer's X-Forwarded-For is ignored"
        await _close(*conns)


# ----------------------------------------------------------------------------- origin, host
async def test_cross_site_websocket_hijacking_is_refused(tmp_path: Path) -> None:
    async with token_server(tmp_path, allowed_origins=["https://app.example"]) as srv:
        cookie = {"Cookie": f"tether_token={ALICE}"}
        for origin in ("http://evil.example", "null", srv.base_url.replace("4", "5", 1) + "1"):
            refused = await must_refuse(
                srv.ws_url, headers={**cookie, "Origin": origin}, project="web"
            )
            assert refused.code == 4003 and "origin" in refused.reason
        for origin in (srv.base_url, "https://app.example"):
            ok = await must_connect(srv.ws_url, headers={**cookie, "Origin": origin}, project="web")
            await ok.close()


async def test_host_header_check_against_dns_rebinding(tmp_path: Path) -> None:
    async with token_server(tmp_path, allowed_hosts=["tether.test"]) as srv:
        port = srv.port
        rebinding = {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"}
        status, body = await _http(srv, "GET", "/api/projects", ALICE, headers=dict(rebinding))
        assert status == 403 and body["error"]["code"] == "host_not_allowed"
        for path in ("/", "/healthz", "/metrics", "/nope"):
            assert (await _http(srv, "GET", path, headers={"Host": "evil.example"}))[0] == 403
        refused = await must_refuse(
            srv.ws_url, headers={**rebinding, **bearer(ALICE)}, project="web"
        )
        assert (refused.code, refused.reason) == (4003, "host not allowed")
        assert not srv.server.manager.sessions
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"tether.test:{port}"):
            status, _ = await _http(srv, "GET", "/api/projects", ALICE, headers={"Host": host})
            assert status == 200, host
        conn = await must_connect(
            srv.ws_url, headers={"Host": f"tether.test:{port}", **bearer(ALICE)}, project="web"
        )
        await conn.close()


# ----------------------------------------------------------------------------- subprocesses
def _tether(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tether", "serve", "--log-file", "-", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/tmp"},
        stdin=subprocess.DEVNULL,
    )


def test_non_loopback_bind_without_auth_is_refused(tmp_path: Path) -> None:
    for args in (("--host", "0.0.0.0"), ("--host", "::", "--auth", "none")):
        result = _tether(*args, "--port", "0", "--project", f"p={tmp_path}")
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "--insecure-no-auth" in lines[0], result.stderr
    bad_tokens = tmp_path / "tokens.toml"
    bad_tokens.write_text('[[tokens]]\nowner = "a"\ntoken = "leaky-but-too-short"\nx = 1\n')
    result = _tether("--auth", "token", "--tokens-file", str(bad_tokens))
    assert result.returncode == 2 and "leaky" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


async def test_non_loopback_bind_with_insecure_no_auth_or_auth_starts(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(f'[[tokens]]\nowner = "ops"\ntoken = "{OPS}"\nprojects = "*"\n')
    for args in (
        ("--host", "0.0.0.0", "--auth", "none", "--insecure-no-auth", "--allowed-host", "t.test"),
        ("--host", "0.0.0.0", "--auth", "token", "--tokens-file", str(tokens)),
    ):
        with start_server(*args) as server:
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"{server.base_url}/healthz") as response,
            ):
                assert response.status == 200


async def test_secrets_never_reach_a_shell_nor_the_logs(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(
        '[[tokens]]\nowner = "alice"\ntoken_env = "TETHER_TEST_ALICE"\nprojects = "*"\n'
    )
    secrets = {
        "TETHER_TEST_ALICE": "alice-env-token-000000000001",
        "TETHER_JWT_SECRET": "jwt-secret-value-00000000000002",
        "AWS_SECRET_ACCESS_KEY": "aws-secret-value-0000000000003",
    }
    wrong = "wrong-token-never-logged-0000004"
    token = secrets["TETHER_TEST_ALICE"]
    with start_server("--auth", "token", "--tokens-file", str(tokens), env=secrets) as server:
        reasons = [(await must_refuse(server.ws_url, project="default", token=wrong)).reason]
        conn = await must_connect(server.ws_url, project="default", token=token)
        await conn.send("env; echo ENV-DONE-$((6*7))\r")
        await conn.read_until("ENV-DONE-42")
        shell_env = strip_ansi(bytes(conn.output))
        assert "TERM=xterm-256color" in shell_env
        assert "TETHER_" not in shell_env
        for value in (*secrets.values(), wrong):
            assert value not in shell_env
        await conn.close()
        reasons.append((await must_refuse(server.ws_url, project="x/y", token=token)).reason)
        reasons.append((await must_refuse(server.ws_url, project="api", token=wrong)).reason)
        async with aiohttp.ClientSession() as http:
            for path in (f"/nope?token={wrong}", f"/api/sessions?token={token}", "/metrics"):
                async with http.get(server.base_url + path) as response:
                    assert token not in await response.text()
        for request_line in MALFORMED_REQUESTS:
            for credential in (wrong, token):
                _send_raw(server.port, request_line.format(token=credential))
        await asyncio.sleep(0.2)
        log_file = server.log_file
        server.stop()
        logged = log_file.read_text() + "".join(server.output)
    assert '"event":"connect"' in logged.replace(" ", ""), "the log was written"
    for value in (*secrets.values(), wrong):
        assert value not in logged
        assert all(value not in reason for reason in reasons)


# aiohttp's parser errors quote the request line: each of these once logged the token.
MALFORMED_REQUESTS = (
    "GET /api/sessions?token={token} HTTP/1.1\r\nHost: [bad\r\n\r\n",
    "GE T /?token={token} HTTP/9\r\n\r\n",
    "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGE T /?token={token} HTTP/1.1\r\n\r\n",
    "GET /a b?token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "GET /?token={token}\x01 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "GET http://x:99999/?token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "GET /ws/terminal?token={token}&project=x HTTP/1.1\r\n\r\n",
)


def _send_raw(port: int, request: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request.encode())
        with contextlib.suppress(TimeoutError, ConnectionError):
            return sock.recv(65536)
    return b""


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tether test")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_tls_serves_https_and_wss(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    trust = ssl.create_default_context(cafile=str(cert))
    with start_server("--certfile", str(cert), "--keyfile", str(key)) as server:
        assert any("https://127.0.0.1:" in line for line in server.output)
        base = f"https://127.0.0.1:{server.port}"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/healthz", ssl=trust) as response:
                assert response.status == 200
            ws = await http.ws_connect(
                f"wss://127.0.0.1:{server.port}/ws/terminal?project=default",
                ssl=trust,
                protocols=("tether.v1",),
                headers={"Origin": base},
            )
            hello = json.loads((await ws.receive(timeout=10)).data)
            assert hello["type"] == "hello" and hello["created"]
            await ws.send_bytes(b"echo TLS-$((40+2))\r")
            seen = b""
            while b"TLS-42" not in seen:
                message = await ws.receive(timeout=10)
                assert message.type == aiohttp.WSMsgType.BINARY, message
                seen += message.data
            # An upgrade in place: the new worker serves wss:// on the inherited socket first
            # (before aiohttp is loaded), then https:// again.
            os.kill(server.pid, signal.SIGUSR2)
            while (message := await ws.receive(timeout=30)).type != aiohttp.WSMsgType.CLOSE:
                seen += message.data if message.type == aiohttp.WSMsgType.BINARY else b""
            assert message.data == 1012
            ws = await http.ws_connect(
                f"wss://127.0.0.1:{server.port}/ws/terminal?project=default"
                f"&session={hello['session']}&offset={len(seen)}&create=0",
                ssl=trust,
                protocols=("tether.v1",),
                headers={"Origin": base},
            )
            resumed = json.loads((await ws.receive(timeout=30)).data)
            assert resumed["type"] == "hello" and resumed["gap"] == 0
            async with http.get(f"{base}/stats/sessions", ssl=trust) as response:
                assert (await response.json())["server"]["generation"] == 2
            await ws.close()
            with pytest.raises(aiohttp.ClientError):
                async with http.get(f"http://127.0.0.1:{server.port}/healthz") as response:
                    await response.read()
    result = _tether("--certfile", str(key), "--keyfile", str(cert))
    assert result.returncode == 2 and result.stderr.startswith("tether: invalid configuration")


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv"
)
async def test_shells_run_as_the_configured_unprivileged_user(tmp_path: Path) -> None:
    account = pwd.getpwnam("nobody")
    with start_server("--shell-user", "nobody") as server:
        conn = await must_connect(server.ws_url, project="default")
        await conn.send("echo UID=$(id -u) HOME=$HOME USER=$USER END-$((1+1))\r")
        await conn.read_until("END-2")
        text = strip_ansi(bytes(conn.output))
        assert f"UID={account.pw_uid} HOME={account.pw_dir} USER=nobody END-2" in text
        await conn.close()


async def test_a_refused_client_does_not_disturb_other_sessions(tmp_path: Path) -> None:
    async with token_server(tmp_path) as srv:
        bystander = await _as(srv, BOB, project="web")
        attempts = [
            connect(srv.ws_url, headers=bearer(token), project=project, session=session)
            for token, project, session in [
                ("nope-nope-nope-nope", "web", None),
                (ALICE, "api", None),
                (ALICE, "web", bystander.hello["session"]),
            ]
            * 5
        ]
        results = await asyncio.gather(*attempts)
        assert {getattr(r, "code", None) for r in results} == {4001, 4003}
        await _alive(bystander)
        assert list(srv.server.manager.sessions) == [bystander.hello["key"]]
        await bystander.close()
