"""The hand-over: what a server process gives the process that replaces it (docs/architecture.md,
"Surviving the server process").

One versioned format, written into a memfd whose fd the new process inherits across ``execv``:

    MAGIC | version (u32, big-endian) | length of the JSON header (u64) | JSON header | blobs

The JSON header holds the generation, the listening sockets' fds, the tombstones and, per
session, its record (the facts of :class:`~tether.server.session.SessionInfo`), the master fd,
the ring's head and the length of the held ring bytes, the tail's mode tracker, how long the
session has been detached, and its fd-store names. The held ring bytes follow the header, in
session order, so that a megabyte of output is not base64-encoded.

A reader refuses (:class:`~tether.errors.HandoverError`) a version it does not know: the old
process asks the new code which versions it reads *before* it hands over (the upgrade's
pre-check), so that refusal never strands a session.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field, fields
from typing import Any

from tether.errors import HandoverError

HANDOVER_VERSION = 1
READABLE_VERSIONS = frozenset({1})
MAGIC = b"tether-handover\n"
_PREFIX = struct.Struct(">IQ")
ENV_FD = "TETHER_HANDOVER_FD"  # the inherited memfd, in the new process's environment


@dataclass(frozen=True)
class SessionHandover:
    """One session as it crosses to the next process."""

    info: dict[str, Any]  # SessionInfo's fields; input_counts as [[client, count], …] in order
    fd: int  # the PTY master, inheritable
    head: int  # the ring's head (absolute stream position)
    held: bytes = field(repr=False)  # the ring's bytes, ending at head
    tail_modes: dict[str, Any]  # ModeTracker.to_state() of the modes at the ring's tail
    detached_for: float  # seconds since the last client left (0 when attached)
    input_bytes: int
    state_fd: int = -1  # the crash-survival state memfd (server/survival.py), or -1
    store_name: str = ""  # its name in the file-descriptor store ("" when none)


@dataclass(frozen=True)
class Handover:
    generation: int
    listen_fds: tuple[int, ...]
    sessions: tuple[SessionHandover, ...]
    tombstones: tuple[dict[str, Any], ...] = ()  # key, owner, code, reason, expires_in
    version: int = HANDOVER_VERSION


def write(handover: Handover) -> int:
    """The hand-over in a new memfd (inheritable, positioned at 0); returns its fd."""
    # Each session's fields as they are (json.dumps reads the nested dicts): asdict's deep copy
    # cost 50 µs a session, 50 ms of an upgrade's pause with 1,000 sessions.
    names = [f.name for f in fields(SessionHandover)]
    sessions = [
        {name: getattr(s, name) for name in names} | {"held": len(s.held)}
        for s in handover.sessions
    ]
    header = {
        "generation": handover.generation,
        "listen_fds": list(handover.listen_fds),
        "tombstones": list(handover.tombstones),
        "sessions": sessions,
    }
    encoded = json.dumps(header, separators=(",", ":")).encode()
    fd = os.memfd_create("tether-handover", 0)  # no MFD_CLOEXEC: the exec'd process reads it
    with open(os.dup(fd), "wb") as out:
        out.write(MAGIC + _PREFIX.pack(handover.version, len(encoded)) + encoded)
        for session in handover.sessions:
            out.write(session.held)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def read(fd: int) -> Handover:
    """Read (and close) the hand-over memfd ``fd``; HandoverError when it cannot be trusted."""
    try:
        with open(fd, "rb", closefd=True) as source:
            data = source.read()
    except OSError as exc:
        raise HandoverError(f"cannot read the hand-over: {exc.strerror}") from None
    prefix_end = len(MAGIC) + _PREFIX.size
    if not data.startswith(MAGIC) or len(data) < prefix_end:
        raise HandoverError("not a tether hand-over")
    version, length = _PREFIX.unpack_from(data, len(MAGIC))
    if version not in READABLE_VERSIONS:
        raise HandoverError(f"hand-over version {version} is not one this tether reads")
    try:
        header = json.loads(data[prefix_end : prefix_end + length])
        return _parse(header, memoryview(data)[prefix_end + length :], version)
    except (ValueError, KeyError, TypeError) as exc:
        raise HandoverError(f"malformed hand-over: {exc!r}") from None


def _parse(header: dict[str, Any], blobs: memoryview, version: int) -> Handover:
    sessions = []
    offset = 0
    for entry in header["sessions"]:
        length = int(entry["held"])
        if offset + length > len(blobs):
            raise ValueError("ring bytes cut short")
        held = blobs[offset : offset + length].tobytes()
        offset += length
        sessions.append(SessionHandover(**(entry | {"held": held})))
    return Handover(
        generation=int(header["generation"]),
        listen_fds=tuple(int(fd) for fd in header["listen_fds"]),
        sessions=tuple(sessions),
        tombstones=tuple(header["tombstones"]),
        version=version,
    )


def inherited_fd(environ: dict[str, str] | os._Environ[str]) -> int | None:
    """The hand-over fd this process inherited (and forget it, so children do not see it)."""
    value = environ.pop(ENV_FD, None)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise HandoverError(f"{ENV_FD} is not a file descriptor: {value!r}") from None
