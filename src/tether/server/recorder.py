"""Session recording, the I/O (docs/operations.md, "Recording sessions"): the files of
``--record-dir`` and the writer thread around the pure :mod:`tether.server.recording`.

A session's read path only appends to a bounded queue (:meth:`SessionRecording.output`); one
writer thread encodes the queue and appends it to the files a few times a second. When the
queue is full — a slow or stuck disk — events are dropped and counted, never waited for; a
failed write is undone (no half line), logged once, counted, and the session goes on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tether.errors import ConfigError
from tether.server import logs
from tether.server.recording import (
    SUFFIX,
    CastEncoder,
    Header,
    Write,
    file_stem,
    merge_parts,
    part_name,
    part_number,
)

if TYPE_CHECKING:
    from tether.server.config import Settings
    from tether.server.manager import SessionManager
    from tether.server.session import Session

MiB = 1024 * 1024
FLUSH_INTERVAL = 0.25  # seconds between the writer's rounds: a cast is on disk within a second


# ----------------------------------------------------------------------------- files
def part_paths(directory: Path, key: str) -> list[Path]:
    """The parts of ``key``'s recording in order (none: empty)."""
    stem = file_stem(key)
    found: list[tuple[int, Path]] = []
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    for name in names:
        number = part_number(stem, name)
        if number is not None:
            found.append((number, directory / name))
    return [path for _, path in sorted(found)]


def iter_merged(paths: Iterable[Path], chunk_size: int = 256 * 1024) -> Generator[bytes]:
    """The merged cast of ``paths`` (:func:`merge_parts`) in chunks of about ``chunk_size``."""

    def lines(path: Path) -> Iterator[bytes]:
        try:
            with open(path, "rb") as handle:
                yield from handle
        except OSError:
            return

    chunk: list[bytes] = []
    held = 0
    for line in merge_parts(lines(path) for path in paths):
        chunk.append(line)
        held += len(line)
        if held >= chunk_size:
            yield b"".join(chunk)
            chunk, held = [], 0
    if chunk:
        yield b"".join(chunk)


