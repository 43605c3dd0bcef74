"""Helpers for the browser tests: a loopback proxy on its own thread, a tmux reference terminal."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

from tether.tools.proxy import TcpProxy

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("TETHER_CHROMIUM", "/usr/bin/chromium"))
STATIC = ROOT / "src" / "tether" / "web" / "static"
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


class ThreadedProxy:
    """tether's TcpProxy, run on an event loop in a thread, so that sync Playwright code can
    cut the network (`cut`, `restore`) or drop connections (`abort_all`) between page and server."""

    def __init__(self, target_port: int) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._proxy = TcpProxy("127.0.0.1", target_port)
        self._call(self._proxy.start())

    @property
    def port(self) -> int:
        return self._proxy.port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cut(self) -> None:
        self._loop.call_soon_threadsafe(self._proxy.cut)

    def abort_all(self) -> None:
        self._loop.call_soon_threadsafe(self._proxy.abort_all)

    def restore(self) -> None:
        self._call(self._proxy.restore())

    def close(self) -> None:
        self._call(self._proxy.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)


@contextlib.contextmanager
def tmux_reference(
    command: str, cols: int, rows: int, cwd: Path, env: dict[str, str]
) -> Iterator[Callable[[], list[str]]]:
    """Run `command` in a detached tmux of exactly cols×rows on a private socket; yields a
    function that captures the screen as lines. The tmux server is killed on exit."""
    tmux = shutil.which("tmux")
    assert tmux, "tmux is needed for the reference screen"
    socket = f"tether-test-{uuid.uuid4().hex[:10]}"
    config = cwd / f"{socket}.conf"
    config.write_text("set -g status off\n")
    base = [tmux, "-L", socket, "-f", str(config)]
    subprocess.run(
        [*base, "new-session", "-d", "-x", str(cols), "-y", str(rows), command],
        check=True,
        cwd=cwd,
        env=env,
        timeout=10,
    )

    def capture() -> list[str]:
        result = subprocess.run(
            [*base, "capture-pane", "-p", "-t", "0"], check=True, capture_output=True, timeout=10
        )
        lines = result.stdout.decode().split("\n")[:rows]
        return [line.rstrip() for line in lines] + [""] * (rows - len(lines))

    try:
        yield capture
    finally:
        subprocess.run([*base, "kill-server"], capture_output=True, timeout=10)
        time.sleep(0.1)
