"""tether.server.session on real PTYs and real shells, with a fake clock and an in-memory front:
states and their transitions, attach and detach, input counts, flow control, exit, ending."""

from __future__ import annotations

import asyncio
import itertools
import os
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.wsclient import strip_ansi
from tether.errors import IllegalTransition, InvalidParameter
from tether.protocol.codes import CloseCode
from tether.server import pty
from tether.server.session import Client, EndReason, Session, SessionInfo, SessionState

pytestmark = pytest.mark.timeout(60)

KiB = 1024
SHELL = ["bash", "--norc", "--noprofile"]
S = SessionState


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Front:
    """A client front that sends from ``client.position`` when woken, as the aiohttp one does."""

    def __init__(self) -> None:
        self.client: Client | None = None
        self.hello: dict[str, Any] = {}
        self.output = bytearray()
        self.messages: list[dict[str, Any]] = []
        self.closed: tuple[int, str] | None = None
        self.woken = asyncio.Event()

    def wake(self) -> None:
        self.woken.set()

    def send_message(self, message: dict[str, Any]) -> None:
        self.messages.append(message)
        self.woken.set()

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)
        self.woken.set()

    @property
    def text(self) -> str:
        return strip_ansi(bytes(self.output))

    async def woken_up(self) -> None:
        self.woken.clear()
        await self.woken.wait()


def attach(
    session: Session,
    client_id: str | None = None,
    offset: int | None = None,
    created: bool = False,
    size: tuple[int, int] | None = None,
    input_key: str | None = None,
) -> Front:
    front = Front()
    key = input_key or client_id or f"conn-{id(front)}"
    result = session.attach(front, client_id, key, offset, created, size)
    front.client, front.hello = result.client, result.hello
    return front


async def receive(
    session: Session, front: Front, until: str | None = None, timeout: float = 20
) -> None:
    """Take output as a front does until ``until`` shows (or, without it, the final message)."""
    client = front.client
    assert client is not None
    try:
        async with asyncio.timeout(timeout):
            while True:
                chunk = session.read_for(client)
                if chunk:
                    front.output += chunk
                    client.position += len(chunk)
                    session.client_progressed()
                    continue
                if until is not None and until in front.text:
                    return
                if until is None and client.final is not None:
                    return
                await front.woken_up()
    except TimeoutError:
        raise AssertionError(f"no {until!r} in {bytes(front.output[-500:])!r}") from None


async def type_in(session: Session, front: Front, command: str) -> None:
    assert front.client is not None
    await session.write_input(front.client.input_key, command.encode() + b"\r")


def numbers_in(text: str) -> list[int]:
    return [int(n) for n in re.findall(r"^(\d+)\r?$", text.replace("\r", ""), flags=re.MULTILINE)]


Make = Callable[..., Session]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


class Exits(list[tuple[int | None, int | None]]):
    """The exit statuses the sessions reported, and an event set at each."""

    def __init__(self) -> None:
        super().__init__()
        self.reported = asyncio.Event()


@pytest.fixture
def exits() -> Exits:
    return Exits()


@pytest.fixture(autouse=True)
def subreaper() -> None:
    # As in the server: orphaned jobs of a terminal become our children, so that we reap them.
    assert pty.become_subreaper()


@pytest.fixture
async def make(tmp_path: Path, clock: FakeClock, exits: Exits) -> AsyncIterator[Make]:
    """Makes sessions on real shells; ends them all after the test and waits for their ending.

    By default an exit ends the session as the manager does; ``end_on_exit=False`` only records.
    """
    made: list[Session] = []
    numbers = itertools.count(1)

    def start(
        buffer_size: int = 64 * KiB,
        argv: list[str] = SHELL,
        end_on_exit: bool = True,
        cols: int = 80,
        rows: int = 24,
    ) -> Session:
        env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "TERM": "xterm", "PS1": "$ "}
        process = pty.spawn(argv, str(tmp_path), env, cols, rows)
        number = next(numbers)
        info = SessionInfo(
            key=f"session_{number}:default",
            session_id=f"session_{number}",
            project="default",
            owner="tester",
            created_at=1_700_000_000.0,
            cols=cols,
            rows=rows,
            pid=process.pid,
            last_activity=clock(),
        )

        def on_exit(session: Session, code: int | None, signum: int | None) -> None:
            exits.append((code, signum))
            exits.reported.set()
            if end_on_exit:
                session.end(EndReason.EXITED, 0.5, (code, signum))

        session = Session(info, process, buffer_size, clock, on_exit)
        made.append(session)
        return session

    yield start
    for session in made:
        session.end(EndReason.SHUTDOWN, 0.5)
        async with asyncio.timeout(10):
            await session.terminated.wait()


