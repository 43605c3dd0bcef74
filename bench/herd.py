"""The herd of ``bench/capacity.py``: thousands of verified users cut at once, on the server.

The previous herd (``bench.workloads.herd``) ran 4,000 aiohttp clients and the proxy in the
bench's own process, which then used twice the server's CPU: the bench set the pace. Here:

- **the users are light**: one :class:`LightWire` (an :class:`asyncio.Protocol` over the
  sans-I/O ``websockets.client.ClientProtocol``) per connection, the user's state in a plain
  object driven by its callbacks and by ``loop.call_later`` timers. No aiohttp session, and no
  task per user while it waits (a task exists only while a TCP connect is in flight);
- **the users run in ``procs`` worker processes** (``python -m bench.herd``, uvloop), and the
  proxy, :class:`tether.tools.proxy.TcpProxy` (asyncio protocols, no task per connection), in
  the calling process: the server's CPU, the proxy's and the clients' are reported apart.

Each user is what :class:`tether.tools.loaduser.TypingUser` is (its session runs ``exec cat``
behind a marker, so every output byte after it is a function of what was typed and is checked
as it arrives; it resumes by offset with its client id on the schedule of
:class:`~tether.protocol.policy.ReconnectPolicy`; a fresh connection replays the session from
offset 0 at the end and must equal what the user received). The run: every user attaches and
types a line; the proxy aborts every connection at once (``abort_all``); every user types a
line while cut, resumes, and must see that line's echo and output, byte-exact, with ``gap`` 0.

The parent and its workers speak one JSON object per line over the workers' stdin and stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from websockets.client import ClientProtocol as WebSocketProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State as WebSocketState
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from bench.workloads import in_parallel
from tether.errors import RemoteProtocolError
from tether.protocol.client import Attached, ClientOptions, ClientProtocol, ClientState
from tether.protocol.codes import CloseCode
from tether.protocol.messages import SUBPROTOCOL, Exit
from tether.protocol.policy import ReconnectPolicy, State
from tether.tools.figures import percentile
from tether.tools.loaduser import LETTERS, SETUP_COMMAND, StreamCheck, client_id, session_id
from tether.tools.proxy import TcpProxy

CONNECT_TIMEOUT = 10.0  # as tether.tools.loaduser's: no hello within it is a failed attempt
SETUP_WIDTH = 50  # users set up (or replayed) at once per worker
CUT_TIMEOUT = 60.0
_ANSWER_LIMIT = 64 * 1024 * 1024  # a worker's answer carries every user's resume time


class LightWire(asyncio.Protocol):
    """One WebSocket connection to ``/ws/terminal``: frames in, callbacks out, nothing else."""

    def __init__(self, owner: Wired, url: str) -> None:
        self.owner = owner
        self.ws = WebSocketProtocol(
            parse_uri(url), subprotocols=[Subprotocol(SUBPROTOCOL)], max_size=None
        )
        self.transport: asyncio.Transport | None = None
        self.ended = False
        self.upgraded = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a TCP transport
        _OPEN.add(self)
        self.ws.send_request(self.ws.connect())
        self._flush()

    def data_received(self, data: bytes) -> None:
        self.ws.receive_data(data)
        for event in self.ws.events_received():
            if self.ended:
                break
            if isinstance(event, Response):
                self.upgraded = event.status_code == 101 and self.ws.handshake_exc is None
                if not self.upgraded:
                    self._end(CloseCode.ABNORMAL, f"upgrade answered {event.status_code}")
            elif not isinstance(event, Frame):
                continue
            elif event.opcode is Opcode.BINARY:
                self.owner.on_output(self, bytes(event.data))
            elif event.opcode is Opcode.TEXT:
                self.owner.on_text(self, bytes(event.data).decode())
            elif event.opcode is Opcode.CLOSE:
                close = self.ws.close_rcvd
                if close is None:
                    self._end(CloseCode.ABNORMAL, "an empty close frame")
                else:
                    self._end(close.code, close.reason)
        self._flush()

    def eof_received(self) -> None:
        self.ws.receive_eof()

    def connection_lost(self, exc: Exception | None) -> None:
        _OPEN.discard(self)
        self._end(CloseCode.ABNORMAL, "connection lost")

    def send(self, frame: bytes | str) -> None:
        if self.ended or self.ws.state is not WebSocketState.OPEN:
            return  # lost: the protocol holds the input until a hello counts it
        if isinstance(frame, bytes):
            self.ws.send_binary(frame)
        else:
            self.ws.send_text(frame.encode())
        self._flush()

    def close(self, code: int = CloseCode.NORMAL) -> None:
        """Close with ``code`` (the server then closes the TCP connection)."""
        if not self.ended and self.upgraded:
            self.ws.send_close(code)
            self._flush()
        self._end(code, "closed by the user")

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
        self._end(CloseCode.ABNORMAL, "aborted by the user")

    def _flush(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        for data in self.ws.data_to_send():
            if data:
                transport.write(data)
            elif transport.can_write_eof():
                transport.write_eof()

    def _end(self, code: int, reason: str) -> None:
        if not self.ended:
            self.ended = True
            self.owner.on_closed(self, code, reason)


class Wired:
    """What a :class:`LightWire` reports to."""

    def on_text(self, wire: LightWire, text: str) -> None: ...
    def on_output(self, wire: LightWire, data: bytes) -> None: ...
    def on_closed(self, wire: LightWire, code: int, reason: str) -> None: ...


def _open(owner: Wired, query: dict[str, str], host: str, port: int) -> LightWire:
    """Start connecting a wire with ``query`` (the connect's task ends with the connect)."""
    wire = LightWire(owner, f"ws://{host}:{port}/ws/terminal?{urlencode(query)}")

    async def connect() -> None:
        try:
            await asyncio.get_running_loop().create_connection(lambda: wire, host, port)
        except OSError as exc:
            wire._end(CloseCode.ABNORMAL, str(exc) or type(exc).__name__)

    task = asyncio.get_running_loop().create_task(connect())
    _CONNECTS.add(task)
    task.add_done_callback(_CONNECTS.discard)
    return wire


_CONNECTS: set[asyncio.Task[None]] = set()
_OPEN: set[LightWire] = set()  # every wire whose socket is open


class HerdUser(Wired, StreamCheck):
    """A user typing into ``cat`` in its own session, its stream checked byte by byte."""

    def __init__(self, host: str, port: int, figures: Counter[str], rng: random.Random) -> None:
        self.host, self.port, self.figures, self.rng = host, port, figures, rng
        self.session, self.client = session_id(), client_id()
        self.protocol = ClientProtocol(ClientOptions("default", self.session, self.client))
        self.policy = ReconnectPolicy()
        StreamCheck.__init__(self)
        self.failed: str | None = None
        self.wire: LightWire | None = None
        self.attempt_started = 0.0
        self.reattach_s: list[float] = []
        self._timer: asyncio.TimerHandle | None = None
        self._waiter: tuple[Callable[[], bool], asyncio.Future[None]] | None = None
        self._closing = False

    # -- connecting -------------------------------------------------------------------------
    def connect(self) -> None:
        query = self.protocol.start_connect()
        self.attempt_started = time.perf_counter()
        self.wire = _open(self, query, self.host, self.port)
        self._set_timer(CONNECT_TIMEOUT, self._connect_timed_out)

    def _connect_timed_out(self) -> None:
        if self.wire is not None and self.protocol.state is ClientState.CONNECTING:
            self.wire.abort()

    def _set_timer(self, delay: float, callback: Callable[[], None]) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(delay, callback)

    def _schedule(self) -> None:
        """Act on the policy's state after a loss or a failed attempt."""
        state = self.policy.state
        if state is State.STOPPED:
            self._fail(f"stopped: {self.protocol.closed}")
        elif state is State.OPEN:
            self._fail(f"resume failed {self.policy.failures} times: breaker open")
        elif state is State.WAITING:
            delay = max(0.0, (self.policy.retry_at or 0.0) - _now())
            self._set_timer(delay, self._due)
        elif state in (State.CONNECTING, State.HALF_OPEN):
            self.connect()

    def _due(self) -> None:
        if self.policy.on_timer(_now()) and not self._closing:
            self.connect()

    # -- receiving --------------------------------------------------------------------------
    def on_text(self, wire: LightWire, text: str) -> None:
        if wire is not self.wire:
            return
        try:
            received = self.protocol.receive_text(text)
        except RemoteProtocolError as exc:
            self._fail(f"protocol error: {exc}")
            wire.close(exc.code)
            return
        if isinstance(received, Attached):
            self._attached(received)
        elif isinstance(received, Exit):
            self._fail(f"the shell exited ({received.code})")
        self._send_queued()
        self._wake()

    def _attached(self, attached: Attached) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.policy.on_connected(_now())
        hello = attached.hello
        if attached.resumed:
            self.reattach_s.append(time.perf_counter() - self.attempt_started)
            self.figures["resumes"] += 1
            if hello.gap or hello.replay_from != len(self.transcript) or attached.rebased:
                self._fail(f"resume at {len(self.transcript)}: {hello}")

    def on_output(self, wire: LightWire, data: bytes) -> None:
        if wire is not self.wire:
            return
        try:
            self.protocol.receive_output(data)
        except RemoteProtocolError as exc:
            self._fail(f"protocol error: {exc}")
            return
        problem = self._check_output(data)
        if problem:
            self._fail(problem)
        self._wake()

    def on_closed(self, wire: LightWire, code: int, reason: str) -> None:
        if wire is not self.wire:
            return
        self.wire = None
        was_connecting = self.protocol.state is ClientState.CONNECTING
        if self.protocol.state is not ClientState.ENDED:
            self.protocol.connection_lost(code, reason)
        if self._closing:
            return
        self.figures[f"close_{code}"] += 1
        if was_connecting:
            self.policy.on_attempt_failed(_now(), code, reason)
        elif self.policy.state is State.CONNECTED:
            self.policy.on_lost(_now(), code, reason)
        self._schedule()

    # -- typing and waiting -----------------------------------------------------------------
    def type(self, data: bytes, *, track: bool = True) -> None:
        """Type ``data`` key by key (a frame each while attached; held while not)."""
        if track:
            self._expect_typed(data)
        for key in data:
            if self.protocol.state is not ClientState.ENDED:
                self.protocol.send_input(bytes((key,)))
                self._send_queued()

    def type_line(self, length: int) -> None:
        self.type(bytes(self.rng.choice(LETTERS.encode()) for _ in range(length)) + b"\r")

    def _send_queued(self) -> None:
        wire = self.wire
        if wire is not None and self.protocol.state is ClientState.ATTACHED:
            for frame in self.protocol.frames_to_send():
                wire.send(frame)

    @property
    def caught_up(self) -> bool:
        return self.marker_end is not None and self.verified >= len(self.expected)

    def until(self, condition: Callable[[], bool]) -> asyncio.Future[None]:
        """A future done once ``condition()`` holds (or the user failed: its result is None
        either way; read :attr:`failed`)."""
        future = asyncio.get_running_loop().create_future()
        self._waiter = (condition, future)
        self._wake()
        return future

    def _wake(self) -> None:
        if self._waiter is not None:
            condition, future = self._waiter
            if self.failed or condition():
                self._waiter = None
                if not future.done():
                    future.set_result(None)

    def _fail(self, message: str) -> None:
        if self.failed is None:
            self.failed = message
        self._wake()

    async def start(self) -> None:
        """Create the session, start ``cat`` behind the marker, type a first line."""
        self.connect()
        await asyncio.wait_for(self.until(lambda: len(self.transcript) > 0), 30)
        self.type(SETUP_COMMAND, track=False)
        await asyncio.wait_for(self.until(lambda: self.marker_end is not None), 30)
        self.type_line(6)
        await asyncio.wait_for(self.until(lambda: self.caught_up), 30)

    def close(self) -> None:
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
        if self.wire is not None:
            self.wire.close()


class Replay(Wired):
    """A fresh connection replaying a session from offset 0; done once the hello's head is in."""

    def __init__(self, user: HerdUser) -> None:
        self.user = user
        options = ClientOptions("default", user.session, offset=0, create=False)
        self.protocol = ClientProtocol(options)
        self.replay = bytearray()
        self.start = 0
        self.head: int | None = None
        self.done: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self.wire = _open(self, self.protocol.start_connect(), user.host, user.port)

    def on_text(self, wire: LightWire, text: str) -> None:
        try:
            received = self.protocol.receive_text(text)
        except RemoteProtocolError as exc:
            self._finish(f"replay: protocol error: {exc}")
            return
        if isinstance(received, Attached):
            self.start, self.head = received.hello.replay_from, received.hello.head
            self._check()

    def on_output(self, wire: LightWire, data: bytes) -> None:
        try:
            self.protocol.receive_output(data)
        except RemoteProtocolError as exc:
            self._finish(f"replay: protocol error: {exc}")
            return
        self.replay += data
        self._check()

    def on_closed(self, wire: LightWire, code: int, reason: str) -> None:
        self._finish(f"replay connection closed {code} {reason}")

    def _check(self) -> None:
        start, head = self.start, self.head
        if head is not None and start + len(self.replay) >= head:
            exact = bytes(self.replay[: head - start]) == bytes(self.user.transcript[start:head])
            self._finish(None if exact else f"replay from {start} to {head} differs")

    def _finish(self, problem: str | None) -> None:
        if not self.done.done():
            self.done.set_result(problem)
            self.wire.close()


def _now() -> float:
    return asyncio.get_running_loop().time()


# ------------------------------------------------------------------------------- a worker
async def _all_closed(timeout: float) -> None:
    """Wait until every wire's socket is closed (the server closes after our close frame)."""
    deadline = time.monotonic() + timeout
    while _OPEN and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    for wire in list(_OPEN):
        wire.abort()


class Worker:
    """A share of the users, run on the commands read from stdin (one JSON answer per line)."""

    def __init__(self, host: str, port: int, count: int, seed: int) -> None:
        self.figures: Counter[str] = Counter()
        rng = random.Random(seed)
        self.users = [HerdUser(host, port, self.figures, rng) for _ in range(count)]

    async def setup(self) -> dict[str, Any]:
        async def start(index: int) -> None:
            user = self.users[index]
            try:
                await user.start()
            except TimeoutError:
                user._fail(f"setup timed out at {len(user.transcript)}")

        await in_parallel(len(self.users), SETUP_WIDTH, start)
        return {"ready": sum(1 for user in self.users if not user.failed)}

    async def cut(self) -> dict[str, Any]:
        """The proxy has just aborted every connection: every user types a line and resumes."""
        started, cpu = time.perf_counter(), time.process_time()
        live = [user for user in self.users if not user.failed]
        done_at: list[float] = []
        futures = []
        for user in live:
            user.type_line(8)
            future = user.until(lambda user=user: user.caught_up)  # type: ignore[misc]
            future.add_done_callback(lambda _: done_at.append(time.perf_counter() - started))
            futures.append(future)
        _, pending = await asyncio.wait(futures, timeout=CUT_TIMEOUT) if futures else ((), ())
        for user in live:
            if not user.caught_up:
                user._fail(f"not caught up {CUT_TIMEOUT} s after the cut at {len(user.transcript)}")
        for future in pending:
            future.cancel()
        return {
            "resumed_s": time.perf_counter() - started,
            "cpu_s": time.process_time() - cpu,
            "done_s": done_at,
            "reattach_s": [value for user in live for value in user.reattach_s],
        }

    async def verify(self) -> dict[str, Any]:
        async def replay(index: int) -> bool:
            user = self.users[index]
            check = Replay(user)
            try:
                problem = await asyncio.wait_for(check.done, 15)
            except TimeoutError:
                check.wire.abort()
                problem = "replay timed out"
            if problem:
                user._fail(problem)
            return problem is None

        exact = await in_parallel(len(self.users), SETUP_WIDTH, replay)
        return {"replays_exact": sum(1 for ok in exact if ok)}

    async def close(self) -> dict[str, Any]:
        for user in self.users:
            user.close()
        await _all_closed(10)
        failures = Counter(user.failed for user in self.users if user.failed)
        return {
            "exact": sum(1 for user in self.users if not user.failed),
            "figures": dict(self.figures),
            "failures": [f"{count}× {text}" for text, count in failures.most_common(5)],
        }


async def _serve_commands(worker: Worker) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    commands = {"setup": worker.setup, "cut": worker.cut, "verify": worker.verify}
    while line := await reader.readline():
        command = line.decode().strip()
        answer = await worker.close() if command == "close" else await commands[command]()
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
        if command == "close":
            return


def _raise_fd_limit() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def worker_main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.herd")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--users", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    _raise_fd_limit()
    import uvloop

    worker = Worker(args.host, args.port, args.users, args.seed)
    uvloop.run(_serve_commands(worker))


# ------------------------------------------------------------------------------- the parent
class _Child:
    """One worker process, asked one command at a time."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def spawn(cls, port: int, users: int, seed: int) -> _Child:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.herd", "--port", str(port), "--users", str(users),
            "--seed", str(seed), cwd=root,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=_ANSWER_LIMIT,
        )  # fmt: skip
        return cls(process)

    def tell(self, command: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(command.encode() + b"\n")

    async def answer(self, timeout: float = 600) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        if not line:
            raise RuntimeError(
                f"herd worker {self.process.pid} ended (exit {self.process.returncode})"
            )
        answer: dict[str, Any] = json.loads(line)
        return answer

    async def ask(self, command: str) -> dict[str, Any]:
        self.tell(command)
        return await self.answer()

    async def stop(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
        await self.process.wait()


def _machine_busy() -> float:
    """CPU-seconds every process of the machine has used since it started."""
    import psutil

    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


def _cpu_of(pids: list[int]) -> float:
    import psutil

    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
    return total


async def herd(
    server_port: int, clients: int, procs: int, server_pids: tuple[int, ...]
) -> dict[str, Any]:
    """``clients`` users over ``procs`` worker processes, cut at once by this process's proxy.

    ``server_pids``: the serving process first (its CPU is the figure), then any other process
    of the server (the supervisor) whose CPU is reported beside it.
    """
    shares = [clients // procs + (1 if index < clients % procs else 0) for index in range(procs)]
    async with TcpProxy("127.0.0.1", server_port) as proxy:
        children = [
            await _Child.spawn(proxy.port, share, seed)
            for seed, share in enumerate(shares)
            if share
        ]
        try:
            ready = await asyncio.gather(*(child.ask("setup") for child in children))
            server_cpu, other_cpu = _cpu_of(list(server_pids[:1])), _cpu_of(list(server_pids[1:]))
            machine = _machine_busy()
            proxy_cpu, started = time.process_time(), time.perf_counter()
            cut = proxy.abort_all()
            for child in children:
                child.tell("cut")
            resumed = await asyncio.gather(*(child.answer() for child in children))
            elapsed = time.perf_counter() - started
            server_cpu = _cpu_of(list(server_pids[:1])) - server_cpu
            other_cpu = _cpu_of(list(server_pids[1:])) - other_cpu
            proxy_cpu = time.process_time() - proxy_cpu
            machine = _machine_busy() - machine
            verified = await asyncio.gather(*(child.ask("verify") for child in children))
            closed = await asyncio.gather(*(child.ask("close") for child in children))
        finally:
            await asyncio.gather(*(child.stop() for child in children))
    return _figures(clients, procs, cut, elapsed, ready, resumed, verified, closed) | {
        "herd_server_cpu_s": server_cpu,
        "herd_supervisor_cpu_s": other_cpu,
        "herd_proxy_cpu_s": proxy_cpu,
        # Every process of the machine (other work on it included), in CPU-seconds.
        "herd_machine_cpu_s": machine,
        "herd_machine_cpus": os.cpu_count(),
    }


def _figures(
    clients: int,
    procs: int,
    cut: int,
    elapsed: float,
    ready: list[dict[str, Any]],
    resumed: list[dict[str, Any]],
    verified: list[dict[str, Any]],
    closed: list[dict[str, Any]],
) -> dict[str, Any]:
    done = [value for answer in resumed for value in answer["done_s"]]
    reattach = [value for answer in resumed for value in answer["reattach_s"]]
    figures: Counter[str] = Counter()
    for answer in closed:
        figures.update(answer["figures"])
    codes = {
        key.removeprefix("close_"): n for key, n in figures.items() if key.startswith("close_")
    }
    return {
        "herd_clients": clients,
        "herd_client_procs": procs,
        "herd_ready": sum(answer["ready"] for answer in ready),
        "herd_connections_cut": cut,
        "herd_all_resumed_s": elapsed,
        "herd_user_resumed_p50_s": percentile(done, 0.5) if done else None,
        "herd_user_resumed_p99_s": percentile(done, 0.99) if done else None,
        "herd_client_cpu_s": sum(answer["cpu_s"] for answer in resumed),
        "herd_exact": sum(answer["exact"] for answer in closed),
        "herd_replays_exact": sum(answer["replays_exact"] for answer in verified),
        "herd_storm_refusals": figures.get(f"close_{int(CloseCode.STORM)}", 0),
        "herd_reattach_p50_ms": 1000 * percentile(reattach, 0.5) if reattach else None,
        "herd_reattach_p99_ms": 1000 * percentile(reattach, 0.99) if reattach else None,
        "herd_resumes": figures.get("resumes", 0),
        # What went wrong, when something did (not a figure of the plot).
        "herd_close_codes": codes,
        "herd_failures": [text for answer in closed for text in answer["failures"]][:5],
    }


if __name__ == "__main__":
    worker_main()
