"""A bounded fuzz run against a live server: random query strings and headers on /ws/terminal,
random frames into admitted connections, random HTTP requests to every endpoint of
docs/openapi.json, and random bytes on the socket.

Throughout, a bystander (another owner's attached session) must see nothing but its own echo and
never be closed; afterwards the server must be healthy, must never have answered 5xx, and must
have logged no traceback. The shell is ``cat``: random input is harmless to the machine.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlencode

import aiohttp
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.support.server import ServerProcess, start_server
from tests.support.wsclient import Conn, Refused, connect, must_connect
from tether.server.aiohttp_front.app import create_app
from tether.server.config import build_settings

pytestmark = pytest.mark.timeout(120)

SPEC = json.loads((Path(__file__).parent.parent / "docs" / "openapi.json").read_text())
ALICE = "alice-fuzz-token-00000001"
BOB = "bob-fuzz-token-0000000002"
TOKENS = f"""
[[tokens]]
owner = "alice"
token = "{ALICE}"
projects = ["default", "web"]

[[tokens]]
owner = "bob"
token = "{BOB}"
projects = ["web"]
"""


def fuzz(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        database=None,
    )


# Close codes a refused or ended connection may get here (docs/protocol.md, section 6).
REFUSAL_CODES = {4000, 4001, 4003, 4004, 4010, 4129, 1013}
CLOSE_CODES = {1000, 1009, 4012}
ERROR_CODES = {"bad_json", "unknown_type", "bad_field"}


class Bystander(threading.Thread):
    """Bob's attached session, on its own event loop: it must see only its own echo."""

    def __init__(self, ws_url: str) -> None:
        super().__init__(daemon=True)
        self.ws_url = ws_url
        self.ready = threading.Event()
        self.stopping = threading.Event()
        self.conn: Conn | None = None
        self.final_output = b""
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by the last test
            self.error = exc
            self.ready.set()

    async def _main(self) -> None:
        conn = await must_connect(
            self.ws_url, headers={"Authorization": f"Bearer {BOB}"}, project="web"
        )
        self.conn = conn
        self.ready.set()
        while not self.stopping.is_set() and conn.close_code is None:
            await conn.pump(0.05)
        assert conn.close_code is None, f"bystander closed: {conn.close_code} {conn.close_reason}"
        assert not conn.output, f"bystander saw foreign output: {bytes(conn.output)[:200]!r}"
        assert not conn.messages, f"bystander got messages: {conn.messages}"
        await conn.send(b"BYSTANDER-OK\r")
        await conn.read_until(b"BYSTANDER-OK\r\nBYSTANDER-OK\r\n", timeout=5)
        self.final_output = bytes(conn.output)
        await conn.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("fuzz-live")
    (root / "web").mkdir()
    (root / "default").mkdir()
    tokens = root / "tokens.toml"
    tokens.write_text(TOKENS)
    args = [
        "--auth", "token", "--tokens-file", str(tokens), "--shell", "cat",
        "--project", f"default={root / 'default'}", "--project", f"web={root / 'web'}",
        "--idle-timeout", "1", "--max-message-size", "4096",
        "--max-sessions-per-owner", "25", "--max-sessions", "40",
    ]  # fmt: skip
    with start_server(*args) as running:
        yield running


@pytest.fixture(scope="module")
def bystander(server: ServerProcess) -> Iterator[Bystander]:
    watcher = Bystander(server.ws_url)
    watcher.start()
    assert watcher.ready.wait(20) and watcher.error is None, watcher.error
    yield watcher
    watcher.stopping.set()
    watcher.join(20)


