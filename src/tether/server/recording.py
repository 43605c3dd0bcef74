"""Session recording as asciicast v2 (the format ``asciinema play`` reads), the pure part:
docs/operations.md, "Recording sessions".

:class:`CastEncoder` takes bytes and a time and gives the lines of a cast, split into *parts*
of at most ``max_bytes`` (``STEM.cast``, ``STEM.1.cast``, …, each a valid cast with its own
header); it decodes UTF-8 incrementally, so that a character split across two PTY reads is one
character, and invalid bytes become U+FFFD. :func:`merge_parts` joins the parts into one cast.
No clock, no files: :mod:`tether.server.recorder` is the I/O around it.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

SUFFIX = ".cast"
CONTENT_TYPE = "application/x-asciicast"
_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


# ----------------------------------------------------------------------------- file names
def file_stem(key: str) -> str:
    """The file name of ``key``'s recording without suffix: every byte of its UTF-8 outside
    ``[A-Za-z0-9_-]`` as ``%XX`` (``:`` → ``%3A``, ``.`` → ``%2E``), so no two keys share one,
    and a name holds no ``/`` nor the ``.`` that starts the part number."""
    return "".join(
        chr(byte) if chr(byte) in _SAFE else f"%{byte:02X}" for byte in key.encode("utf-8")
    )


def part_name(key: str, part: int) -> str:
    """``STEM.cast`` for the first part, ``STEM.N.cast`` for continuation ``N``."""
    return file_stem(key) + (f".{part}" if part else "") + SUFFIX


def part_number(stem: str, name: str) -> int | None:
    """The part a file name is of ``stem``'s recording (None: it is not one)."""
    if not (name.startswith(stem + ".") and name.endswith(SUFFIX)):
        return None
    middle = name[len(stem) + 1 : -len(SUFFIX)]
    if middle == "":
        return 0
    return int(middle) if middle.isdigit() and not middle.startswith("0") else None


# ----------------------------------------------------------------------------- encoding
@dataclass(frozen=True)
class Header:
    """The first line of a cast: terminal size, start time (whole epoch seconds), env, title."""

    width: int
    height: int
    timestamp: int
    env: tuple[tuple[str, str], ...] = ()
    title: str = ""

    def encode(self) -> bytes:
        header: dict[str, Any] = {
            "version": 2,
            "width": self.width,
            "height": self.height,
            "timestamp": self.timestamp,
            "env": dict(self.env),
        }
        if self.title:
            header["title"] = self.title
        return json.dumps(header, ensure_ascii=False).encode() + b"\n"

    @classmethod
    def parse(cls, line: bytes) -> Header:
        """The header of a cast; ValueError when ``line`` is not a version 2 header."""
        data = json.loads(line)
        if not isinstance(data, dict) or data.get("version") != 2:
            raise ValueError("not an asciicast v2 header")
        env = data.get("env")
        env = env if isinstance(env, dict) else {}
        return cls(
            int(data["width"]),
            int(data["height"]),
            int(data["timestamp"]),
            tuple((str(k), str(v)) for k, v in env.items()),
            str(data.get("title", "")),
        )


@dataclass(frozen=True)
class Write:
    """Bytes for part ``part``; ``create``: they start a new file (its header first)."""

    part: int
    data: bytes
    create: bool
    events: int


def event_line(time: float, kind: str, text: str) -> bytes:
    return f"[{time:.6f}, {json.dumps(kind)}, {json.dumps(text, ensure_ascii=False)}]\n".encode()


class CastEncoder:
    """One session's recording as cast lines, in parts of at most ``max_bytes`` (an event is
    never split: a part holds at least one, even if longer).

    Times are monotonic seconds (``now``); ``wall_offset`` turns them into epoch seconds, which
    headers carry and event times count from. ``part``/``part_size``/``header``: continue an
    existing part (after an upgrade or a crash) instead of starting one.
    """

    def __init__(
        self,
        size: tuple[int, int],
        wall_offset: float,
        max_bytes: int,
        *,
        env: tuple[tuple[str, str], ...] = (),
        title: str = "",
        part: int = 0,
        part_size: int = 0,
        header: Header | None = None,
    ) -> None:
        self.size = size
        self.part = part
        self.part_size = part_size  # 0: the part is not started (its header comes first)
        self._wall_offset = wall_offset
        self._max_bytes = max_bytes
        self._env, self._title = env, title
        self._start = header.timestamp if header is not None and part_size else 0
        self._output = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._input = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def output(self, data: bytes, now: float) -> list[Write]:
        return self._text("o", self._output.decode(data), now)

    def input(self, data: bytes, now: float) -> list[Write]:
        return self._text("i", self._input.decode(data), now)

    def resize(self, cols: int, rows: int, now: float) -> list[Write]:
        self.size = (cols, rows)
        if not self.part_size:
            return []  # the header of the part about to start carries the size
        return self._event("r", f"{cols}x{rows}", now)

    def finish(self, now: float) -> list[Write]:
        """The end of the stream: a character cut short at the end becomes U+FFFD."""
        writes = self._text("o", self._output.decode(b"", final=True), now)
        return writes + self._text("i", self._input.decode(b"", final=True), now)

    def restart_part(self) -> None:
        """The current part's file was lost (a failed write of its header): start it again."""
        self.part_size = 0

    def _text(self, kind: str, text: str, now: float) -> list[Write]:
        return self._event(kind, text, now) if text else []

    def _event(self, kind: str, text: str, now: float) -> list[Write]:
        wall = now + self._wall_offset
        line = event_line(max(0.0, wall - self._start), kind, text)
        if self.part_size and self.part_size + len(line) > self._max_bytes:
            self.part += 1
            self.part_size = 0
        if self.part_size:
            self.part_size += len(line)
            return [Write(self.part, line, False, 1)]
        self._start = int(wall)
        header = Header(*self.size, self._start, self._env, self._title).encode()
        line = event_line(max(0.0, wall - self._start), kind, text)
        self.part_size = len(header) + len(line)
        return [Write(self.part, header + line, True, 1)]


def merge_parts(parts: Iterable[Iterable[bytes]]) -> Iterator[bytes]:
    """The lines of several parts as one cast: the first header, then every event with its
    time moved to count from it (a continuation's own header becomes a resize event when the
    size changed). Lines cut short (no newline: being written) or unreadable are skipped."""
    first: Header | None = None
    size = (0, 0)
    for lines in parts:
        header: Header | None = None
        for line in lines:
            if not line.endswith(b"\n"):
                continue
            if header is None:
                try:
                    header = Header.parse(line)
                except (ValueError, KeyError, TypeError):
                    break  # not a cast: skip the whole part
                if first is None:
                    first, size = header, (header.width, header.height)
                    yield line
                elif (header.width, header.height) != size:
                    size = (header.width, header.height)
                    shift = float(header.timestamp - first.timestamp)
                    yield event_line(shift, "r", f"{size[0]}x{size[1]}")
                continue
            shifted = _shift(line, float(header.timestamp - first.timestamp) if first else 0.0)
            if shifted is not None:
                yield shifted


def _shift(line: bytes, seconds: float) -> bytes | None:
    """An event line with ``seconds`` added to its time (None: not an event line)."""
    stamp, comma, rest = line.partition(b",")
    if not comma or not stamp.startswith(b"["):
        return None
    try:
        time = float(stamp[1:])
    except ValueError:
        return None
    return b"[%.6f," % (time + seconds) + rest if seconds else line
