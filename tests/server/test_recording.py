"""Session recording: the pure asciicast encoder (file names, parts, UTF-8, times, merging) and
the writer around it (files and modes, the bounded queue, slow and failing disks, resuming)."""

from __future__ import annotations

import errno
import json
import logging
import os
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.server import eventually
from tether.errors import ConfigError
from tether.server.clock import FakeClock
from tether.server.config import build_settings
from tether.server.recorder import Recorder, iter_merged, part_paths, prepare_directory
from tether.server.recording import (
    CastEncoder,
    Header,
    Write,
    file_stem,
    merge_parts,
    part_name,
    part_number,
)

pytestmark = pytest.mark.timeout(30)

KEY = "session_1700000000000_abcdef:default"
WALL = 1_700_000_000.25  # epoch seconds at monotonic 0 in these tests


def lines_of(writes: list[Write]) -> list[Any]:
    return [json.loads(line) for w in writes for line in w.data.decode().splitlines()]


def cast(path: Path) -> tuple[dict[str, Any], list[list[Any]]]:
    """A cast file as (header, events); fails on anything that is not asciicast v2."""
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n"), "every line is whole"
    header, *events = (json.loads(line) for line in text.splitlines())
    assert header["version"] == 2 and header["width"] > 0 and header["height"] > 0
    assert isinstance(header["timestamp"], int)
    times = [event[0] for event in events]
    assert times == sorted(times) and all(t >= 0 for t in times)
    assert all(len(e) == 3 and e[1] in "oir" and isinstance(e[2], str) for e in events)
    return header, events


# ----------------------------------------------------------------------------- file names
def test_file_names_are_filename_safe_and_never_shared() -> None:
    assert file_stem(KEY) == "session_1700000000000_abcdef%3Adefault"
    assert part_name(KEY, 0) == file_stem(KEY) + ".cast"
    assert part_name(KEY, 3) == file_stem(KEY) + ".3.cast"
    # A project id may hold dots and digits: part 1 of s:p is not part 0 of s:p.1
    assert part_name("s:p", 1) != part_name("s:p.1", 0)
    assert "/" not in file_stem("../../etc/passwd:x") and "." not in file_stem("a.b:c")
    assert part_number(file_stem(KEY), part_name(KEY, 12)) == 12
    assert part_number(file_stem(KEY), part_name(KEY, 0)) == 0
    for other in (part_name("s:other", 0), file_stem(KEY) + ".01.cast", file_stem(KEY) + ".x"):
        assert part_number(file_stem(KEY), other) is None


# ----------------------------------------------------------------------------- encoding
def encoder(max_bytes: int = 1 << 20, size: tuple[int, int] = (80, 24)) -> CastEncoder:
    return CastEncoder(size, WALL, max_bytes, env=(("TERM", "xterm-256color"),), title="t")


def test_header_then_output_events_timed_from_the_header() -> None:
    rec = encoder()
    first = rec.output(b"hello\r\n", 0.0)
    later = rec.output(b"\x1b[1mbold\x1b[0m", 2.5)
    assert [w.create for w in first + later] == [True, False]
    header, *events = lines_of(first + later)
    assert header == {
        "version": 2,
        "width": 80,
        "height": 24,
        "timestamp": 1_700_000_000,
        "env": {"TERM": "xterm-256color"},
        "title": "t",
    }
    assert events == [[0.25, "o", "hello\r\n"], [2.75, "o", "\x1b[1mbold\x1b[0m"]]


def test_a_character_split_across_reads_is_one_character() -> None:
    rec = encoder()
    euro = "€".encode()
    assert rec.output(b"a" + euro[:1], 0) != []  # "a" now, the cut character waits
    assert rec.output(euro[1:2], 1) == []
    (event,) = lines_of(rec.output(euro[2:] + b"b", 2))
    assert event[2] == "€b"
    (bad,) = lines_of(rec.output(b"x\xffy", 3))
    assert bad[2] == "x\ufffdy"
    rec.output(euro[:2], 4)
    (tail,) = lines_of(rec.finish(5))
    assert tail[1:] == ["o", "\ufffd"]  # a character cut short at the end


def test_resize_and_input_events() -> None:
    rec = encoder()
    assert rec.resize(100, 30, 0.0) == []  # before the header: the header carries it
    header, *_ = lines_of(rec.output(b"x", 0.5))
    assert (header["width"], header["height"]) == (100, 30)
    assert lines_of(rec.resize(120, 40, 1.0)) == [[1.25, "r", "120x40"]]
    assert lines_of(rec.input("é\r".encode(), 1.5)) == [[1.75, "i", "é\r"]]