# ----------------------------------------------------------------------------- attach / detach
async def test_a_session_starts_and_its_creator_attaches_in_one_step(
    make: Make, clock: FakeClock
) -> None:
    session = make(cols=100, rows=30)
    assert session.state is S.STARTING and session.clients == []
    clock.now += 3
    front = attach(session, "creator", created=True)
    assert session.state is S.ATTACHED and session.clients == [front.client]
    assert front.hello == {
        "type": "hello",
        "protocol": 1,
        "session": session.info.session_id,
        "project": "default",
        "key": session.info.key,
        "created": True,
        "replay_from": 0,
        "gap": 0,
        "head": 0,
        "input_acked": 0,
        "restore": "",
        "cols": 100,
        "rows": 30,
    }
    assert session.info.last_activity == clock.now
    await type_in(session, front, "echo READY-$((20+1))")
    await receive(session, front, "READY-21")


async def test_input_is_written_and_counted_per_client(make: Make, clock: FakeClock) -> None:
    session = make()
    front = attach(session, "typist", created=True)
    clock.now += 1
    await type_in(session, front, "echo $((6*7))")
    await receive(session, front, "\n42")
    assert session.input_count("typist") == len("echo $((6*7))\r")
    assert session.input_bytes == len("echo $((6*7))\r")
    assert session.info.input_counts == {"typist": len("echo $((6*7))\r")}
    assert session.info.last_activity == clock.now
    assert session.input_count("someone-else") == 0


async def test_large_input_is_written_in_order_and_counted_once(make: Make, tmp_path: Path) -> None:
    session = make()
    front = attach(session, "paster", created=True)
    command = "stty -echo; echo CAT-$((1+1)); cat > pasted.txt; echo PASTED-$((1+1))"
    await type_in(session, front, command)
    await receive(session, front, "CAT-2")
    lines = b"".join(b"%07d %s\n" % (n, b"x" * 90) for n in range(3000))  # 297 KB
    writing = asyncio.create_task(session.write_input("paster", lines))
    await asyncio.sleep(0)
    assert not writing.done(), "more than the terminal takes at once: the rest waits"
    await session.write_input("paster", b"\x04")  # queued behind, in order
    assert writing.done()
    await receive(session, front, "PASTED-2")
    assert (tmp_path / "pasted.txt").read_bytes() == lines
    assert session.input_count("paster") == len(command) + 1 + len(lines) + 1


async def test_the_last_detach_makes_it_detached_and_starts_the_idle_clock(
    make: Make, clock: FakeClock
) -> None:
    session = make()
    one = attach(session, "one", created=True)
    two = attach(session, "two", offset=0)
    assert session.state is S.ATTACHED and len(session.clients) == 2
    clock.now += 10
    assert one.client is not None and two.client is not None
    session.detach(one.client)
    assert session.state is S.ATTACHED and session.clients == [two.client]
    assert not one.client.active
    clock.now += 5
    session.detach(two.client)
    assert session.state is S.DETACHED and session.clients == []
    assert session.detached_since == clock.now
    session.detach(two.client)  # twice: nothing more
    assert session.state is S.DETACHED
    clock.now += 7
    back = attach(session, "one", offset=0)
    assert session.state is S.ATTACHED and session.detached_since == clock.now - 7
    await type_in(session, back, "echo BACK-$((2+3))")
    await receive(session, back, "BACK-5")


async def test_connection_input_counts_are_forgotten_client_ids_kept(make: Make) -> None:
    session = make()
    named = attach(session, "named", created=True)
    anonymous = attach(session, None, offset=0, input_key="conn-7")
    await type_in(session, named, "true")
    await type_in(session, anonymous, "true")
    assert session.info.input_counts == {"named": 5, "conn-7": 5}
    assert anonymous.client is not None and named.client is not None
    session.detach(anonymous.client)
    session.detach(named.client)
    assert session.info.input_counts == {"named": 5}
    again = attach(session, "named", offset=0)
    assert again.hello["input_acked"] == 5


