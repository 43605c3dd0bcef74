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
import base64
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
from urllib.parse import urlencode, urlsplit

import aiohttp
import psutil

from tether.client import websocket_url

try:  # websockets' C unmasking (its pure-Python one where the extension is not built)
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover
    from websockets.utils import apply_mask
from tether.protocol.messages import SUBPROTOCOL
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


class LightLink(Link):
    """Either server through the herd's light client (``--client light``: an asyncio protocol
    over ``websockets``' sans-I/O client, :class:`bench.herd.LightWire`). The same client for
    both servers, and far less of the measured time than aiohttp's: what a latency figure then
    measures is mostly the server and the kernel, as with a browser's native client."""

    def __init__(self, terminado: bool) -> None:
        self.terminado = terminado
        self.chunks: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.wire: Any = None

    @classmethod
    async def open(cls, url: str, terminado: bool) -> LightLink:
        from bench.herd import LightWire  # bench.herd imports the workloads, which import this

        link = cls(terminado)
        parsed = urlsplit(url)
        link.wire = LightWire(link, url)  # type: ignore[arg-type]
        loop = asyncio.get_running_loop()
        await loop.create_connection(lambda: link.wire, parsed.hostname, parsed.port)
        return link

    # what the wire reports
    def on_output(self, _wire: Any, data: bytes) -> None:
        self.chunks.put_nowait(data)

    def on_text(self, _wire: Any, text: str) -> None:
        if self.terminado:
            kind, *rest = json.loads(text)
            if kind == "stdout":
                self.chunks.put_nowait(str(rest[0]).encode())
            elif kind == "disconnect":
                self.chunks.put_nowait(None)

    def on_closed(self, _wire: Any, _code: int, _reason: str) -> None:
        self.chunks.put_nowait(None)

    # the Link
    async def send(self, data: bytes) -> None:
        self.wire.send(json.dumps(["stdin", data.decode()]) if self.terminado else data)

    async def receive(self) -> bytes:
        chunk = await self.chunks.get()
        if chunk is None:
            self.chunks.put_nowait(None)
            raise EOFError("closed")
        return chunk

    async def close(self) -> None:
        self.wire.close()


