"""The three things the bench measures, behind one interface.

- ``tether``: ``python -m tether serve`` (tether.tools.embedded.EmbeddedServer), protocol tether.v1.
- ``terminado``: bench/terminado_server.py (tornado + terminado's NamedTermManager) in a subprocess,
  with the same shell and a temporary HOME; JSON ``["stdin", …]`` / ``["stdout", …]`` frames.
- ``asgi``: tether's ASGI front (``tether.asgi``) under a uvicorn subprocess
  (``uvicorn --factory tether.asgi:from_environment``), same settings as ``tether``.
- ``pty``: the floor — the bench process itself spawns the shell on a PTY and reads the master fd
  (``tether.server.pty.spawn``, posix_spawn); no network, no server.

Every target hands out :class:`Link` objects with the same three calls, so the workloads are one
piece of client code for all three.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from tether.client import websocket_url
from tether.server import pty
from tether.tools.embedded import SHELL, EmbeddedServer
from tether.tools.loaduser import Refused, Wire, new_http, session_id

HERE = Path(__file__).resolve().parent


class Link:
    """One terminal connection: send input, receive output chunks (EOFError at the end)."""

    async def send(self, data: bytes) -> None:
        raise NotImplementedError

    async def receive(self) -> bytes:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class TetherLink(Link):
    def __init__(self, wire: Wire) -> None:
        self.wire = wire

    async def send(self, data: bytes) -> None:
        await self.wire.send(data)

    async def receive(self) -> bytes:
        while True:
            item = await self.wire.receive()
            if isinstance(item, bytes):
                return item
            if isinstance(item, Refused):
                raise EOFError(item.code)

    async def close(self) -> None:
        await self.wire.close()


class TerminadoLink(Link):
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    async def send(self, data: bytes) -> None:
        await self.ws.send_str(json.dumps(["stdin", data.decode()]))

    async def receive(self) -> bytes:
        while True:
            message = await self.ws.receive()
            if message.type is not aiohttp.WSMsgType.TEXT:
                raise EOFError(message.type)
            kind, *rest = json.loads(message.data)
            if kind == "stdout":
                return str(rest[0]).encode()
            if kind == "disconnect":
                raise EOFError("disconnect")

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), 5)


class PtyLink(Link):
    """The floor: the shell's PTY master read directly by this process."""

    def __init__(self, process: pty.PtyProcess) -> None:
        self.process = process
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.loop = asyncio.get_running_loop()
        self.loop.add_reader(process.fd, self._on_readable)
        self.closed = False

    def _on_readable(self) -> None:
        try:
            data, end = self.process.read_available(256 * 1024)
        except OSError:
            data, end = b"", True
        if data:
            self.queue.put_nowait(data)
        if end:
            self.loop.remove_reader(self.process.fd)
            self.queue.put_nowait(b"")

    async def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = self.process.write(view)
            view = view[written:]
            if view:
                await asyncio.sleep(0.001)

    async def receive(self) -> bytes:
        data = await self.queue.get()
        if not data:
            raise EOFError("pty")
        return data

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(OSError):
            self.loop.remove_reader(self.process.fd)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        for _ in range(200):
            if self.process.poll_exit() is not None:
                break
            await asyncio.sleep(0.005)
        self.process.close_fds()


class Target:
    """A server (or the floor) the workloads run against."""

    name = "?"
    replays = True  # a re-attach gets buffered output

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def open(self, name: str | None = None) -> tuple[Link, str]:
        """A new terminal (``name=None``) or a re-attach to ``name``; returns (link, name)."""
        raise NotImplementedError

    def process(self) -> psutil.Process:
        """The process whose CPU and memory count as the server's."""
        raise NotImplementedError

    def cpu_seconds(self) -> float:
        times = self.process().cpu_times()
        return float(times.user + times.system)

    def rss(self) -> int:
        return int(self.process().memory_info().rss)


