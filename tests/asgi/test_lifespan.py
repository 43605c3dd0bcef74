"""The ASGI application driven directly (no ASGI server): lifespan events, a lazy start when
the host application forwards none, and the probes' answers while draining."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.server import SHELL
from tether.asgi import TetherApp, create_app
from tether.server.config import build_settings


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[TetherApp]:
    settings = build_settings(
        {"auth": "none", "projects": [f"default={tmp_path}"], "shell": SHELL, "log_file": "-"}
    )
    application = create_app(settings)
    yield application
    await application.stop()


async def call(app: TetherApp, scope: dict[str, Any], *incoming: dict[str, Any]) -> list[Any]:
    """Run ``app`` on ``scope`` with these incoming messages; what it sent."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for message in incoming:
        inbox.put_nowait(message)
    sent: list[Any] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, inbox.get, send)
    return sent


async def get(app: TetherApp, path: str, root: str = "") -> tuple[int, Any]:
    scope = {"type": "http", "method": "GET", "path": root + path, "root_path": root,
             "headers": [(b"host", b"127.0.0.1")], "query_string": b""}  # fmt: skip
    start, body = await call(app, scope, {"type": "http.request", "body": b""})
    return start["status"], json.loads(body["body"])


async def test_lifespan_startup_and_shutdown_are_answered(app: TetherApp) -> None:
    sent = await call(
        app, {"type": "lifespan"}, {"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}
    )
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


async def test_a_first_request_starts_it_and_readyz_says_503_while_draining(app: TetherApp) -> None:
    assert await get(app, "/healthz", root="/term") == (200, {"status": "ok"})
    assert app.server.manager.accepting
    await app.server.drain()
    status, body = await get(app, "/readyz")
    assert status == 503 and body["error"]["code"] == "draining"
    assert (await get(app, "/nothing"))[0] == 404


async def test_an_async_hook_answering_nobody_closes_4001(tmp_path: Path) -> None:
    async def nobody(scope: Any) -> None:
        return None

    projects = [f"default={tmp_path}"]
    settings = build_settings({"auth": "local", "projects": projects, "log_file": "-"})
    application = create_app(settings, identify=nobody)
    scope = {"type": "websocket", "path": "/ws/terminal", "root_path": "",
             "headers": [(b"host", b"127.0.0.1")], "query_string": b"project=default",
             "subprotocols": ["tether.v1"], "client": ("127.0.0.1", 5000)}  # fmt: skip
    try:
        sent = await call(application, scope, {"type": "websocket.connect"})
    finally:
        await application.stop()
    assert sent[0] == {"type": "websocket.accept", "subprotocol": "tether.v1"}
    assert sent[1]["type"] == "websocket.close" and sent[1]["code"] == 4001


async def test_a_foreign_host_is_refused(app: TetherApp) -> None:
    scope = {"type": "http", "method": "GET", "path": "/healthz", "root_path": "",
             "headers": [(b"host", b"attacker.example")], "query_string": b""}  # fmt: skip
    start, body = await call(app, scope, {"type": "http.request", "body": b""})
    assert start["status"] == 403
    assert json.loads(body["body"])["error"]["code"] == "host_not_allowed"


async def test_a_failing_hook_is_a_clean_500_and_1011(tmp_path: Path) -> None:
    def broken(scope: Any) -> Any:
        raise KeyError("the host application's bug")

    projects = [f"default={tmp_path}"]
    settings = build_settings({"auth": "none", "projects": projects, "log_file": "-"})
    application = create_app(settings, identify=broken)
    http_scope = {"type": "http", "method": "GET", "path": "/api/projects", "root_path": "",
                  "headers": [(b"host", b"127.0.0.1")], "query_string": b""}  # fmt: skip
    ws_scope = http_scope | {"type": "websocket", "path": "/ws/terminal", "subprotocols": []}
    try:
        start, body = await call(application, http_scope, {"type": "http.request", "body": b""})
        closed = await call(application, ws_scope, {"type": "websocket.connect"})
    finally:
        await application.stop()
    assert start["status"] == 500
    assert json.loads(body["body"])["error"]["code"] == "internal_error"
    assert (closed[-1]["code"], closed[-1]["reason"]) == (1011, "identity check failed")
