"""Start real tether servers for tests: as a subprocess (``start_server``) or in this process
(``inprocess_server``). Shells are ``bash --norc --noprofile`` with a temporary HOME; both
run with ``--auth none`` unless a test asks for another mode (the default, ``local``, stores a
token in the user's runtime directory), and with ``--allow-same-user-shells`` (``token`` and
``jwt`` owners here share the test's account) unless ``same_user_shells=False``."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from tether.server.aiohttp_front.app import create_app
from tether.server.aiohttp_front.context import SERVER_KEY
from tether.server.aiohttp_front.site import GuardedSite
from tether.server.clock import Clock, FakeClock
from tether.server.config import build_settings
from tether.server.core import Server

SHELL = "bash --norc --noprofile"
READY_TIMEOUT = 20.0


def controlled_environment(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A minimal, controlled environment (root's ~/.bashrc here is slow: never read it)."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "PS1": "$ ",
        "PYTHONUNBUFFERED": "1",
    }
    if extra:
        env.update(extra)
    return env


@dataclass
class ServerProcess:
    """A ``tether serve`` subprocess on 127.0.0.1."""

    args: tuple[str, ...] = ()
    env: Mapping[str, str] | None = None
    port: int = 0
    project: str = "default"
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="tether-test-")))
    process: subprocess.Popen[bytes] | None = None
    output: list[str] = field(default_factory=list)
    same_user_shells: bool = True
    # The crash-survival supervisor (docs/operations.md) is on by default in `tether serve`;
    # tests that look at the serving process's children and pid start it only when they ask.
    supervise: bool = False
    # The `tether` to run (tests of an installed wheel); empty: this interpreter's `-m tether`.
    program: tuple[str, ...] = ()
    # RLIMIT_NOFILE (soft, hard) the server starts with (tests of its limits); None: ours.
    nofile: tuple[int, int] | None = None

    @property
    def home(self) -> Path:
        return self.workdir / "home"

    @property
    def project_dir(self) -> Path:
        return self.workdir / "project"

    @property
    def log_file(self) -> Path:
        return self.workdir / "logs" / "terminal-websocket.log"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/terminal"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> ServerProcess:
        self.home.mkdir(parents=True, exist_ok=True)
        self.project_dir.mkdir(parents=True, exist_ok=True)
        has_project = any(a == "--project" or a.startswith("--project=") for a in self.args)
        command = [
            *(self.program or (sys.executable, "-m", "tether")),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--shell",
            SHELL,
            "--log-file",
            str(self.log_file),
            "--kill-grace",
            "1",
            "--drain-grace",
            "0.2",
            "--auth",
            "none",
        ]
        if self.same_user_shells:
            command.append("--allow-same-user-shells")
        if not self.supervise:
            command.append("--no-supervise")
        if not has_project:
            command += ["--project", f"{self.project}={self.project_dir}"]
        command += list(self.args)
        self.process = subprocess.Popen(
            command,
            cwd=self.workdir,
            env=controlled_environment(self.home, self.env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=self._set_nofile if self.nofile is not None else None,
        )
        self._wait_ready()
        return self

    def _set_nofile(self) -> None:
        assert self.nofile is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, self.nofile)

    def _wait_ready(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        deadline = time.monotonic() + READY_TIMEOUT
        stream = self.process.stdout
        buffer = b""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([stream], [], [], 0.1)
            if not ready:
                if self.process.poll() is not None:
                    break
                continue
            chunk = os.read(stream.fileno(), 65536)
            if not chunk:
                break
            buffer += chunk
            for line in buffer.decode(errors="replace").splitlines():
                if line.startswith("tether listening on "):
                    self.port = int(line.rsplit(":", 1)[1])
                    self.output.append(buffer.decode(errors="replace"))
                    self._drain_output()
                    return
        self.stop()
        raise RuntimeError(f"server did not start: {buffer.decode(errors='replace')[-2000:]}")

    def _drain_output(self) -> None:
        # Keep reading the server's output in a thread so that a full pipe never blocks it.
        import threading

        assert self.process is not None and self.process.stdout is not None
        stream = self.process.stdout

        def pump() -> None:
            for raw in iter(lambda: stream.readline(), b""):
                self.output.append(raw.decode(errors="replace"))

        threading.Thread(target=pump, daemon=True).start()

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM and wait; SIGKILL if it does not end in time. Returns the exit status."""
        if self.process is None:
            return None
        process, self.process = self.process, None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()
        return process.returncode

    def restart(self) -> ServerProcess:
        self.stop()
        return self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def start_server(
    *extra_args: str, env: Mapping[str, str] | None = None, same_user_shells: bool = True
) -> ServerProcess:
    """Start ``tether serve`` on a free loopback port; use as a context manager or ``cleanup()``."""
    return ServerProcess(args=tuple(extra_args), env=env, same_user_shells=same_user_shells).start()