async def test_an_offset_beyond_the_head_is_refused_and_changes_nothing(make: Make) -> None:
    session = make()
    front = attach(session, "first", created=True)
    await type_in(session, front, "echo SOME-$((1+1))")
    await receive(session, front, "SOME-2")
    assert front.client is not None
    session.detach(front.client)
    with pytest.raises(InvalidParameter):
        attach(session, "late", offset=session.ring.head + 1)
    assert session.state is S.DETACHED and session.clients == []


async def test_resuming_at_a_buffered_offset_replays_from_there(make: Make) -> None:
    session = make()
    front = attach(session, "resumer", created=True)
    await type_in(session, front, "echo FIRST-$((1+1))")
    await receive(session, front, "FIRST-2")
    assert front.client is not None
    position = front.client.position
    session.detach(front.client)
    again = attach(session, "resumer", offset=position)
    await type_in(session, again, "echo SECOND-$((1+1))")
    assert again.hello["replay_from"] == position and again.hello["gap"] == 0
    await receive(session, again, "SECOND-2")
    assert "FIRST-2" not in again.text
    whole = attach(session, "viewer", offset=0)
    assert whole.hello["replay_from"] == 0
    await receive(session, whole, "SECOND-2")
    assert bytes(whole.output).endswith(bytes(again.output))


async def test_a_newer_connection_of_a_client_replaces_the_older(make: Make) -> None:
    session = make()
    older = attach(session, "same", created=True)
    await type_in(session, older, "true")
    newer = attach(session, "same", offset=0)
    assert older.closed is not None and older.closed[0] == CloseCode.REPLACED
    assert older.client is not None and not older.client.active
    assert session.state is S.ATTACHED and session.clients == [newer.client]
    assert newer.hello["input_acked"] == 5
    session.detach(older.client)  # its front closing later changes nothing
    assert session.state is S.ATTACHED and session.clients == [newer.client]


async def test_attaching_to_an_ended_session_is_a_bug(make: Make) -> None:
    session = make()
    attach(session, "one", created=True)
    session.end(EndReason.KILLED, 0.5)
    with pytest.raises(IllegalTransition):
        attach(session, "two", offset=0)
    assert session.state is S.ENDED


# ----------------------------------------------------------------------------- resize
async def test_resize_changes_the_terminal_and_tells_the_other_clients(make: Make) -> None:
    session = make()
    one = attach(session, "one", created=True)
    two = attach(session, "two", offset=0)
    assert one.client is not None
    session.resize(100, 30, origin=one.client)
    assert (session.info.cols, session.info.rows) == (100, 30)
    assert one.messages == []
    assert two.messages == [{"type": "resize", "cols": 100, "rows": 30}]
    await type_in(session, one, 'echo "size=$(stty size)"')
    await receive(session, one, "size=30 100")
    three = attach(session, "three", offset=0, size=(90, 20))
    assert (session.info.cols, session.info.rows) == (90, 20)
    assert three.messages == [] and two.messages[-1] == {"type": "resize", "cols": 90, "rows": 20}
    assert three.hello["cols"] == 90 and three.hello["rows"] == 20


async def test_replay_done_nudges_an_alternate_screen_program_to_redraw(make: Make) -> None:
    session = make(buffer_size=2 * KiB)
    front = attach(session, "watcher", created=True)
    await type_in(session, front, "trap 'echo WINCH-$(stty size)' WINCH")
    await type_in(session, front, "printf '\\033[?1049h'; seq 1 3000; echo FULL-$((1+1))")
    await receive(session, front, "FULL-2")
    back = attach(session, "returning", offset=0)
    assert back.hello["gap"] > 0 and "\x1b[?1049h" in back.hello["restore"]
    assert back.client is not None and back.client.nudge_after_replay
    await receive(session, back, "FULL-2")
    session.replay_done(back.client)
    assert not back.client.nudge_after_replay
    await receive(session, back, "WINCH-23 80")
    await receive(session, back, "WINCH-24 80")
    session.replay_done(back.client)  # once only
    assert front.client is not None and not front.client.nudge_after_replay