def test_parts_rotate_at_the_size_limit_each_with_its_own_header() -> None:
    rec = encoder(max_bytes=400)
    writes = [w for i in range(40) for w in rec.output(b"0123456789" * 2, i * 0.5)]
    writes += rec.resize(90, 20, 30.0)
    writes += [w for i in range(10) for w in rec.output(b"after resize", 31.0 + i)]
    parts = sorted({w.part for w in writes})
    assert parts == list(range(len(parts))) and len(parts) > 3
    for part in parts:
        data = b"".join(w.data for w in writes if w.part == part)
        assert len(data) <= 400
        assert next(w.create for w in writes if w.part == part) is True
        header, *events = (json.loads(line) for line in data.decode().splitlines())
        assert header["version"] == 2 and events
        assert 0 <= events[0][0] < 1  # each part counts from its own header's (whole) second
    assert ["r", "90x20"] in [line[1:] for line in lines_of(writes) if isinstance(line, list)]
    last = lines_of([w for w in writes if w.part == parts[-1]])
    assert (last[0]["width"], last[0]["height"]) == (90, 20)  # a later part's header has it


def test_an_event_larger_than_a_part_is_written_whole() -> None:
    rec = encoder(max_bytes=4096)
    big = rec.output(b"y" * 10_000, 0)
    again = rec.output(b"z" * 10_000, 1)
    assert [(w.part, w.create) for w in big + again] == [(0, True), (1, True)]
    assert lines_of(again)[1][2] == "z" * 10_000


def test_continuing_a_part_keeps_its_header_time() -> None:
    header = Header(80, 24, 1_700_000_000)
    rec = CastEncoder((80, 24), WALL, 1 << 20, part=2, part_size=500, header=header)
    (write,) = rec.output(b"more", 10.0)
    assert (write.part, write.create) == (2, False)
    assert lines_of([write]) == [[10.25, "o", "more"]]


def test_merged_parts_are_one_cast_counted_from_the_first_header() -> None:
    first = [b'{"version": 2, "width": 80, "height": 24, "timestamp": 100, "env": {}}\n']
    first += [b'[0.500000, "o", "a"]\n', b'[1.000000, "o", "b"]\n']
    second = [b'{"version": 2, "width": 100, "height": 30, "timestamp": 105, "env": {}}\n']
    second += [b'[0.250000, "o", "c"]\n', b'[0.500000, "o", "cut sh']
    merged = list(merge_parts([first, [b"not a cast\n", b"[1, ]\n"], second]))
    header, *events = (json.loads(line) for line in merged)
    assert header["timestamp"] == 100
    assert events == [[0.5, "o", "a"], [1.0, "o", "b"], [5.0, "r", "100x30"], [5.25, "o", "c"]]


# ----------------------------------------------------------------------------- the writer
@dataclass
class Info:
    key: str = KEY
    cols: int = 80
    rows: int = 24
    name: str = ""


@dataclass
class FakeSession:
    info: Info = field(default_factory=Info)
    recorder: Any = None


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    path = tmp_path / "casts"
    prepare_directory(path)
    return path


def make(directory: Path, clock: FakeClock, **options: Any) -> Recorder:
    return Recorder(directory, clock.monotonic, clock.time, shell="/bin/bash", **options)


