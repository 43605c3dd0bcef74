"""The aiohttp application: routes, JSON errors, the idle reaper, startup and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from tether.errors import Refusal
from tether.protocol.codes import CloseCode
from tether.protocol.localtoken import link as link_with_token
from tether.protocol.messages import SUBPROTOCOL
from tether.server import auth, localtoken, logs, pty, starting
from tether.server.aiohttp_front import api, forward, survive
from tether.server.aiohttp_front.context import SERVER_KEY, client_address, identify, server_of
from tether.server.aiohttp_front.site import GuardedSite
from tether.server.aiohttp_front.ws import handle_terminal
from tether.server.clock import Clock
from tether.server.config import Settings
from tether.server.core import Server
from tether.server.hostcheck import is_loopback_host
from tether.server.starting import Start
from tether.server.store import SessionStore

STATIC_DIR = Path(str(resources.files("tether").joinpath("web/static")))
BACKGROUND_KEY = web.AppKey("background", list)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every HTTP error into the JSON error body of docs/protocol.md, section 9."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = exc.reason.lower().replace(" ", "_") if exc.reason else "error"
        response = api.json_error(exc.status, code, exc.reason or "error")
        if "Retry-After" in exc.headers:  # 429 after failed logins
            response.headers["Retry-After"] = exc.headers["Retry-After"]
        return response
    except Exception as exc:  # the one place unexpected errors become a 500
        server_of(request).log("error", path=request.path, reason=type(exc).__name__)
        return api.json_error(500, "internal_error", "internal server error")


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Before any route: the Host header must name us; probes and metrics may need a credential."""
    server = server_of(request)
    server.pending.settle(request.transport)  # a whole request: no longer a slowloris suspect
    if not server.host_allowed(request.headers):
        return await _refuse_host(server, request)
    settings = server.settings
    routed = request.match_info.http_exception is None  # else 404/405 answers first
    gated = (request.path == "/metrics" and settings.metrics_auth) or (
        request.path in ("/healthz", "/readyz") and settings.healthz_auth
    )
    if routed and gated and identify(request) is None:
        return api.json_error(401, "unauthorized", "missing or invalid credential")
    refused = api.cross_site_refusal(request) if routed else None
    return refused or await handler(request)


async def _refuse_host(server: Server, request: web.Request) -> web.StreamResponse:
    # A browser cannot read the status of a failed upgrade: WebSockets get a 4003 close instead.
    ws = web.WebSocketResponse(protocols=(SUBPROTOCOL,))
    if request.path == "/ws/terminal" and ws.can_prepare(request).ok:
        refusal = Refusal(CloseCode.FORBIDDEN, "host not allowed")
        server.on_refused(refusal, client_address(request))
        await ws.prepare(request)
        await ws.close(code=refusal.code, message=refusal.reason.encode())
        return ws
    return api.json_error(403, "host_not_allowed", "host not allowed")


async def index(request: web.Request) -> web.StreamResponse:
    page = STATIC_DIR / "index.html"
    if not page.is_file():
        return api.json_error(503, "not_built", "web assets are not built: run ./dev setup")
    return web.FileResponse(page, headers={"Cache-Control": "no-cache"})


def create_app(
    settings: Settings,
    store: SessionStore | None = None,
    *,
    clock: Clock | None = None,
    server: Server | None = None,
) -> web.Application:
    """A ready-to-run application for ``settings``; ``clock`` (the system's by default) is the
    one every part of the server reads and waits on; ``server``: the core, when made already
    (:mod:`tether.server.starting`)."""
    # keepalive_timeout runs from a connection's start until a whole request arrived (partial
    # headers do not reset it), then between requests: the slowloris deadline (site.py).
    handler_args = {"keepalive_timeout": settings.handshake_timeout}
    app = web.Application(
        middlewares=[json_errors, guard], client_max_size=1024 * 1024, handler_args=handler_args
    )
    server = server or Server(settings, store, clock=clock)
    app[SERVER_KEY] = server
    app.router.add_get("/ws/terminal", handle_terminal)
    app.router.add_get("/healthz", api.healthz)
    app.router.add_get("/readyz", api.readyz)
    app.router.add_get("/api/projects", api.projects)
    app.router.add_get("/api/sessions", api.list_sessions)
    app.router.add_get("/api/sessions/{key}", api.get_session)
    app.router.add_delete("/api/sessions/{key}", api.kill_session)
    app.router.add_get("/api/sessions/{key}/recording", api.get_recording)
    app.router.add_post("/api/sessions/clear", api.clear_sessions)
    app.router.add_get("/api/me/sessions", api.my_sessions)
    app.router.add_patch("/api/me/sessions/{key}", api.rename_my_session)
    app.router.add_delete("/api/me/sessions/{key}", api.end_my_session)
    app.router.add_post("/api/drain", api.drain)
    app.router.add_post("/api/restart", survive.restart)
    app.router.add_get("/stats/sessions", api.stats_sessions)
    app.router.add_get("/stats/circuit-breaker", api.stats_breakers)
    app.router.add_get("/metrics", api.metrics)
    app.router.add_get("/", index)
    if STATIC_DIR.is_dir():
        app.router.add_static("/static", STATIC_DIR, append_version=False)
    app.on_startup.append(_start_background)
    app.on_shutdown.append(_stop)
    app.router.add_get("/stats/cluster", api.stats_cluster)
    if server.cluster is not None:  # node-to-node relays (docs/scaling.md)
        app.on_startup.append(forward.open_session)
        app.on_cleanup.append(forward.close_session)
    return app