# ----------------------------------------------------------------------------- strategies
PARAMETERS = ["project", "session", "client", "offset", "cols", "rows", "create", "token"]
text = st.text(max_size=40) | st.text(alphabet=st.characters(codec="utf-8"), max_size=20)
values = st.one_of(
    text,
    st.sampled_from(["default", "web", "api", "", "0", "1", "80", "24", "null", "term-3"]),
    st.integers(-5, 2**64).map(str),
    st.from_regex(r"session_[0-9]{13}_[a-z0-9]{6,32}", fullmatch=True),
    st.from_regex(r"[A-Za-z0-9_-]{8,20}", fullmatch=True),
)
tokens = st.sampled_from([None, ALICE, "garbage-token-000000000", ALICE + "x", ""])
mostly = st.integers(0, 9).map(lambda n: n < 8)  # True 80% of the time
valid_values = {
    "project": st.sampled_from(["default", "web", "api"]),
    "session": st.sampled_from(["", "null", "undefined", "term-3", "1754900000000-x"])
    | st.from_regex(r"session_1754900000000_[a-z0-9]{20}", fullmatch=True),
    "client": st.from_regex(r"[A-Za-z0-9_-]{8,20}", fullmatch=True),
    "offset": st.integers(0, 200).map(str),
    "cols": st.integers(1, 1000).map(str),
    "rows": st.integers(1, 500).map(str),
    "create": st.sampled_from(["0", "1"]),
}


@st.composite
def ws_attempts(draw: st.DrawFn, bystander_session: str) -> dict[str, Any]:
    # A mostly valid attempt, then a few random mutations: deep checks get reached too.
    query = [("project", draw(valid_values["project"]))]
    for name, strategy in valid_values.items():
        if name != "project" and draw(st.booleans()):
            query.append((name, draw(strategy)))
    if draw(st.integers(0, 9)) == 0:
        query.append(("session", bystander_session))
    if not draw(mostly):
        query += draw(st.lists(st.tuples(st.sampled_from(PARAMETERS) | text, values), max_size=3))
    headers: dict[str, str] = {}
    token = ALICE if draw(mostly) else draw(tokens)
    if token is not None:
        where = draw(st.sampled_from(["header", "cookie", "query"]))
        if where == "header":
            headers["Authorization"] = f"Bearer {token}"
        elif where == "cookie":
            headers["Cookie"] = f"tether_token={token}"
        else:
            query.append(("token", token))
    if not draw(mostly):
        headers["Origin"] = draw(
            st.sampled_from(["http://evil.example", "null", "http://127.0.0.1:1"])
        )
    protocols = draw(st.sampled_from([("tether.v1",), (), ("chat",), ("chat", "tether.v1")]))
    return {"query": query, "headers": headers, "protocols": protocols}


async def _attempt(ws_url: str, attempt: dict[str, Any]) -> Conn | Refused:
    url = f"{ws_url}?{urlencode(attempt['query'], quote_via=quote)}"
    return await connect(url, headers=attempt["headers"], protocols=attempt["protocols"])


# ----------------------------------------------------------------------------- websocket
def test_random_query_strings_and_headers(server: ServerProcess, bystander: Bystander) -> None:
    assert bystander.conn is not None
    session = bystander.conn.hello["session"]

    @fuzz(150)
    @given(ws_attempts(session))
    def run(attempt: dict[str, Any]) -> None:
        result = asyncio.run(_check_attempt(server.ws_url, attempt))
        event(f"code {getattr(result, 'code', 'hello')}")
        if isinstance(result, Refused):
            assert result.code in REFUSAL_CODES, result
            assert len(result.reason.encode()) <= 123
            assert ALICE not in result.reason

    run()


async def _check_attempt(ws_url: str, attempt: dict[str, Any]) -> Conn | Refused:
    result = await _attempt(ws_url, attempt)
    if isinstance(result, Conn):
        assert result.hello["type"] == "hello" and result.hello["project"] in ("default", "web")
        await result.close()
    return result


frames = st.lists(
    st.one_of(
        st.binary(max_size=300),
        st.binary(min_size=4097, max_size=5000),
        text,
        st.sampled_from(['{"type":"resize","cols":1000,"rows":500}', '{"type":"ping","t":1e308}']),
        st.fixed_dictionaries(
            {"type": st.sampled_from(["resize", "ping", "input", "nope"])},
            optional={
                "cols": st.integers(-2, 1002) | text,
                "rows": st.integers(-2, 502),
                "t": st.floats() | st.integers() | text,
                "data": text,
            },
        ).map(json.dumps),
    ),
    max_size=8,
)