def test_the_directory_is_private(tmp_path: Path) -> None:
    path = tmp_path / "new" / "casts"
    prepare_directory(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    path.chmod(0o755)
    with pytest.raises(ConfigError, match="chmod 700"):
        prepare_directory(path)


async def test_output_is_on_disk_within_a_second_in_a_private_file(directory: Path) -> None:
    clock = FakeClock(wall=WALL)
    recorder = make(directory, clock)
    session = FakeSession()
    recorder.start(session, resume=False)  # type: ignore[arg-type]
    try:
        session.recorder.output(b"hello\r\n")
        clock.advance(1.5)
        session.recorder.resize(100, 30)
        session.recorder.input(b"secret")  # input is off by default
        path = directory / part_name(KEY, 0)
        await eventually(lambda: path.exists() and b"100x30" in path.read_bytes(), timeout=3.0)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        header, events = cast(path)
        assert header["env"] == {"TERM": "xterm-256color", "SHELL": "/bin/bash"}
        assert [e[1:] for e in events] == [["o", "hello\r\n"], ["r", "100x30"]]
        assert events[1][0] == pytest.approx(events[0][0] + 1.5)
    finally:
        recorder.close()


def test_a_full_queue_drops_and_counts_and_never_waits(directory: Path) -> None:
    clock = FakeClock(wall=WALL)
    dropped: list[int] = []
    release = threading.Event()

    def slow_write(fd: int, data: memoryview) -> int:
        release.wait(10)  # a disk that hangs
        return os.write(fd, data)

    recorder = make(directory, clock, queue_bytes=1024, on_dropped=dropped.append, write=slow_write)
    session = FakeSession()
    recorder.start(session, resume=False)  # type: ignore[arg-type]
    for _ in range(100):
        session.recorder.output(b"x" * 100)  # returns at once although nothing is written
    # At most two queues' worth got in (the writer may have taken one before it hung)
    assert session.recorder.dropped == sum(dropped) >= 100 - 2 * 1024 // 100
    assert session.recorder.stats()["dropped_events"] == session.recorder.dropped
    release.set()
    recorder.close()
    _, events = cast(directory / part_name(KEY, 0))
    assert len(events) + session.recorder.dropped == 100  # every event written or counted


def test_a_disk_error_is_logged_once_counted_and_leaves_no_half_line(
    directory: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tether.lifecycle")
    clock = FakeClock(wall=WALL)
    errors: list[None] = []
    failing = [False]

    def flaky_write(fd: int, data: memoryview) -> int:
        if failing[0]:
            os.write(fd, data[:7])  # part of it got out, then the disk was full
            raise OSError(errno.ENOSPC, "No space left on device")
        return os.write(fd, data)

    recorder = make(directory, clock, write=flaky_write, on_error=lambda: errors.append(None))
    session = FakeSession()
    recorder.start(session, resume=False)  # type: ignore[arg-type]
    session.recorder.output(b"before")
    recorder.flush()
    failing[0] = True
    for text in (b"lost-1", b"lost-2"):
        session.recorder.output(text)
        recorder.flush()
    failing[0] = False
    session.recorder.output(b"after")
    recorder.close()
    assert len(errors) == 2 and session.recorder.stats()["dropped_events"] == 2
    logged = [r for r in caplog.records if r.getMessage() == "recording"]
    assert [r.fields["ok"] for r in logged] == [False, True]  # type: ignore[attr-defined]
    _, events = cast(directory / part_name(KEY, 0))
    assert [e[2] for e in events] == ["before", "after"]


def test_resuming_appends_after_the_last_whole_line(directory: Path) -> None:
    clock = FakeClock(wall=WALL)
    first = make(directory, clock)
    session = FakeSession()
    first.start(session, resume=False)  # type: ignore[arg-type]
    session.recorder.output(b"before upgrade")
    first.close()
    path = directory / part_name(KEY, 0)
    with open(path, "ab") as handle:
        handle.write(b'[3.0, "o", "cut by a cra')  # the old process died mid-line
    clock.advance(10)
    second = make(directory, clock)
    adopted = FakeSession(Info(cols=100, rows=30))
    second.start(adopted, resume=True)  # type: ignore[arg-type]
    adopted.recorder.output(b"after upgrade")
    second.close()
    assert part_paths(directory, KEY) == [path]
    _, events = cast(path)
    assert [e[1:] for e in events] == [
        ["o", "before upgrade"],
        ["r", "100x30"],
        ["o", "after upgrade"],
    ]
    assert events[2][0] == pytest.approx(events[0][0] + 10)


def test_a_new_session_under_a_recorded_key_starts_a_continuation(directory: Path) -> None:
    clock = FakeClock(wall=WALL)
    recorder = make(directory, clock, max_bytes=4096)
    for text in (b"first shell", b"second shell"):
        session = FakeSession()
        recorder.start(session, resume=False)  # type: ignore[arg-type]
        session.recorder.output(text)
        recorder.stop(session)  # type: ignore[arg-type]
        clock.advance(3)
    recorder.close()
    paths = part_paths(directory, KEY)
    assert [p.name for p in paths] == [part_name(KEY, 0), part_name(KEY, 1)]
    merged = b"".join(iter_merged(paths)).decode().splitlines()
    _header, *events = (json.loads(line) for line in merged)
    assert [e[2] for e in events] == ["first shell", "second shell"]
    assert events[1][0] >= events[0][0] + 2  # counted from the first header


def test_settings_resolve_the_directory_and_name_a_bad_size(tmp_path: Path) -> None:
    settings = build_settings({"record_dir": "casts", "record_input": "true"}, cwd=tmp_path)
    assert settings.record_dir == tmp_path.resolve() / "casts" and settings.record_input
    assert (settings.record_max_bytes, settings.record_queue_bytes) == (64 << 20, 8 << 20)
    with pytest.raises(ConfigError) as refused:
        build_settings({"record_max_bytes": 100}, cwd=tmp_path)
    assert refused.value.setting == "record-max-bytes"
