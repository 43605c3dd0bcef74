"""The ASGI application: lifespan, lazy start, drain before the ASGI server's own shutdown,
the identity hook, and dispatch to the page, the HTTP API and ``/ws/terminal``."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import signal
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from types import FrameType
from typing import Any

from tether.errors import ConfigError, Refusal
from tether.protocol.codes import CloseCode, clip_reason
from tether.server import logs, pty
from tether.server.asgi_front import http
from tether.server.asgi_front.scope import (
    Headers,
    Scope,
    client_address,
    cookies_of,
    headers_of,
    query_of,
    route_of,
    upgrade_of,
)
from tether.server.asgi_front.terminal import AsgiTerminal, Receive, Send, accept_message
from tether.server.clock import Clock
from tether.server.config import Settings
from tether.server.core import HostIdentity, Server
from tether.server.identity import Identity

# The host application's identity hook: the ASGI scope in, a tether owner (or None: 401/4001).
IdentifyHook = Callable[[Scope], "Identity | Awaitable[Identity | None] | None"]
SignalHandler = Callable[[int, FrameType | None], Any]
_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class TetherApp:
    """tether as an ASGI application (see :func:`tether.asgi.create_app`)."""

    def __init__(
        self,
        settings: Settings,
        *,
        identify: IdentifyHook | None = None,
        clock: Clock | None = None,
    ) -> None:
        if identify is None and settings.auth == "local":
            raise ConfigError(
                "auth", "auth 'local' needs `tether serve`: embed with an identify hook, or "
                "auth 'token', 'jwt' or 'none'"
            )  # fmt: skip
        if settings.redis_url:
            raise ConfigError("redis-url", "a cluster is served by `tether serve` only")
        self.server = Server(settings, clock=clock)
        self._identify = identify
        if identify is not None:  # owners come from the host application: limits apply
            self.server.owner_limit = settings.max_sessions_per_owner
        self._started = False
        self._tasks: list[asyncio.Task[None]] = []
        self._log_handlers: list[logging.Handler] = []
        self._previous_handlers: dict[int, SignalHandler] = {}
        self._signalled = False
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        self.start()  # the host application may not forward lifespan events: start lazily
        if kind == "http":
            response = await self._http(scope, receive)
            await http.send_response(send, response, head=scope.get("method") == "HEAD")
        elif kind == "websocket":
            await self._websocket(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive) -> http.Response | http.Stream:
        if route_of(scope) == "/" and not str(scope.get("path", "")).endswith("/"):
            # The page's links are relative: /term must become /term/.
            return http.Response(308, b"", "text/plain", {"Location": _slashed(scope)})
        headers, body = headers_of(scope), await http.read_body(receive)
        if body is None:
            return http.json_error(413, "too_large", "request body over 1 MiB")
        try:
            return await http.respond(
                self.server, scope, headers, body, lambda: self._http_identity(scope, headers)
            )
        except Refusal as failed:  # the identity hook failed
            return http.json_error(500, "internal_error", failed.reason)

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Start the heartbeat and the idle reaper (once; on the running loop)."""
        if self._started:
            return
        self._started = True
        settings = self.server.settings
        if settings.log_file is not None:
            self._log_handlers = logs.configure(
                settings.log_file, settings.log_level, settings.log_max_bytes,
                settings.log_backups, stderr=False,
            )  # fmt: skip
        pty.become_subreaper()
        self._tasks = [
            asyncio.create_task(self.server.reaper()),
            asyncio.create_task(self.server.heartbeat()),
        ]
        self._drain_on_signals()

    async def drain(self) -> None:
        """Stop accepting, close every client with 1001, end the shells after the drain grace."""
        await self.server.drain()
        await self.server.wait_drained()

    async def stop(self) -> None:
        """Close every client with 1001 (if not done yet), end every shell, stop the timers."""
        if not self._started:
            return
        self._started = False
        self._restore_signals()
        self.server.begin_drain()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.server.shutdown()
        logs.remove(self._log_handlers)

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: object = None) -> AsyncIterator[None]:
        """For a host application's own lifespan (``FastAPI(lifespan=term.lifespan)``), since
        Starlette does not forward lifespan events to mounted applications."""
        self.start()
        try:
            yield
        finally:
            await self.stop()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    self.start()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # ---------------------------------------------------------------- draining on signals
    def _drain_on_signals(self) -> None:
        """Under an ASGI server that handles SIGTERM/SIGINT with ``signal.signal`` (uvicorn),
        drain first and hand the signal on once the shells ended: the server's own shutdown
        would close every WebSocket with 1012 (``restart``) instead of 1001."""
        if threading.current_thread() is not threading.main_thread():
            return
        self._loop = asyncio.get_running_loop()  # the handler runs outside it
        for signum in _SIGNALS:
            previous = signal.getsignal(signum)
            noop = getattr(previous, "__name__", "") == "_sighandler_noop"  # asyncio's own
            if callable(previous) and previous is not signal.default_int_handler and not noop:
                self._previous_handlers[signum] = previous
                signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        previous = self._previous_handlers.get(signum)
        if previous is None:
            return
        if self._signalled:  # a second signal: no more waiting
            previous(signum, frame)
            return
        self._signalled = True
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._drain_then, previous, signum)

    def _drain_then(self, previous: SignalHandler, signum: int) -> None:
        async def drain_then_forward() -> None:
            logs.log_event("shutdown", reason="signal", grace=self.server.settings.drain_grace)
            try:
                await self.drain()
            finally:
                previous(signum, None)

        self._tasks.append(asyncio.get_running_loop().create_task(drain_then_forward()))

    def _restore_signals(self) -> None:
        for signum, previous in self._previous_handlers.items():
            if signal.getsignal(signum) == self._on_signal:
                signal.signal(signum, previous)
        self._previous_handlers.clear()

    # ---------------------------------------------------------------- identity
    async def _hook_identity(self, scope: Scope) -> Identity | None:
        """The hook's answer; a hook that raises or answers something else is refused with
        1011 / HTTP 500 (and logged), never a traceback to the client."""
        assert self._identify is not None
        found: object
        try:
            found = self._identify(scope)
            if inspect.isawaitable(found):
                found = await found
        except Exception as exc:
            found = exc
        if found is None or isinstance(found, Identity):
            return found
        self.server.log("error", where="identify", reason=type(found).__name__)
        raise Refusal(CloseCode.INTERNAL_ERROR, "identity check failed")

    async def _http_identity(
        self, scope: Scope, headers: Headers
    ) -> Identity | http.RetryAfter | None:
        if self._identify is not None:
            return await self._hook_identity(scope)
        server, address = self.server, client_address(self.server, scope, headers)
        retry_after = server.login_retry_after(address)
        if retry_after is not None:
            return http.RetryAfter(retry_after)
        return server.identify(headers, cookies_of(headers), query_of(scope), address)

    # ---------------------------------------------------------------- /ws/terminal
    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        server, headers = self.server, headers_of(scope)
        if route_of(scope) != "/ws/terminal":
            await send({"type": "websocket.close", "code": 1000})  # before accepting: HTTP 403
            return
        address, upgrade = client_address(server, scope, headers), upgrade_of(scope, headers)
        host: HostIdentity | None = None
        try:
            if not server.host_allowed(headers):
                raise Refusal(CloseCode.FORBIDDEN, "host not allowed")
            if self._identify is not None:
                host = HostIdentity(await self._hook_identity(scope))
        except Refusal as refusal:
            server.on_refused(refusal, address)
            await send(accept_message(upgrade))
            reason = clip_reason(refusal.reason)
            await send({"type": "websocket.close", "code": refusal.code, "reason": reason})
            return
        terminal = AsgiTerminal(server, send, address)
        with server.serving(terminal):
            await terminal.run(receive, upgrade, host)


def _slashed(scope: Scope) -> str:
    query = bytes(scope.get("query_string") or b"").decode("latin-1")
    return str(scope.get("path") or "") + "/" + (f"?{query}" if query else "")
