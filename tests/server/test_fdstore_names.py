"""tether's extension of the fd store (server/fdstore.py, server/survival.py): a name per fd,
so that a session's two fds, or the removals of many sessions, go in one message to a manager
that reads them (tether's supervisor), and in systemd's one-name messages otherwise."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support.server import eventually
from tether.server import fdstore, pty, survival
from tether.server.config import Settings, build_settings
from tether.server.identity import ANONYMOUS
from tether.server.manager import ConnectRequest, SessionManager
from tether.server.session import Session

Manager = tuple[socket.socket, fdstore.FdStore]


@pytest.fixture
def manager_side(monkeypatch: pytest.MonkeyPatch) -> Iterator[Manager]:
    name = f"tether-test-fdnames-{os.getpid()}"
    sock = fdstore.server_socket(name)
    store = fdstore.FdStore()
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    monkeypatch.setenv(fdstore.NAMES_ENV, "1")
    try:
        yield sock, store
    finally:
        store.close()
        sock.close()


def _receive_counting(sock: socket.socket, store: fdstore.FdStore) -> int:
    """Hand every waiting message to ``store``; returns how many there were."""
    count = 0
    while True:
        try:
            data, ancillary, _, _ = sock.recvmsg(65536, socket.CMSG_SPACE(253 * 4))
        except BlockingIOError:
            return count
        store.handle(data.decode(), fdstore._fds_of(ancillary))
        count += 1


def _same_file(a: int, b: int) -> bool:
    first, second = os.fstat(a), os.fstat(b)
    return (first.st_dev, first.st_ino) == (second.st_dev, second.st_ino)


@pytest.mark.parametrize("reads_names", [True, False], ids=["supervisor", "systemd"])
def test_two_names_in_one_message_where_the_manager_reads_them(
    manager_side: Manager, monkeypatch: pytest.MonkeyPatch, reads_names: bool
) -> None:
    sock, store = manager_side
    if not reads_names:
        monkeypatch.delenv(fdstore.NAMES_ENV)
    read_end, write_end = os.pipe()
    try:
        assert fdstore.store_entries([("pty.s.p", read_end), ("state.s.p", write_end)])
        assert _receive_counting(sock, store) == (1 if reads_names else 2)
        assert [name for name, _ in store.entries] == ["pty.s.p", "state.s.p"]
        assert _same_file(store.entries[0][1], read_end)
        assert _same_file(store.entries[1][1], write_end)
        assert fdstore.remove_names(["pty.s.p", "state.s.p"])
        assert _receive_counting(sock, store) == (1 if reads_names else 2)
        assert store.entries == []
    finally:
        os.close(read_end)
        os.close(write_end)


def test_hundreds_of_entries_go_in_as_few_messages_as_fds_allow(manager_side: Manager) -> None:
    sock, store = manager_side
    read_end, write_end = os.pipe()
    names = [f"pty.session-{i}.project" for i in range(300)]
    try:
        assert fdstore.store_entries([(name, read_end) for name in names])
        assert _receive_counting(sock, store) == 2  # 253 fds at most in one message
        assert [name for name, _ in store.entries] == names
        assert fdstore.remove_names(names[:150])
        assert _receive_counting(sock, store) == 1
        assert [name for name, _ in store.entries] == names[150:]
    finally:
        os.close(read_end)
        os.close(write_end)


def test_fds_without_a_name_of_their_own_are_not_kept() -> None:
    store = fdstore.FdStore()
    read_end, write_end = os.pipe()
    spare = os.dup(write_end)
    store.handle(f"FDSTORE=1\n{fdstore.NAMES_VARIABLE}=pipe.read:", [read_end, write_end, spare])
    assert [name for name, _ in store.entries] == ["pipe.read"]
    for fd in (write_end, spare):  # closed by the store: not its to keep
        with pytest.raises(OSError):
            os.fstat(fd)
    store.close()


# ------------------------------------------------------------------------------ the worker
@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return build_settings(
        {"shell": "bash --norc --noprofile", "kill_grace": 0.5, "log_file": "-"}, cwd=tmp_path
    )


def _connect(manager: SessionManager, session: str) -> Session:
    query = {"project": "default", "session": session}
    request = ConnectRequest(query=query, address="127.0.0.1", identity=ANONYMOUS)
    return manager.connect(request, _Sink()).session


class _Sink:
    def wake(self) -> None:
        pass

    def send_message(self, message: object) -> None:
        pass

    def close(self, code: int, reason: str) -> None:
        pass


@pytest.fixture
async def watched(
    manager_side: Manager, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[SessionManager]:
    monkeypatch.setattr(survival, "_enabled", False)
    manager = SessionManager(settings)
    survival.watch(manager)
    yield manager
    await manager.shutdown()


def _names(session: Session) -> list[str]:
    name = session.info.key.replace(":", ".")
    return ["pty." + name, "state." + name]


async def test_a_new_sessions_fds_are_stored_when_connect_returns_a_killed_ones_leave_at_once(
    manager_side: Manager, watched: SessionManager
) -> None:
    sock, store = manager_side
    sessions = []
    for session_id in ("s-one", "s-two"):
        sessions.append(_connect(watched, session_id))
        # Sent by the time connect returned (the front sends the hello then): one message.
        assert _receive_counting(sock, store) == 1
        assert [name for name, _ in store.entries[-2:]] == _names(sessions[-1])
    # Its shell still runs: a crash must not bring it back, so no waiting for the batch.
    watched.kill(sessions[0].info.key)
    assert _receive_counting(sock, store) == 1
    assert [name for name, _ in store.entries] == _names(sessions[1])


async def test_sessions_whose_shells_are_gone_leave_together_and_a_new_one_of_the_key_stays(
    manager_side: Manager, watched: SessionManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, store = manager_side
    one, two, three = (_connect(watched, s) for s in ("s-one", "s-two", "s-three"))
    _receive_counting(sock, store)
    monkeypatch.setattr(pty, "is_running_shell", lambda pid: False)  # as after their exit
    watched.kill(one.info.key)
    watched.kill(two.info.key)
    assert _receive_counting(sock, store) == 0  # not yet: at the end of the loop iteration
    again = _connect(watched, "s-one")  # the same key again, before that: removals go first
    assert _receive_counting(sock, store) == 2  # the removals (one message), the new entries
    kept = dict(store.entries)
    assert sorted(kept) == sorted(_names(again) + _names(three))
    assert _same_file(kept[_names(again)[0]], again.process.fd)  # the new master: not removed


async def test_a_shell_that_exits_leaves_the_store(
    manager_side: Manager, watched: SessionManager
) -> None:
    sock, store = manager_side
    session = _connect(watched, "s-exits")
    session.process.write(b"exit\r")

    def gone() -> bool:
        _receive_counting(sock, store)
        return not store.entries

    await eventually(gone, 10, "the exited session's entries stayed in the store")
