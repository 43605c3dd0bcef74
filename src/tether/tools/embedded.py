"""An embedded ``tether serve`` for the tools that need a server when given no URL
(``tether check``, ``tether load``, ``tether stress``, the benchmarks): a subprocess on a free
loopback port with a temporary HOME and project directory, stopped (and cleaned up) at the end.

It runs with ``--auth none`` (the default is a generated token the tools would have to find): it
is ours alone for the run, on loopback, and its shells run ``bash`` in a throw-away directory.
Extra arguments, such as ``--auth token``, override it. Another interpreter (an older tether, for
side-by-side benchmarks) gets no ``--auth``: its default was ``none``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
from collections import deque
from pathlib import Path

from tether.errors import ConnectFailed

SHELL = "bash --norc --noprofile"


class EmbeddedServer:
    """``python -m tether serve`` on a free loopback port with a temporary HOME and project."""

    def __init__(self, *extra_args: str, python: str | None = None) -> None:
        self.extra_args = extra_args
        # Another interpreter (e.g. a venv with an older tether, for side-by-side benchmarks).
        self.python = python or sys.executable
        self._auth = ("--auth", "none") if python is None else ()
        self.base_url = ""
        self.process: asyncio.subprocess.Process | None = None
        self.workdir = Path(tempfile.mkdtemp(prefix="tether-load-"))
        self.output: deque[str] = deque(maxlen=200)
        self._pump: asyncio.Task[None] | None = None

    async def __aenter__(self) -> EmbeddedServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def command(self) -> list[str]:
        project = self.workdir / "project"
        project.mkdir(exist_ok=True)
        return [
            self.python, "-m", "tether", "serve",
            "--host", "127.0.0.1", "--port", "0",
            "--project", f"default={project}",
            "--shell", SHELL,
            "--log-file", str(self.workdir / "server.log"),
            *self._auth,
            *self.extra_args,
        ]  # fmt: skip

    def environment(self) -> dict[str, str]:
        home = self.workdir / "home"
        home.mkdir(exist_ok=True)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)}
        return env | {"LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1"}

    async def start(self, timeout: float = 30) -> None:
        self.process = await asyncio.create_subprocess_exec(
            *self.command(),
            env=self.environment(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        assert self.process.stdout is not None
        try:
            async with asyncio.timeout(timeout):
                while line := (await self.process.stdout.readline()).decode(errors="replace"):
                    self.output.append(line)
                    if line.startswith("tether listening on "):
                        self.base_url = line.removeprefix("tether listening on ").strip()
                        break
        except TimeoutError:
            pass
        if not self.base_url:
            await self.stop()
            raise ConnectFailed("the embedded server did not start: " + "".join(self.output)[-500:])
        self._pump = asyncio.create_task(self._drain(self.process.stdout))

    async def _drain(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            self.output.append(line.decode(errors="replace"))

    async def stop(self) -> None:
        """SIGTERM, wait (SIGKILL after 20 s), remove the temporary directory."""
        process, self.process = self.process, None
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 20)
            except TimeoutError:
                process.kill()
                await process.wait()
        if self._pump is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._pump, 5)
        shutil.rmtree(self.workdir, ignore_errors=True)
