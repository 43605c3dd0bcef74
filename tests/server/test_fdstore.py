"""systemd's notify and fd-store protocol (server/fdstore.py): both sides over a real socket."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

from tether.server import fdstore


@pytest.fixture
def manager(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[socket.socket, fdstore.FdStore]]:
    name = f"tether-test-fdstore-{os.getpid()}"
    sock = fdstore.server_socket(name)
    store = fdstore.FdStore()
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    try:
        yield sock, store
    finally:
        store.close()
        sock.close()


def test_without_a_notify_socket_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not fdstore.notify("READY=1")
    assert fdstore.notify_socket_address({"NOTIFY_SOCKET": "/run/x"}) == "/run/x"
    assert fdstore.notify_socket_address({"NOTIFY_SOCKET": "@abc"}) == "\0abc"


def test_stored_fds_are_kept_by_name_and_removed_by_name(
    manager: tuple[socket.socket, fdstore.FdStore],
) -> None:
    sock, store = manager
    read_end, write_end = os.pipe()
    assert fdstore.store("pipe.1", [read_end, write_end])
    assert fdstore.notify("READY=1")
    os.close(read_end)
    os.close(write_end)
    store.receive(sock)
    assert store.ready and [name for name, _ in store.entries] == ["pipe.1", "pipe.1"]
    os.write(store.entries[1][1], b"kept")  # the same pipe, through the stored copies
    assert os.read(store.entries[0][1], 4) == b"kept"
    assert fdstore.remove("pipe.1")
    store.receive(sock)
    assert store.entries == []


def test_fds_sent_without_fdstore_or_with_a_colon_in_the_name_are_not_kept(
    manager: tuple[socket.socket, fdstore.FdStore],
) -> None:
    sock, store = manager
    read_end, write_end = os.pipe()
    fdstore.notify("STATUS=hello", [read_end])
    fdstore.store("bad:name", [write_end])
    os.close(read_end)
    os.close(write_end)
    store.receive(sock)
    assert store.entries == []


def test_listen_fds_are_taken_only_when_meant_for_this_process() -> None:
    other = {"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "2", "LISTEN_FDNAMES": "a:b"}
    assert fdstore.listen_fds(other) == [] and "LISTEN_FDS" not in other
    assert fdstore.listen_fds({}) == []


def test_the_environment_names_the_fds_in_store_order() -> None:
    store = fdstore.FdStore([("listen.0", 10), ("pty.s.p", 11)])
    assert store.environment(42) == {
        "LISTEN_PID": "42",
        "LISTEN_FDS": "2",
        "LISTEN_FDNAMES": "listen.0:pty.s.p",
    }
    assert fdstore.FdStore().environment(42) == {}