def prepare_directory(path: Path) -> None:
    """Create the recording directory (mode 700); ConfigError when unusable or open to others:
    it holds what users saw and typed."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        mode = path.stat().st_mode
    except OSError as exc:
        raise ConfigError("record-dir", f"cannot create {path}: {exc.strerror}") from None
    if mode & 0o077:
        raise ConfigError(
            "record-dir",
            f"{path} is accessible by others (mode {mode & 0o777:o}): chmod 700 {path}",
        )


def _resume_point(path: Path) -> tuple[Header, int] | None:
    """The header and the size to append at of a part (cut back to its last whole line, in
    case a crash cut one short); None when it is not a readable cast."""
    try:
        with open(path, "r+b") as handle:
            header = Header.parse(handle.readline())
            size = cut = handle.seek(0, os.SEEK_END)
            while cut > 0:
                start = max(0, cut - 64 * 1024)
                handle.seek(start)
                newline = handle.read(cut - start).rfind(b"\n")
                if newline >= 0:
                    cut = start + newline + 1
                    break
                cut = start
            if cut < size:
                handle.truncate(cut)
            return header, cut
    except (OSError, ValueError, KeyError, TypeError):
        return None


# ----------------------------------------------------------------------------- recorder
_Event = tuple["SessionRecording", str, float, Any]


class SessionRecording:
    """One session's side of the recorder: what ``Session.recorder`` holds. Called on the event
    loop only; it enqueues (or drops and counts) and returns."""

    def __init__(self, recorder: Recorder, key: str) -> None:
        self.key = key
        self.dropped = 0  # events the queue had no room for (the writer counts its own)
        self.failed = 0  # events lost to a disk error (written by the writer thread only)
        self.encoder: CastEncoder | None = None  # the writer thread's
        self._recorder = recorder

    def output(self, data: bytes) -> None:
        self._recorder.enqueue(self, "o", data)

    def input(self, data: bytes) -> None:
        if self._recorder.record_input:
            self._recorder.enqueue(self, "i", data)

    def resize(self, cols: int, rows: int) -> None:
        self._recorder.enqueue(self, "r", (cols, rows))

    def stats(self) -> dict[str, Any]:
        return {"file": file_stem(self.key) + SUFFIX, "dropped_events": self.dropped + self.failed}


class Recorder:
    """Every recording of one server: the bounded queue and the writer thread."""

    def __init__(
        self,
        directory: Path,
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
        *,
        max_bytes: int = 64 * MiB,
        queue_bytes: int = 8 * MiB,
        record_input: bool = False,
        shell: str = "",
        on_dropped: Callable[[int], None] = lambda count: None,
        on_error: Callable[[], None] = lambda: None,
        write: Callable[[int, memoryview], int] = os.write,
    ) -> None:
        self.directory = directory
        self.record_input = record_input
        self.shell = shell  # the header's SHELL
        self._clock, self._wall = clock, wall_clock
        self._max_bytes, self._queue_bytes = max_bytes, queue_bytes
        self._on_dropped, self._on_error, self._write = on_dropped, on_error, write
        self._queue: deque[_Event] = deque()
        self._queued = 0  # bytes ever queued (the loop's count) ...
        self._taken = 0  # ... and taken by the writer (the writer's): the difference is queued
        self._lock = threading.Lock()  # one round of writing at a time
        self._wake = threading.Event()  # a quarter of the queue waits: write now
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._failing = False

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
        **hooks: Any,
    ) -> Recorder:
        """The recorder ``--record-dir`` asks for (ConfigError: the directory is unusable)."""
        assert settings.record_dir is not None
        prepare_directory(settings.record_dir)
        return cls(
            settings.record_dir,
            clock,
            wall_clock,
            max_bytes=settings.record_max_bytes,
            queue_bytes=settings.record_queue_bytes,
            record_input=settings.record_input,
            shell=settings.shell[0] if settings.shell else "",
            **hooks,
        )

    def watch(self, manager: SessionManager) -> None:
        """Record every session ``manager`` creates or adopts, until it ends."""
        manager.on_created.append(lambda session: self.start(session, resume=False))
        manager.on_adopted.append(lambda session: self.start(session, resume=True))
        manager.on_ended.append(self.stop)
        manager.on_flush.append(self.flush)

    # ------------------------------------------------------------ the event loop's side
    def start(self, session: Session, *, resume: bool) -> None:
        """Record ``session`` from now on: a new part, or (``resume``: a session taken over
        from the previous process) appending to its last part."""
        recording = SessionRecording(self, session.info.key)
        info = session.info
        env = (("TERM", "xterm-256color"), ("SHELL", self.shell))
        title = str(getattr(info, "name", "") or "")
        self._put((recording, "start", self._clock(), ((info.cols, info.rows), env, title, resume)))
        session.recorder = recording
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="tether-recorder", daemon=True)
            self._thread.start()

    def stop(self, session: Session) -> None:
        recording = session.recorder
        if isinstance(recording, SessionRecording):
            self._put((recording, "end", self._clock(), None))

    def enqueue(self, recording: SessionRecording, kind: str, data: Any) -> None:
        size = len(data) if kind != "r" else 16
        if self._queued - self._taken + size > self._queue_bytes:
            recording.dropped += 1
            self._on_dropped(1)
            return
        self._queued += size
        self._queue.append((recording, kind, self._clock(), data))
        if self._queued - self._taken > self._queue_bytes // 4 and not self._wake.is_set():
            self._wake.set()  # busy output: do not wait for the next round

    def _put(self, event: _Event) -> None:
        self._queue.append(event)  # start and end are never dropped

    def flush(self) -> None:
        """Write what is queued now (before an upgrade's exec, which ends the thread)."""
        self._write_round()

    def close(self) -> None:
        """Write what is queued and stop the writer thread (blocking: call it in a thread)."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._write_round()

    # ------------------------------------------------------------ the writer thread
    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(FLUSH_INTERVAL)
            self._wake.clear()
            try:
                self._write_round()
            except Exception as exc:  # a bug must not stop every recording for good
                logs.log_at(logging.ERROR, "recording", ok=False, reason=type(exc).__name__)

    def _write_round(self) -> None:
        with self._lock:
            batches: dict[tuple[SessionRecording, int], list[Write]] = {}
            while self._queue:
                recording, kind, now, data = self._queue.popleft()
                if kind in "oir":
                    self._taken += len(data) if kind != "r" else 16
                elif kind == "start":  # it looks at the files: they must be written first
                    self._write_batches(batches)
                for write in self._encode(recording, kind, now, data):
                    batches.setdefault((recording, write.part), []).append(write)
            self._write_batches(batches)

    def _write_batches(self, batches: dict[tuple[SessionRecording, int], list[Write]]) -> None:
        for (recording, part), writes in batches.items():
            self._write_part(recording, part, writes)
        batches.clear()

    def _encode(self, recording: SessionRecording, kind: str, now: float, data: Any) -> list[Write]:
        if kind == "start":
            recording.encoder = self._encoder(recording.key, *data)
            (cols, rows), resume = data[0], data[3]
            return recording.encoder.resize(cols, rows, now) if resume else []
        encoder = recording.encoder
        if encoder is None:
            return []
        if kind == "o":
            return encoder.output(data, now)
        if kind == "i":
            return encoder.input(data, now)
        if kind == "r":
            cols, rows = data
            return encoder.resize(cols, rows, now)
        recording.encoder = None  # end
        return encoder.finish(now)

    def _encoder(
        self,
        key: str,
        size: tuple[int, int],
        env: tuple[tuple[str, str], ...],
        title: str,
        resume: bool,
    ) -> CastEncoder:
        wall_offset = self._wall() - self._clock()
        parts = part_paths(self.directory, key)
        last = part_number(file_stem(key), parts[-1].name) if parts else None
        point = _resume_point(parts[-1]) if resume and parts else None
        if last is not None and point is not None:
            header, part_size = point
            return CastEncoder(
                size, wall_offset, self._max_bytes, env=env, title=title,
                part=last, part_size=part_size, header=header,
            )  # fmt: skip
        part = 0 if last is None else last + 1
        return CastEncoder(size, wall_offset, self._max_bytes, env=env, title=title, part=part)

    def _write_part(self, recording: SessionRecording, part: int, writes: list[Write]) -> None:
        path = self.directory / part_name(recording.key, part)
        create = writes[0].create
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
        data = b"".join(write.data for write in writes)
        try:
            fd = os.open(path, flags | (os.O_TRUNC if create else 0), 0o600)
        except OSError as exc:
            self._failed(recording, writes, exc, create)
            return
        before = -1
        try:
            before = 0 if create else os.fstat(fd).st_size
            view = memoryview(data)
            while view:
                view = view[self._write(fd, view) :]
        except OSError as exc:
            if before >= 0:
                self._undo(fd, before)
            self._failed(recording, writes, exc, create)
        else:
            if self._failing:
                self._failing = False
                logs.log_event("recording", ok=True, key=recording.key)
        finally:
            os.close(fd)

    def _undo(self, fd: int, size: int) -> None:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, size)  # no half line: the cast stays readable

    def _failed(
        self, recording: SessionRecording, writes: list[Write], error: OSError, create: bool
    ) -> None:
        lost = sum(write.events for write in writes)
        recording.failed += lost
        self._on_dropped(lost)
        self._on_error()
        if create and recording.encoder is not None:
            recording.encoder.restart_part()
        if not self._failing:  # once, until a write succeeds again
            self._failing = True
            reason = f"{type(error).__name__}: {error.strerror or error}"
            logs.log_at(logging.ERROR, "recording", ok=False, key=recording.key, reason=reason)
