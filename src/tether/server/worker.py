"""``tether serve``'s worker: its start (:mod:`tether.server.starting`), then aiohttp's front.

aiohttp is imported here, after the start — after an upgrade's or a crash's burst of resumes,
which the direct front serves alone (docs/architecture.md, "Surviving the server process").
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable

from tether.server.config import Settings
from tether.server.starting import begin, listen_early
from tether.startup import no_collection


def run(settings: Settings) -> None:
    """Blocking entry point of ``tether serve``'s worker (uvloop when installed)."""

    def announce(url: str) -> None:
        sys.stdout.write(f"tether listening on {url}\n")
        sys.stdout.flush()

    def show_link(link: str) -> None:
        sys.stdout.write(f"{link}\n")
        sys.stdout.flush()

    def say_stopping(sessions: int, grace: float) -> None:
        sys.stderr.write(
            f"tether: stopping: {sessions} session(s) end in {grace:g} s "
            "(a second Ctrl-C or SIGTERM ends them now)\n"
        )
        sys.stderr.flush()

    try:
        import uvloop

        runner: Callable[..., object] = uvloop.run
    except ImportError:
        runner = asyncio.run

    async def serve() -> None:
        start = begin(settings)
        try:
            await listen_early(start)
            with no_collection():  # as the rest of the start (cli/serve.py)
                from tether.server.aiohttp_front.app import serve as serve_front
        except BaseException:
            start.close()
            raise
        await serve_front(start, ready=announce, show_link=show_link, stopping=say_stopping)

    runner(serve())