# ----------------------------------------------------------------------------- flow control
async def test_a_stalled_client_pauses_the_program_and_loses_nothing(make: Make) -> None:
    session = make(buffer_size=16 * KiB)
    front = attach(session, "slow", created=True)
    await type_in(session, front, "stty -echo")
    await type_in(session, front, "seq 1 40000; echo SEQ-$((1+1))")  # about 230 KB
    client = front.client
    assert client is not None
    async with asyncio.timeout(20):
        while session.ring.head - client.position < session.ring.capacity:
            await front.woken_up()  # the client takes nothing: the ring fills up to it
    assert session.ring.tail == client.position, "the ring is never trimmed past the client"
    assert session.ring.head < 100 * KiB, "the program was paused"
    await receive(session, front, "SEQ-2")
    assert numbers_in(front.text) == list(range(1, 40001))


async def test_a_detached_program_never_blocks_and_the_gap_is_reported(
    make: Make, exits: Exits
) -> None:
    session = make(buffer_size=16 * KiB, end_on_exit=False)
    front = attach(session, "leaver", created=True)
    await type_in(session, front, "seq 1 50000; exit 4")
    assert front.client is not None
    session.detach(front.client)
    async with asyncio.timeout(20):
        await exits.reported.wait()  # the shell ran to its end with nobody reading
    assert exits == [(4, None)] and session.state is S.DETACHED
    assert session.ring.head > 250 * KiB and session.ring.size == 16 * KiB
    again = attach(session, "leaver", offset=front.client.position)
    assert again.hello["gap"] == again.hello["replay_from"] - front.client.position > 0
    assert again.hello["replay_from"] >= session.ring.tail
    assert again.hello["head"] == session.ring.head
    await receive(session, again, "50000")


async def test_two_clients_receive_identical_streams(make: Make) -> None:
    session = make(buffer_size=8 * KiB)
    fast = attach(session, "fast", created=True)
    slow = attach(session, "slow", offset=0)
    await type_in(session, fast, "seq 1 20000; echo END-$((2+2))")
    await asyncio.gather(receive(session, fast, "END-4"), receive(session, slow, "END-4"))
    assert bytes(fast.output) == bytes(slow.output)
    assert numbers_in(fast.text) == list(range(1, 20001))


# ----------------------------------------------------------------------------- exit
async def test_an_exit_delivers_every_byte_then_the_exit_message(make: Make, exits: Exits) -> None:
    session = make(buffer_size=8 * KiB)
    front = attach(session, "stays", created=True)
    await type_in(session, front, "stty -echo; seq 1 20000; exit 3")
    await receive(session, front)
    assert numbers_in(front.text) == list(range(1, 20001)), "within flow control, all of it"
    assert exits == [(3, None)] and session.state is S.ENDED
    assert front.client is not None and front.client.final == (
        {"type": "exit", "code": 3, "signal": None},
        CloseCode.EXITED,
        "shell exited",
    )
    assert front.client.active and front.closed is None, "the front closes once it is sent"
    session.detach(front.client)
    assert session.state is S.ENDED and session.clients == []
    async with asyncio.timeout(10):
        await session.terminated.wait()
    assert (session.process.fd, session.process.pidfd) == (-1, -1)


async def test_the_exit_waits_for_a_stalled_client(make: Make, exits: Exits) -> None:
    session = make(buffer_size=4 * KiB)
    front = attach(session, "stalled", created=True)
    await type_in(session, front, "stty -echo; seq 1 3000; exit 5")
    client = front.client
    assert client is not None
    async with asyncio.timeout(20):
        while session.ring.head - client.position < session.ring.capacity:
            await front.woken_up()
    assert exits == [], "not ended while the client has bytes to take"
    assert session.state is S.ATTACHED
    await receive(session, front)
    assert numbers_in(front.text) == list(range(1, 3001)) and exits == [(5, None)]