def test_random_frames_into_a_live_session(server: ServerProcess, bystander: Bystander) -> None:
    @fuzz(60)
    @given(frames)
    def run(batch: list[bytes | str]) -> None:
        asyncio.run(_send_frames(server.ws_url, batch))

    run()


async def _own_session(ws_url: str) -> Conn:
    # Sessions end with the batch (EOF to cat) and idle ones are reaped after 1 s: wait for
    # room under the per-owner limit rather than fail.
    for _ in range(40):
        result = await connect(
            ws_url, headers={"Authorization": f"Bearer {ALICE}"}, project="default"
        )
        if isinstance(result, Conn):
            return result
        assert result.code in (4010, 1013), result
        await asyncio.sleep(0.25)
    raise AssertionError("no room for a new session")


async def _send(conn: Conn, frame: bytes | str | dict[str, Any]) -> bool:
    # The server may already have closed (1009, 4012): writing then fails, which is fine.
    try:
        if isinstance(frame, bytes):
            await conn.ws.send_bytes(frame)
        elif isinstance(frame, str):
            await conn.ws.send_str(frame)
        else:
            await conn.send_json(frame)
    except (ConnectionError, aiohttp.ClientError):
        return False
    return not conn.ws.closed


_ENDING_KEYS = ("\x03", "\x04", "\x1a", "\x1c")  # Ctrl-C, -D, -Z, -backslash: cat ends or stops


def _may_end_session(frame: bytes | str) -> bool:
    text = frame.decode("latin-1") if isinstance(frame, bytes) else frame
    escaped = [f"\\u{ord(key):04x}" for key in _ENDING_KEYS]  # as JSON writes them
    return len(frame) > 4096 or any(key in text for key in (*_ENDING_KEYS, *escaped))


async def _send_frames(ws_url: str, batch: list[bytes | str]) -> None:
    conn = await _own_session(ws_url)
    try:
        sent = all([await _send(conn, frame) for frame in batch])
        if sent:
            await _send(conn, {"type": "ping", "t": 7})
        while await conn.pump(0.5):
            if any(m.get("type") == "pong" and m.get("t") == 7 for m in conn.messages):
                break
        if conn.close_code is None:
            assert any(m.get("type") == "pong" for m in conn.messages), conn.messages
        else:
            # After an oversized frame (1009), or a control key that ends `cat` (4012), the server
            # closes while our next frames are in flight: TCP may then reset the connection
            # before its close frame is read (a reset discards what was not read yet).
            expected = CLOSE_CODES | ({1006} if any(map(_may_end_session, batch)) else set())
            assert conn.close_code in expected, (conn.close_code, conn.close_reason)
        for message in conn.messages:
            assert message["type"] in {"ack", "resize", "pong", "error", "exit"}, message
            if message["type"] == "error":
                assert message["code"] in ERROR_CODES, message
    finally:
        # XON (a random ^S may have stopped output), then end of input: cat exits.
        if conn.close_code is None and await _send(conn, b"\x11\r\x04\x04"):
            await conn.wait_closed(1)
        await conn.close()


# ----------------------------------------------------------------------------- http
def _operations() -> list[tuple[str, str]]:
    return [
        (method.upper(), path)
        for path, item in SPEC["paths"].items()
        for method in item
        if path != "/ws/terminal"
    ]


def test_the_spec_lists_every_route() -> None:
    app = create_app(build_settings({"log_file": "-"}))
    routes = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
        and route.method not in ("HEAD", "*")
        and not route.resource.canonical.startswith("/static")
    }
    documented = {(method, path) for method, path in _operations()} | {("GET", "/ws/terminal")}
    assert routes == documented