class TetherTarget(Target):
    name = "tether"

    def __init__(
        self, *args: str, shell: str = SHELL, python: str | None = None, name: str = "tether"
    ) -> None:
        # The per-key storm rule (10 attempts in 10 s) would refuse the bench's 30 re-attaches of
        # one session: raised, the same checks still run on every connect.
        limits = ("--max-sessions", "5000", "--idle-timeout", "3600", "--storm-threshold", "100000")
        self.args = (*limits, *args, "--shell", shell)
        self.server: EmbeddedServer | None = None
        self.http: aiohttp.ClientSession | None = None
        self.url = ""
        self.python = python
        self.name = name
        self.worker_pid: int | None = None

    async def start(self) -> None:
        self.server = EmbeddedServer(*self.args, python=self.python)
        await self.server.start()
        self.url = websocket_url(self.server.base_url)
        self.http = new_http()
        # Under a supervisor the serving process is its child: count the worker's CPU and memory
        # (/stats/sessions names it; an older server that does not is its own worker).
        async with self.http.get(self.server.base_url + "/stats/sessions") as response:
            stats = await response.json()
        self.worker_pid = int(stats.get("server", {}).get("pid") or self.server.pid or 0)

    async def stop(self) -> None:
        if self.http is not None:
            await self.http.close()
        if self.server is not None:
            await self.server.stop()

    async def open(self, name: str | None = None) -> tuple[Link, str]:
        assert self.http is not None
        params = {"project": "default", "session": name or session_id()}
        if name is not None:
            params |= {"create": "0", "offset": "0"}
        wire = await Wire.open(self.http, self.url, params, timeout=60)
        if isinstance(wire, Refused):
            raise ConnectionError(f"tether refused: {wire.code} {wire.reason}")
        return TetherLink(wire), params["session"]

    def process(self) -> psutil.Process:
        assert self.worker_pid
        return psutil.Process(self.worker_pid)


async def stop_subprocess(
    http: aiohttp.ClientSession | None, proc: asyncio.subprocess.Process | None, workdir: Path
) -> None:
    """Close the client session, SIGTERM the server (SIGKILL after 20 s), remove its folder."""
    if http is not None:
        await http.close()
    if proc is not None and proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 20)
        except TimeoutError:
            proc.kill()
            await proc.wait()
    shutil.rmtree(workdir, ignore_errors=True)


class AsgiTarget(TetherTarget):
    """The same server behind the ASGI front, under uvicorn (its defaults: uvloop, httptools,
    the websockets sans-I/O protocol); settings as ``TETHER_*`` variables."""

    def __init__(self, shell: str = SHELL) -> None:
        super().__init__(shell=shell, name="asgi")
        self.shell = shell
        self.proc: asyncio.subprocess.Process | None = None
        self.workdir = Path(tempfile.mkdtemp(prefix="bench-asgi-"))

    async def start(self) -> None:
        (self.workdir / "home").mkdir(exist_ok=True)
        (self.workdir / "project").mkdir(exist_ok=True)
        listener = socket.socket()
        # uvicorn takes an --fd socket for a Unix one and leaves Nagle on: accepted sockets
        # inherit TCP_NODELAY from the listener (Linux), else small frames wait 40 ms for ACKs.
        listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(4096)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.workdir / "home"),
            "LANG": "C.UTF-8",
            "TETHER_AUTH": "none",
            "TETHER_PROJECTS": f"default={self.workdir / 'project'}",
            "TETHER_SHELL": self.shell,
            "TETHER_LOG_FILE": str(self.workdir / "server.log"),
            "TETHER_MAX_SESSIONS": "5000",
            "TETHER_IDLE_TIMEOUT": "3600",
            "TETHER_STORM_THRESHOLD": "100000",
        }
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "uvicorn", "--factory", "tether.asgi:from_environment",
            "--fd", str(listener.fileno()), "--no-access-log", "--log-level", "warning",
            cwd=self.workdir, env=env, pass_fds=(listener.fileno(),),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            stdin=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        port = listener.getsockname()[1]
        listener.close()
        base = f"http://127.0.0.1:{port}"
        self.url, self.http = websocket_url(base), new_http()
        for _ in range(600):  # up to 30 s for uvicorn to import and serve
            with contextlib.suppress(aiohttp.ClientError):
                async with self.http.get(base + "/healthz") as response:
                    if response.status == 200:
                        break
            await asyncio.sleep(0.05)
        self.worker_pid = self.proc.pid

    async def stop(self) -> None:
        await stop_subprocess(self.http, self.proc, self.workdir)


