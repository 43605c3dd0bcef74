"""systemd's notification and file-descriptor store protocol, both sides (sd_notify(3),
sd_listen_fds(3); docs/architecture.md, "Surviving the server process").

The service side: :func:`notify` sends ``READY=1``, ``FDSTORE=1`` + ``FDNAME=`` with fds
(``SCM_RIGHTS``) and ``FDSTOREREMOVE=1`` as datagrams to ``$NOTIFY_SOCKET``;
:func:`listen_fds` takes the stored fds back from ``LISTEN_FDS``/``LISTEN_FDNAMES`` (fds from
3 on, checked against ``LISTEN_PID``). The manager side, :class:`FdStore`, is what
:mod:`tether.server.supervisor` (and a test playing systemd) runs: it keeps the fds it is sent
and hands them to the next process the same way systemd does.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import os
import socket
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field

LISTEN_FDS_START = 3
_MAX_FDS_PER_MESSAGE = 253  # SCM_MAX_FD
_MAX_DATAGRAM = 4096
LEASE_VARIABLE = "X_TETHER_LEASE"


# ----------------------------------------------------------------------------- service side
def notify_socket_address(environ: Mapping[str, str]) -> str | None:
    """``$NOTIFY_SOCKET`` as an address for :mod:`socket` (``@name``: the abstract namespace)."""
    path = environ.get("NOTIFY_SOCKET")
    if not path:
        return None
    return "\0" + path[1:] if path.startswith("@") else path


def notify(message: str, fds: Sequence[int] = (), environ: Mapping[str, str] = os.environ) -> bool:
    """Send one notification (``KEY=value`` lines); False when there is no notify socket or
    the manager is gone (the caller carries on: without a manager there is no store)."""
    address = notify_socket_address(environ)
    if address is None:
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        ancillary = []
        if fds:
            rights = array.array("i", fds).tobytes()
            ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)]
        try:
            sock.sendmsg([message.encode()], ancillary, 0, address)
        except OSError:
            return False
    return True


def store(name: str, fds: Sequence[int]) -> bool:
    """Keep ``fds`` in the manager's store under ``name`` (a name without ``:``)."""
    return notify(f"FDSTORE=1\nFDNAME={name}", fds)


def remove(name: str) -> bool:
    """Drop every fd stored under ``name``."""
    return notify(f"FDSTOREREMOVE=1\nFDNAME={name}")


def listen_fds(environ: MutableMapping[str, str]) -> list[tuple[str, int]]:
    """The fds passed to this process, with their names, as sd_listen_fds_with_names(3) does;
    the variables are removed (so that children do not take them for theirs)."""
    pid = environ.pop("LISTEN_PID", None)
    count = environ.pop("LISTEN_FDS", None)
    names = environ.pop("LISTEN_FDNAMES", "")
    if pid is None or count is None or not pid.isdigit() or int(pid) != os.getpid():
        return []
    try:
        total = int(count)
    except ValueError:
        return []
    labels = names.split(":") if names else []
    labels += ["unknown"] * (total - len(labels))
    passed = []
    for index in range(total):
        fd = LISTEN_FDS_START + index
        os.set_inheritable(fd, False)
        passed.append((labels[index], fd))
    return passed


# ----------------------------------------------------------------------------- manager side
@dataclass
class FdStore:
    """The manager's side: named fds kept across the service's processes."""

    entries: list[tuple[str, int]] = field(default_factory=list)
    ready: bool = False
    # tether's own variable (systemd ignores unknown ones): the worker's cluster lease, as
    # sent (:mod:`tether.server.supervisor` keeps it alive while no worker is ready)
    lease_reports: list[str] = field(default_factory=list)

    def receive(self, sock: socket.socket) -> None:
        """Handle every notification waiting on ``sock`` (non-blocking)."""
        while True:
            try:
                data, ancillary, _flags, _address = sock.recvmsg(
                    _MAX_DATAGRAM, socket.CMSG_SPACE(_MAX_FDS_PER_MESSAGE * 4)
                )
            except (BlockingIOError, InterruptedError):
                return
            self.handle(data.decode(errors="replace"), _fds_of(ancillary))

    def handle(self, message: str, fds: list[int]) -> None:
        fields = dict(line.partition("=")[::2] for line in message.splitlines() if "=" in line)
        name = fields.get("FDNAME", "stored")
        if fields.get("READY") == "1":
            self.ready = True
        if LEASE_VARIABLE in fields:
            self.lease_reports.append(fields[LEASE_VARIABLE])
        if fields.get("FDSTOREREMOVE") == "1":
            self.discard(name)
        if fields.get("FDSTORE") == "1" and ":" not in name:
            self.entries.extend((name, fd) for fd in fds)
            fds = []
        for fd in fds:  # sent without FDSTORE=1: not ours to keep
            os.close(fd)

    def discard(self, name: str) -> None:
        kept = []
        for entry in self.entries:
            if entry[0] == name:
                with contextlib.suppress(OSError):
                    os.close(entry[1])
            else:
                kept.append(entry)
        self.entries = kept

    def environment(self, pid: int) -> dict[str, str]:
        """``LISTEN_*`` for process ``pid`` (its fds dup'ed from 3 on: :meth:`place`)."""
        if not self.entries:
            return {}
        return {
            "LISTEN_PID": str(pid),
            "LISTEN_FDS": str(len(self.entries)),
            "LISTEN_FDNAMES": ":".join(name for name, _ in self.entries),
        }

    def place(self) -> None:
        """In the child, before exec: the stored fds at 3, 4, … (inheritable)."""
        # First out of the way of the target numbers, then into place.
        floor = LISTEN_FDS_START + len(self.entries)
        moved = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, floor) for _, fd in self.entries]
        for index, fd in enumerate(moved):
            os.dup2(fd, LISTEN_FDS_START + index, inheritable=True)
            os.close(fd)

    def close(self) -> None:
        for _, fd in self.entries:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.entries = []


def _fds_of(ancillary: list[tuple[int, int, bytes]]) -> list[int]:
    fds: list[int] = []
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(data) - len(data) % 4
            fds.extend(array.array("i", data[:usable]))
    for fd in fds:
        os.set_inheritable(fd, False)
    return fds


def server_socket(name: str) -> socket.socket:
    """A datagram socket in the abstract namespace for :class:`FdStore` to receive on."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    sock.bind("\0" + name)
    sock.setblocking(False)
    return sock
