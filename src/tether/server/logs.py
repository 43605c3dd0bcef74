"""Logging: the JSON lifecycle log (one object per line, rotated by size) and stderr.

Events come from the session manager and the WebSocket front as ``(event, fields)``; each line
carries ``ts``, ``level``, ``event`` and whatever of ``key session project owner client addr pid
duration_ms code reason`` applies (docs/operations.md lists the events). Credentials are never
passed in, fields named like secrets are dropped all the same, and URLs are never logged.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import re
import time
from pathlib import Path
from typing import Any

LIFECYCLE_LOGGER = "tether.lifecycle"
_SECRET_FIELDS = frozenset({"token", "authorization", "cookie", "password", "secret"})


# One encoder for every line (``json.dumps`` with options builds a new one per call).
_ENCODE_JSON = json.JSONEncoder(default=str, separators=(",", ":")).encode


class JsonLineFormatter(logging.Formatter):
    """Formats a record carrying ``fields`` as one JSON object.

    Made for a line per connection: the timestamp's date and time are formatted once a second.
    """

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._stamp = ""  # "%Y-%m-%dT%H:%M:%S" of self._second, UTC

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = getattr(record, "fields", {})
        second = int(record.created)
        if second != self._second:
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        line = {
            "ts": f"{self._stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "event": record.getMessage(),
        }
        if _SECRET_FIELDS.isdisjoint(fields):
            line.update(fields)
        else:
            line.update({k: v for k, v in fields.items() if k not in _SECRET_FIELDS})
        return _ENCODE_JSON(line)


_PLAIN_VALUE = re.compile(r"[!#-<>-~]*")  # printable ASCII but space, '"' and '='


def _human_value(value: Any) -> str:
    """A field's value as one token: quoted and escaped (JSON string rules) unless plain, so
    that a value from a client (a JWT ``sub``) cannot add fields or control the terminal."""
    text = str(value)
    return text if _PLAIN_VALUE.fullmatch(text) else json.dumps(text)


class HumanFormatter(logging.Formatter):
    """``time level event key=value …`` for people reading stderr."""

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = getattr(record, "fields", {})
        pairs = " ".join(
            f"{k}={_human_value(v)}"
            for k, v in fields.items()
            if v is not None and k not in _SECRET_FIELDS
        )
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        return f"{stamp} {record.levelname.lower():7} {record.getMessage()} {pairs}".rstrip()


class JsonLogFile(logging.handlers.RotatingFileHandler):
    """:class:`~logging.handlers.RotatingFileHandler` made cheap enough for every connection.

    The standard one formats each record twice (once to decide on rollover) and stats the path
    twice per record; this one formats once and counts the bytes it wrote (the lines are ASCII:
    ``json.dumps`` escapes everything else). Every line is flushed, so the file is current.
    """

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        super().__init__(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
        self._size = self._current_size()

    def _current_size(self) -> int:
        try:
            return os.stat(self.baseFilename).st_size
        except OSError:
            return 0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"
            if self.maxBytes > 0 and self._size + len(line) >= self.maxBytes and self._size > 0:
                self.doRollover()
                self._size = self._current_size()
            if self.stream is None:
                self.stream = self._open()
            self.stream.write(line)
            self.stream.flush()
            self._size += len(line)
        except Exception:
            self.handleError(record)


def configure(
    log_file: Path | None,
    level: str,
    max_bytes: int,
    backups: int,
    stderr: bool = True,
    stderr_level: str | None = None,
) -> list[logging.Handler]:
    """Set up the lifecycle logger; returns the handlers it added (to close at shutdown).

    ``log_file`` (None: no file) gets JSON lines at ``level`` and rotates by size
    (:class:`JsonLogFile`: ``max_bytes`` per file, ``backups`` old files kept). stderr gets
    human-readable lines at ``stderr_level`` (default: ``level``).
    """
    logger = logging.getLogger(LIFECYCLE_LOGGER)
    levels = [level] + ([stderr_level or level] if stderr else [])
    logger.setLevel(min(_level_number(name) for name in levels))
    logger.propagate = False
    handlers: list[logging.Handler] = []
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler: logging.Handler = JsonLogFile(log_file, max_bytes, backups)
        handler.setFormatter(JsonLineFormatter())
        handler.setLevel(_level_number(level))
        handlers.append(handler)
    if stderr:
        console = logging.StreamHandler()
        console.setFormatter(HumanFormatter())
        console.setLevel(_level_number(stderr_level or level))
        handlers.append(console)
    for handler in handlers:
        logger.addHandler(handler)
    return handlers


def _level_number(name: str) -> int:
    return logging.getLevelNamesMapping()[name.upper()]


def remove(handlers: list[logging.Handler]) -> None:
    logger = logging.getLogger(LIFECYCLE_LOGGER)
    for handler in handlers:
        logger.removeHandler(handler)
        handler.close()


# Default level of each event; everything else is info. Storm refusals that do not trip a
# breaker are logged at debug by the server (a storm must not flood the log it is seen in).
_EVENT_LEVELS = {
    "error": logging.ERROR,
    "storm": logging.WARNING,
    "breaker": logging.WARNING,
    "store_error": logging.WARNING,
}


def log_event(event: str, **fields: Any) -> None:
    """Write one lifecycle event at its default level."""
    log_at(_EVENT_LEVELS.get(event, logging.INFO), event, **fields)


def log_at(level: int, event: str, **fields: Any) -> None:
    """Write one lifecycle event at ``level`` (a :mod:`logging` level number)."""
    if _LOGGER.isEnabledFor(level):
        # A record made here, not by Logger.log: that would walk the stack for the caller's
        # file and line, which no handler of ours prints.
        record = _LOGGER.makeRecord(
            LIFECYCLE_LOGGER, level, "", 0, event, (), None, extra={"fields": fields}
        )
        _LOGGER.handle(record)


_LOGGER = logging.getLogger(LIFECYCLE_LOGGER)