class TerminadoTarget(Target):
    name = "terminado"

    def __init__(self, shell: str = SHELL) -> None:
        self.shell = shell
        self.proc: asyncio.subprocess.Process | None = None
        self.workdir = Path(tempfile.mkdtemp(prefix="bench-terminado-"))
        self.http: aiohttp.ClientSession | None = None
        self.url = ""
        self.counter = 0

    async def start(self) -> None:
        home = self.workdir / "home"
        home.mkdir(exist_ok=True)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "LANG": "C.UTF-8",
        }
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, str(HERE / "terminado_server.py"), *self.shell.split(),
            cwd=self.workdir, env=env, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL, stdin=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = (await asyncio.wait_for(self.proc.stdout.readline(), 30)).decode()
        if not line.startswith("terminado listening on "):
            raise RuntimeError(f"terminado did not start: {line!r}")
        self.url = f"ws://127.0.0.1:{int(line.split()[-1])}/websocket/"
        self.http = new_http()

    async def stop(self) -> None:
        await stop_subprocess(self.http, self.proc, self.workdir)

    async def open(self, name: str | None = None) -> tuple[Link, str]:
        assert self.http is not None
        if name is None:
            self.counter += 1
            name = f"t{self.counter}x{os.urandom(4).hex()}"
        ws = await self.http.ws_connect(self.url + name, max_msg_size=0, timeout=60)
        return TerminadoLink(ws), name

    def process(self) -> psutil.Process:
        assert self.proc is not None
        return psutil.Process(self.proc.pid)


class PtyTarget(Target):
    name = "pty"
    replays = False

    def __init__(self, shell: str = SHELL) -> None:
        self.shell = shell
        self.workdir = Path(tempfile.mkdtemp(prefix="bench-pty-"))
        home = self.workdir / "home"
        home.mkdir()
        self.env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)}
        self.env |= {"LANG": "C.UTF-8", "TERM": "xterm-256color", "PS1": "$ "}

    async def stop(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)

    async def open(self, name: str | None = None) -> tuple[Link, str]:
        if name is not None:
            raise NotImplementedError("a bare PTY has no re-attach")
        process = pty.spawn(self.shell.split(), str(self.workdir), self.env, 80, 24)
        return PtyLink(process), str(process.pid)

    def process(self) -> psutil.Process:
        return psutil.Process()


# The targets with a fixed name (each takes the shell); "tether" and its variants are
# named in make_target.
FIXED_TARGETS: dict[str, Callable[[str], Target]] = {
    "asgi": AsgiTarget,
    "terminado": TerminadoTarget,
    "pty": PtyTarget,
}
TARGET_NAMES = ("tether", *FIXED_TARGETS)


def make_target(
    name: str,
    tether_args: tuple[str, ...] = (),
    shell: str = SHELL,
    pythons: dict[str, str] | None = None,
    extra_args: dict[str, tuple[str, ...]] | None = None,
) -> Target:
    """``tether``, ``asgi``, ``terminado``, ``pty``, or a tether variant named by
    ``--python NAME=PATH`` (another venv's tether: bench/baseline.sh) and/or
    ``--serve-args NAME=ARGS``."""
    pythons, extra_args = pythons or {}, extra_args or {}
    if name == "tether" or name in pythons or name in extra_args:
        args = (*tether_args, *extra_args.get(name, ()))
        return TetherTarget(*args, shell=shell, python=pythons.get(name), name=name)
    if name in FIXED_TARGETS:
        return FIXED_TARGETS[name](shell)
    raise ValueError(name)


def describe(target: Target) -> dict[str, Any]:
    return {"name": target.name, "replays": target.replays}
