"""The aiohttp application: routes, JSON errors, the idle reaper, startup and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path

from aiohttp import web

from tether import api, logs, pty
from tether.config import Settings
from tether.server import SERVER_KEY, Server
from tether.store import SessionStore
from tether.ws import handle_terminal

STATIC_DIR = Path(str(resources.files("tether").joinpath("web/static")))
REAPER_KEY = web.AppKey("reaper", asyncio.Task)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every HTTP error into the JSON error body of PROTOCOL.md section 9."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = exc.reason.lower().replace(" ", "_") if exc.reason else "error"
        return api.json_error(exc.status, code, exc.reason or "error")
    except Exception as exc:  # the one place unexpected errors become a 500
        request.app[SERVER_KEY].log("error", path=request.path, reason=type(exc).__name__)
        return api.json_error(500, "internal_error", "internal server error")


async def index(request: web.Request) -> web.StreamResponse:
    page = STATIC_DIR / "index.html"
    if not page.is_file():
        return api.json_error(503, "not_built", "web assets are not built: run ./dev setup")
    return web.FileResponse(page, headers={"Cache-Control": "no-cache"})


async def _reaper(server: Server) -> None:
    interval = max(0.05, min(30.0, server.settings.idle_timeout / 4))
    while True:
        await asyncio.sleep(interval)
        server.manager.reap_idle()


def create_app(settings: Settings, store: SessionStore | None = None) -> web.Application:
    """A ready-to-run application for ``settings``."""
    app = web.Application(middlewares=[json_errors], client_max_size=1024 * 1024)
    server = Server(settings, store)
    app[SERVER_KEY] = server
    app.router.add_get("/ws/terminal", handle_terminal)
    app.router.add_get("/healthz", api.healthz)
    app.router.add_get("/readyz", api.readyz)
    app.router.add_get("/api/projects", api.projects)
    app.router.add_get("/api/sessions", api.list_sessions)
    app.router.add_delete("/api/sessions/{key}", api.kill_session)
    app.router.add_post("/api/sessions/clear", api.clear_sessions)
    app.router.add_post("/api/drain", api.drain)
    app.router.add_get("/stats/sessions", api.stats_sessions)
    app.router.add_get("/stats/circuit-breaker", api.stats_breakers)
    app.router.add_get("/metrics", api.metrics)
    app.router.add_get("/", index)
    if STATIC_DIR.is_dir():
        app.router.add_static("/static", STATIC_DIR, append_version=False)
    app.on_startup.append(_start_background)
    app.on_shutdown.append(_stop)
    return app


async def _start_background(app: web.Application) -> None:
    server: Server = app[SERVER_KEY]
    pty.become_subreaper()
    app[REAPER_KEY] = asyncio.create_task(_reaper(server))


async def _stop(app: web.Application) -> None:
    server: Server = app[SERVER_KEY]
    app[REAPER_KEY].cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await app[REAPER_KEY]
    await server.manager.shutdown()


async def serve(settings: Settings, *, ready: Callable[[str], None] | None = None) -> None:
    """Run until SIGTERM/SIGINT: clients get 1001, every shell is ended and reaped."""
    handlers = logs.configure(
        settings.log_file,
        settings.log_level,
        settings.log_max_bytes,
        settings.log_backups,
        stderr=True,
    )
    app = create_app(settings)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=5)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, settings.port, reuse_address=True)
        await site.start()
        port = runner.addresses[0][1]
        host = settings.host if ":" not in settings.host else f"[{settings.host}]"
        url = f"http://{host}:{port}"
        logs.log_event("listen", url=url, projects=settings.project_ids)
        if ready is not None:
            ready(url)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        logs.log_event("shutdown", reason="signal")
        app[SERVER_KEY].manager.accepting = False
        await app[SERVER_KEY].manager.shutdown()
    finally:
        await runner.cleanup()
        logs.remove(handlers)


def run(settings: Settings) -> None:
    """Blocking entry point of ``tether serve`` (uvloop when installed)."""

    def announce(url: str) -> None:
        sys.stdout.write(f"tether listening on {url}\n")
        sys.stdout.flush()

    try:
        import uvloop

        runner: Callable[..., object] = uvloop.run
    except ImportError:
        runner = asyncio.run
    runner(serve(settings, ready=announce))