def _documented(method: str, path: str) -> set[int]:
    """Statuses the spec allows for ``method`` on the (raw) ``path``, routed as the server does."""
    decoded = unquote(re.sub("%2[fF]", "%252F", path))  # the router keeps %2F inside a segment
    statuses = set(SPEC["x-tether-any-request"])
    for template, item in SPEC["paths"].items():
        pattern = re.escape(template).replace(re.escape("{key}"), "[^/]+")
        if not re.fullmatch(pattern, decoded):
            continue
        operation = item.get(method.lower()) or (item.get("get") if method == "HEAD" else None)
        if operation is not None:
            statuses |= {int(status) for status in operation["responses"]}
    return statuses


def _concrete(path: str, key: str) -> str:
    return path.replace("{key}", quote(key, safe=""))


@st.composite
def http_requests(draw: st.DrawFn) -> dict[str, Any]:
    method, template = draw(st.sampled_from(_operations()))
    method = draw(
        st.sampled_from([method, method, "GET", "POST", "PUT", "DELETE", "HEAD", "PATCH"])
    )
    key = draw(text | st.from_regex(r"session_[0-9]{13}_[a-z0-9]{20}:default", fullmatch=True))
    path = _concrete(template, key) if draw(st.integers(0, 9)) else "/" + quote(draw(text))
    query = draw(
        st.lists(st.tuples(st.sampled_from(["project", "owner", "token", "x"]), text), max_size=3)
    )
    headers = {"Content-Type": draw(st.sampled_from(["application/json", "text/plain", "x/y"]))}
    token = draw(tokens)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if draw(st.integers(0, 9)) == 0:
        headers["Host"] = draw(st.sampled_from(["evil.example", "localhost", "[::1]:1", "a b"]))
    body = draw(
        st.one_of(
            st.none(), st.binary(max_size=200), st.sampled_from([b"{}", b"[]", b'{"project":1}'])
        )
    )
    return {
        "method": method,
        "path": path,
        "query": query,
        "headers": headers,
        "body": body,
    }


def test_random_http_requests_to_every_endpoint(
    server: ServerProcess, bystander: Bystander
) -> None:
    @fuzz(300)
    @given(http_requests())
    def run(request: dict[str, Any]) -> None:
        target = request["path"] + ("?" + urlencode(request["query"]) if request["query"] else "")
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        try:
            connection.request(request["method"], target, request["body"], request["headers"])
            response = connection.getresponse()
            body = response.read()
        finally:
            connection.close()
        assert response.status < 500, (request, response.status, body[:200])
        allowed = _documented(request["method"], request["path"])
        assert response.status in allowed, (request, response.status, body[:200])
        if response.status >= 400 and request["method"] != "HEAD":
            error = json.loads(body)["error"]
            assert error["code"] and error["message"], body
            assert ALICE not in body.decode()

    run()


def test_random_bytes_on_the_socket(server: ServerProcess, bystander: Bystander) -> None:
    @fuzz(40)
    @given(st.binary(min_size=1, max_size=300) | text.map(lambda s: (s + "\r\n\r\n").encode()))
    def run(data: bytes) -> None:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            try:
                answer = sock.recv(200)
            except (TimeoutError, ConnectionError):
                answer = b""
        assert not answer or answer.startswith(b"HTTP/1."), answer
        assert b" 5" not in answer.split(b"\r\n", 1)[0], answer

    run()


# ----------------------------------------------------------------------------- afterwards
def test_afterwards_the_server_is_healthy_and_the_bystander_untouched(
    server: ServerProcess, bystander: Bystander
) -> None:
    async def health() -> int:
        async with (
            aiohttp.ClientSession() as http_session,
            http_session.get(f"{server.base_url}/healthz") as response,
        ):
            return response.status

    assert asyncio.run(health()) == 200
    assert server.process is not None and server.process.poll() is None
    bystander.stopping.set()
    bystander.join(20)
    assert bystander.error is None, repr(bystander.error)
    assert bystander.final_output == b"BYSTANDER-OK\r\nBYSTANDER-OK\r\n"
    output = "".join(server.output)
    assert "Traceback" not in output, output[-3000:]
    assert " error " not in output, "no internal error was logged"