class RawLink(Link):
    """Either server through a client written by hand (``--client raw``): the handshake and the
    frames on a non-blocking socket (``loop.sock_*``), no protocol object, no task. Next to none
    of the measured time is then the client's: the figure is the server's and the kernel's."""

    def __init__(self, sock: socket.socket, terminado: bool, buffered: bytes) -> None:
        self.sock = sock
        self.terminado = terminado
        self.buffer = bytearray(buffered)
        self.closed = False

    @classmethod
    async def open(cls, url: str, terminado: bool, subprotocol: str | None = None) -> RawLink:
        parts, loop = urlsplit(url), asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            await loop.sock_connect(sock, (parts.hostname or "127.0.0.1", parts.port or 80))
            key = base64.b64encode(os.urandom(16)).decode()
            target = parts.path + (f"?{parts.query}" if parts.query else "")
            offer = f"Sec-WebSocket-Protocol: {subprotocol}\r\n" if subprotocol else ""
            request = (
                f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                f"Sec-WebSocket-Version: 13\r\n{offer}\r\n"
            )
            await loop.sock_sendall(sock, request.encode())
            received = b""
            while b"\r\n\r\n" not in received:
                chunk = await loop.sock_recv(sock, 65536)
                if not chunk:
                    raise ConnectionError("closed during the upgrade")
                received += chunk
        except BaseException:
            sock.close()
            raise
        head, _, rest = received.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            sock.close()
            raise ConnectionError(head.split(b"\r\n", 1)[0].decode(errors="replace"))
        return cls(sock, terminado, rest)

    def _next_frame(self) -> tuple[int, bytes] | None:
        """The next whole (unmasked, unfragmented) server frame in the buffer, if one is."""
        buffer = self.buffer
        if len(buffer) < 2:
            return None
        length, at = buffer[1] & 0x7F, 2
        if length == 126:
            if len(buffer) < 4:
                return None
            length, at = int.from_bytes(buffer[2:4], "big"), 4
        elif length == 127:
            if len(buffer) < 10:
                return None
            length, at = int.from_bytes(buffer[2:10], "big"), 10
        if len(buffer) < at + length:
            return None
        opcode, payload = buffer[0] & 0x0F, bytes(buffer[at : at + length])
        del buffer[: at + length]
        return opcode, payload

    async def receive(self) -> bytes:
        loop = asyncio.get_running_loop()
        while not self.closed:
            frame = self._next_frame()
            if frame is None:
                chunk = await loop.sock_recv(self.sock, 65536)
                if not chunk:
                    break
                self.buffer += chunk
                continue
            opcode, payload = frame
            if opcode == 0x8:
                break
            if opcode == 0x9:
                await self._send(0xA, payload)
            elif opcode == 0x2 and not self.terminado:
                return payload
            elif opcode == 0x1 and self.terminado:
                kind, *rest = json.loads(payload)
                if kind == "stdout":
                    return str(rest[0]).encode()
                if kind == "disconnect":
                    break
        self.closed = True
        raise EOFError("closed")

    async def _send(self, opcode: int, payload: bytes) -> None:
        length = len(payload)
        if length < 126:
            header = bytes([0x80 | opcode, 0x80 | length])
        elif length < 65536:
            header = bytes([0x80 | opcode, 0x80 | 126]) + length.to_bytes(2, "big")
        else:
            header = bytes([0x80 | opcode, 0x80 | 127]) + length.to_bytes(8, "big")
        mask = os.urandom(4)
        masked = apply_mask(payload, mask)
        await asyncio.get_running_loop().sock_sendall(self.sock, header + mask + masked)

    async def send(self, data: bytes) -> None:
        if self.terminado:
            await self._send(0x1, json.dumps(["stdin", data.decode()]).encode())
        else:
            await self._send(0x2, data)

    async def close(self) -> None:
        with contextlib.suppress(OSError):
            await self._send(0x8, (1000).to_bytes(2, "big"))
        self.closed = True
        self.sock.close()


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
    client = "aiohttp"  # or "light": the client the links use (--client)

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

    def cpu_ns(self) -> int:
        """The server's CPU time in nanoseconds (the scheduler's count: finer than the clock
        ticks of :meth:`cpu_seconds`, for a cost per keystroke)."""
        with open(f"/proc/{self.process().pid}/schedstat") as stat:
            return int(stat.read().split()[0])

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
        if self.client == "light":
            link = await LightLink.open(f"{self.url}?{urlencode(params)}", terminado=False)
            return link, params["session"]
        if self.client == "raw":
            url = f"{self.url}?{urlencode(params)}"
            return await RawLink.open(url, False, SUBPROTOCOL), params["session"]
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
        if self.client == "light":
            return await LightLink.open(self.url + name, terminado=True), name
        if self.client == "raw":
            return await RawLink.open(self.url + name, terminado=True), name
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
    client: str = "aiohttp",
) -> Target:
    """``tether``, ``asgi``, ``terminado``, ``pty``, or a tether variant named by
    ``--python NAME=PATH`` (another venv's tether: bench/baseline.sh) and/or
    ``--serve-args NAME=ARGS``."""
    pythons, extra_args = pythons or {}, extra_args or {}
    target: Target
    if name == "tether" or name in pythons or name in extra_args:
        args = (*tether_args, *extra_args.get(name, ()))
        target = TetherTarget(*args, shell=shell, python=pythons.get(name), name=name)
    elif name in FIXED_TARGETS:
        target = FIXED_TARGETS[name](shell)
    else:
        raise ValueError(name)
    target.client = client
    return target


def describe(target: Target) -> dict[str, Any]:
    return {"name": target.name, "replays": target.replays}