@dataclass
class InProcessServer:
    """A server running on this test's event loop, for tests that look inside it."""

    server: Server
    port: int
    workdir: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/terminal"

    @property
    def clock(self) -> FakeClock:
        """The server's clock, for a test that started it with ``clock=FakeClock()``."""
        assert isinstance(self.server.clock, FakeClock), "start it with clock=FakeClock()"
        return self.server.clock


@contextlib.asynccontextmanager
async def inprocess_server(
    *, clock: Clock | None = None, **settings: Any
) -> AsyncIterator[InProcessServer]:
    """Run an application in this event loop on a free port; ends every shell on exit.

    With ``clock=FakeClock()`` time moves only when the test says (``srv.clock.advance``).
    """
    workdir = Path(tempfile.mkdtemp(prefix="tether-inproc-"))
    home = workdir / "home"
    project = workdir / "project"
    home.mkdir()
    project.mkdir()
    settings.setdefault("projects", [f"default={project}"])
    settings.setdefault("shell", SHELL)
    settings.setdefault("log_file", "-")
    settings.setdefault("kill_grace", 1)
    settings.setdefault("auth", "none")
    settings.setdefault("allow_same_user_shells", True)
    previous_home = os.environ.get("HOME")
    os.environ["HOME"] = str(home)
    app = create_app(build_settings(settings, cwd=workdir), clock=clock)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=5)
    await runner.setup()
    server = app[SERVER_KEY]  # the site users get: the direct front serves /ws/terminal
    site = GuardedSite(runner, "127.0.0.1", 0, pending=server.pending, terminals=server)
    await site.start()
    try:
        yield InProcessServer(app[SERVER_KEY], runner.addresses[0][1], workdir)
    finally:
        await runner.cleanup()
        if previous_home is not None:
            os.environ["HOME"] = previous_home
        shutil.rmtree(workdir, ignore_errors=True)
        await asyncio.sleep(0)


async def eventually(
    check: Callable[[], Any], timeout: float = 5.0, what: str = "condition never held"
) -> Any:
    """Ask ``check()`` (sync, or async) until its answer is truthy, and return that answer;
    fail with ``what`` after ``timeout`` real seconds. For state another process or the loop's
    own callbacks change, where there is no event to wait on."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        answer = check()
        if inspect.isawaitable(answer):
            answer = await answer
        if answer:
            return answer
        assert loop.time() < deadline, what
        await asyncio.sleep(0.02)


def poll_until(
    check: Callable[[], Any],
    timeout: float = 5.0,
    what: str | Callable[[], str] = "condition never held",
) -> Any:
    """:func:`eventually` for synchronous tests (tmux screens, files, another process's
    state): ask ``check()`` until its answer is truthy, and return that answer; fail with
    ``what`` (a string, or a callable for a message built at the end) after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        answer = check()
        if answer:
            return answer
        assert time.monotonic() < deadline, what() if callable(what) else what
        time.sleep(0.02)


def server_stats(base_url: str) -> dict[str, Any]:
    """``GET /stats/sessions`` (blocking: call it through ``asyncio.to_thread``)."""
    with urllib.request.urlopen(base_url + "/stats/sessions", timeout=10) as response:
        data: dict[str, Any] = json.load(response)
    return data


async def wait_generation(base_url: str, generation: int, timeout: float = 30.0) -> dict[str, Any]:
    """The server's stats once generation ``generation`` (or a later one) serves."""

    async def serving() -> dict[str, Any] | None:
        try:
            facts = await asyncio.to_thread(server_stats, base_url)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return None
        return facts if facts["server"]["generation"] >= generation else None

    answer: dict[str, Any] = await eventually(
        serving, timeout, f"generation {generation} not serving within {timeout} s"
    )
    return answer


@contextlib.contextmanager
def server_process(
    *extra_args: str, env: Mapping[str, str] | None = None
) -> Iterator[ServerProcess]:
    with start_server(*extra_args, env=env) as server:
        yield server