# ----------------------------------------------------------------------------- ending
async def test_ending_closes_the_clients_and_ends_every_process(make: Make) -> None:
    session = make()
    one = attach(session, "one", created=True)
    two = attach(session, "two", offset=0)
    await type_in(session, one, "sleep 300 & (sleep 301 &) ; echo JOBS-$((1+1))")
    await receive(session, one, "JOBS-2")
    members = pty.scan_all_processes(session.process.pid)
    assert len(members) >= 3
    session.end(EndReason.KILLED, 0.5)
    assert session.state is S.ENDED
    for front in (one, two):
        assert front.closed == (CloseCode.TERMINATED, "session terminated by an operator")
        assert front.client is not None and not front.client.active
        assert front.client.final == (None, CloseCode.TERMINATED, EndReason.KILLED.reason)
    ending = session.ending
    assert ending is not None
    session.end(EndReason.SHUTDOWN, 0.5)  # ending twice: the first wins
    assert session.ending is ending and one.closed[0] == CloseCode.TERMINATED
    async with asyncio.timeout(10):
        await session.terminated.wait()
    assert not any(pty.exists(pid) for pid in members)
    assert (session.process.fd, session.process.pidfd) == (-1, -1)
    assert one.client is not None
    session.detach(one.client)  # the fronts leave afterwards: nothing changes
    assert session.state is S.ENDED


@pytest.mark.parametrize("reason", [EndReason.REAPED, EndReason.SHUTDOWN, EndReason.KILLED])
async def test_each_reason_closes_with_its_code(make: Make, reason: EndReason) -> None:
    session = make()
    front = attach(session, "one", created=True)
    session.end(reason, 0.5)
    assert front.closed == (reason.code, reason.reason)


async def test_an_unattached_session_can_end(make: Make) -> None:
    session = make()
    session.end(EndReason.SHUTDOWN, 0.5)
    assert session.state is S.ENDED
    async with asyncio.timeout(10):
        await session.terminated.wait()


async def test_an_ended_session_takes_no_input_and_no_resize(make: Make) -> None:
    session = make()
    front = attach(session, "one", created=True)
    session.end(EndReason.KILLED, 0.5)
    await session.write_input("one", b"echo nothing\r")
    session.resize(120, 50)
    session.nudge_redraw()
    assert session.input_count("one") == 0 and session.input_bytes == 0
    assert (session.info.cols, session.info.rows) == (80, 24)
    assert front.messages == []


async def test_a_kill_while_the_exit_waits_for_a_client_wins(make: Make, exits: Exits) -> None:
    session = make(buffer_size=8 * KiB)  # seq prints 8.9 KB: a little more than the ring
    front = attach(session, "stalled", created=True)
    await type_in(session, front, "stty -echo; seq 1 2000; exit 5")
    exited = asyncio.Event()
    pidfd = os.pidfd_open(session.process.pid)
    loop = asyncio.get_running_loop()
    loop.add_reader(pidfd, exited.set)
    try:
        async with asyncio.timeout(20):
            await exited.wait()  # the shell is gone; its last output waits for the client
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
    await asyncio.sleep(0)  # the session's own pidfd callback was ready in the same iteration
    session.end(EndReason.KILLED, 0.5)
    # The front was sending a chunk when the kill came: it finishes and reports its progress.
    assert front.client is not None
    front.client.position += len(session.read_for(front.client))
    session.client_progressed()
    assert exits == [], "the exit is not reported after the kill: the first ending wins"
    assert front.closed is not None and front.closed[0] == CloseCode.TERMINATED


# ----------------------------------------------------------------------------- facts
async def test_stats_and_memory(make: Make) -> None:
    session = make(buffer_size=64 * KiB)
    front = attach(session, "one", created=True)
    await type_in(session, front, "echo STATS-$((1+1))")
    await receive(session, front, "STATS-2")
    stats = session.stats()
    assert stats == {
        "key": session.info.key,
        "session": session.info.session_id,
        "project": "default",
        "owner": "tester",
        "state": "attached",
        "pid": session.process.pid,
        "clients": 1,
        "output_position": session.ring.head,
        "buffered_bytes": session.ring.size,
        "memory_bytes": session.ring.memory_bytes + 4096,
        "cols": 80,
        "rows": 24,
        "input_bytes": len("echo STATS-$((1+1))\r"),
        "name": "",
    }
    assert session.memory_bytes < 64 * KiB, "an idle session holds little of its ring"
