"""systemd's notification and file-descriptor store protocol, both sides (sd_notify(3),
sd_listen_fds(3); docs/architecture.md, "Surviving the server process").

The service side: :func:`notify` sends ``READY=1``, ``FDSTORE=1`` + ``FDNAME=`` with fds
(``SCM_RIGHTS``) and ``FDSTOREREMOVE=1`` as datagrams to ``$NOTIFY_SOCKET`` (from one socket,
kept open); :func:`listen_fds` takes the stored fds back from ``LISTEN_FDS``/``LISTEN_FDNAMES``
(fds from 3 on, checked against ``LISTEN_PID``). The manager side, :class:`FdStore`, is what
:mod:`tether.server.supervisor` (and a test playing systemd) runs: it keeps the fds it is sent
and hands them to the next process the same way systemd does.

tether's extension: systemd names every fd of one message alike, so storing a session's master
and state memfd (two names), or removing the entries of many sessions, takes a message per
name. A manager that says so (:data:`NAMES_ENV` in the service's environment: tether's
supervisor) also reads :data:`NAMES_VARIABLE`, one name per fd (or per entry to remove), and
:func:`store_entries` / :func:`remove_names` then send one message where systemd needs many.
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
_MAX_DATAGRAM = 65536
_MAX_NAMES_TEXT = 32768  # bytes of names in one message (well within the datagram)
LEASE_VARIABLE = "X_TETHER_LEASE"
# tether's own variables (systemd ignores unknown ones): names, one per fd, ":"-separated ...
NAMES_VARIABLE = "X_TETHER_FDNAMES"
# ... read by a manager that sets this in the service's environment to "1"
NAMES_ENV = "TETHER_FDSTORE_NAMES"


# ----------------------------------------------------------------------------- service side
def notify_socket_address(environ: Mapping[str, str]) -> str | None:
    """``$NOTIFY_SOCKET`` as an address for :mod:`socket` (``@name``: the abstract namespace)."""
    path = environ.get("NOTIFY_SOCKET")
    if not path:
        return None
    return "\0" + path[1:] if path.startswith("@") else path


_sender: socket.socket | None = None  # made at the first notification, kept (close-on-exec)


def notify(message: str, fds: Sequence[int] = (), environ: Mapping[str, str] = os.environ) -> bool:
    """Send one notification (``KEY=value`` lines); False when there is no notify socket or
    the manager is gone (the caller carries on: without a manager there is no store)."""
    global _sender
    address = notify_socket_address(environ)
    if address is None:
        return False
    if _sender is None:
        _sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    ancillary = []
    if fds:
        rights = array.array("i", fds).tobytes()
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)]
    try:
        _sender.sendmsg([message.encode()], ancillary, 0, address)
    except OSError:
        return False
    return True


def store(name: str, fds: Sequence[int]) -> bool:
    """Keep ``fds`` in the manager's store under ``name`` (a name without ``:``)."""
    return notify(f"FDSTORE=1\nFDNAME={name}", fds)


def remove(name: str) -> bool:
    """Drop every fd stored under ``name``."""
    return notify(f"FDSTOREREMOVE=1\nFDNAME={name}")


def reads_names(environ: Mapping[str, str] = os.environ) -> bool:
    """The manager reads :data:`NAMES_VARIABLE` (tether's supervisor says so; systemd not)."""
    return environ.get(NAMES_ENV) == "1"


def store_entries(
    entries: Sequence[tuple[str, int]], environ: Mapping[str, str] = os.environ
) -> bool:
    """Keep each ``(name, fd)``: in one message where the manager reads a name per fd, else
    one per name (consecutive entries of one name go together). False if any send failed."""
    if not reads_names(environ):
        groups: list[tuple[str, list[int]]] = []
        for name, fd in entries:
            if groups and groups[-1][0] == name:
                groups[-1][1].append(fd)
            else:
                groups.append((name, [fd]))
        return all([store(name, fds) for name, fds in groups])
    sent = True
    for cut in _batches([name for name, _ in entries], _MAX_FDS_PER_MESSAGE):
        names = ":".join(name for name, _ in entries[cut])
        fds = [fd for _, fd in entries[cut]]
        sent &= notify(f"FDSTORE=1\n{NAMES_VARIABLE}={names}", fds, environ)
    return sent


def remove_names(names: Sequence[str], environ: Mapping[str, str] = os.environ) -> bool:
    """Drop every fd stored under each of ``names``: in one message where the manager reads
    :data:`NAMES_VARIABLE`, else one per name."""
    if not reads_names(environ):
        return all([remove(name) for name in names])
    sent = True
    for cut in _batches(names, len(names)):
        text = ":".join(names[cut])
        sent &= notify(f"FDSTOREREMOVE=1\n{NAMES_VARIABLE}={text}", (), environ)
    return sent


def _batches(names: Sequence[str], most: int) -> list[slice]:
    """``names`` cut into runs of at most ``most`` names and :data:`_MAX_NAMES_TEXT` bytes."""
    cuts: list[slice] = []
    start, size = 0, 0
    for index, name in enumerate(names):
        cost = len(name) + 1
        if index > start and (index - start >= most or size + cost > _MAX_NAMES_TEXT):
            cuts.append(slice(start, index))
            start, size = index, 0
        size += cost
    if start < len(names):
        cuts.append(slice(start, len(names)))
    return cuts


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
        # tether's extension: a name per fd (or per entry to remove) instead of one for all
        names = fields[NAMES_VARIABLE].split(":") if NAMES_VARIABLE in fields else None
        if fields.get("READY") == "1":
            self.ready = True
        if LEASE_VARIABLE in fields:
            self.lease_reports.append(fields[LEASE_VARIABLE])
        if fields.get("FDSTOREREMOVE") == "1":
            self.discard(*(names if names is not None else [name]))
        if fields.get("FDSTORE") == "1":
            labels = names if names is not None else [name] * len(fds)
            pairs = zip(labels, fds, strict=False)  # fds beyond the names: not kept
            kept = [(label, fd) for label, fd in pairs if label and ":" not in label]
            self.entries.extend(kept)
            taken = {fd for _, fd in kept}
            fds = [fd for fd in fds if fd not in taken]
        for fd in fds:  # sent without FDSTORE=1 or without a usable name: not ours to keep
            os.close(fd)

    def discard(self, *names: str) -> None:
        """Close and forget every fd stored under any of ``names``."""
        gone = set(names)
        kept = []
        for entry in self.entries:
            if entry[0] in gone:
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