async def _start_background(app: web.Application) -> None:
    server: Server = app[SERVER_KEY]
    pty.become_subreaper()
    app[BACKGROUND_KEY] = [
        asyncio.create_task(server.reaper()),
        asyncio.create_task(server.heartbeat()),
    ]


async def _stop(app: web.Application) -> None:
    server: Server = app[SERVER_KEY]
    for task in app[BACKGROUND_KEY]:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await server.shutdown()


class RedactParserErrors(logging.Filter):
    """aiohttp logs a malformed request with the parser's message, which quotes the request
    line, and with it any ``token`` in the query: keep the peer and the kind of error only."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            record.msg, record.args = "%s: %s", (record.getMessage(), type(error).__name__)
            record.exc_info, record.exc_text = None, None
        return True


_AIOHTTP_SERVER_LOGGER = logging.getLogger("aiohttp.server")


async def serve(
    start: Start,
    *,
    ready: Callable[[str], None] | None = None,
    show_link: Callable[[str], None] | None = None,
    stopping: Callable[[int, float], None] | None = None,
) -> None:
    """Run until SIGTERM/SIGINT: clients get 1001, every shell is ended and reaped.

    ``start``: what :func:`tether.server.starting.begin` made (the core, the log, what a
    previous process left, perhaps a listener already serving the direct front). ``ready`` gets
    the URL once listening; with ``--auth local``, ``show_link`` then gets the page's address
    carrying the token; ``stopping`` gets the number of sessions and the drain grace when a
    signal stops a server that has sessions.
    """
    settings, server = start.settings, start.server
    app = create_app(settings, server=server)
    redact = RedactParserErrors()
    _AIOHTTP_SERVER_LOGGER.addFilter(redact)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=5)
    try:
        await runner.setup()
        inherited = start.inherited
        site = GuardedSite(
            runner,
            settings.host,
            settings.port,
            reuse_address=True,
            ssl_context=start.ssl_context,
            pending=server.pending,
            terminals=server,
            sock=inherited[0] if inherited else None,
            listener=start.listener,
            backlog=starting.LISTEN_BACKLOG,
        )
        await site.start()
        start.listener = None  # the site's now: it stops it
        survive.start(server, site, settings)
        port = runner.addresses[0][1]
        host = settings.host if ":" not in settings.host else f"[{settings.host}]"
        url = f"{'https' if start.ssl_context else 'http'}://{host}:{port}"
        logs.log_event("listen", url=url, projects=settings.project_ids, auth=settings.auth)
        limits = server.capacity
        level = logging.WARNING if limits.clamped else logging.INFO  # --max-sessions lowered
        logs.log_at(level, "limits", **limits.fields())
        await server.join_cluster(url, port)  # with --redis-url: register, renew
        if settings.auth == "none" and not is_loopback_host(settings.host):
            logs.log_event("insecure", reason="no authentication on a non-loopback address")
        if settings.allow_same_user_shells and settings.auth in ("token", "jwt"):
            logs.log_event("insecure", reason="owners' shells share one account")
        # Before saying it listens: a signal from then on stops it gracefully.
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        # systemctl reload: tokens, keys, deny list and user map again; sessions stay.
        loop.add_signal_handler(signal.SIGHUP, server.reload)
        start.release_signals()  # a signal that came before now: upgrade, reload or stop
        if ready is not None:
            ready(url)
        _publish_local_token(server, url, port, show_link)
        await stop.wait()
        stop.clear()
        # SIGTERM drains: no new sessions, clients are told 1001, shells end after the drain
        # grace (a second signal cuts the grace short).
        logs.log_event("shutdown", reason="signal", grace=server.settings.drain_grace)
        if stopping is not None and server.manager.sessions:  # what the drain waits for
            stopping(len(server.manager.sessions), server.settings.drain_grace)
        await server.drain()
        await _first_of(stop.wait(), server.wait_drained())
        await server.shutdown()
    finally:
        await runner.cleanup()
        start.close()
        _AIOHTTP_SERVER_LOGGER.removeFilter(redact)


def _publish_local_token(
    server: Server, url: str, port: int, show_link: Callable[[str], None] | None
) -> None:
    # With --auth local the token is stored for this port (once bound: the port may have been
    # 0), where `tether attach` and the other commands of this account find it.
    if isinstance(server.authenticator, auth.LocalAuth):
        localtoken.publish(port, server.authenticator.token)
        if show_link is not None:
            show_link(link_with_token(url, server.authenticator.token))


async def _first_of(*waits: Awaitable[Any]) -> None:
    """Return when the first of ``waits`` is done; the others are cancelled."""
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
