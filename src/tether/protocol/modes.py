"""Terminal-mode tracking for screen restore (docs/protocol.md, section 3, "Screen restore").

When a client attaches after output was dropped from the ring, the bytes that set the modes in
force (alternate screen, scroll region, mouse tracking, …) may be gone. The server feeds a
:class:`ModeTracker` every byte the ring drops, so the tracker knows the modes at the ring's tail.
At attach time it copies the tracker, uses :meth:`ModeTracker.safe_start` to skip the few bytes
that would start the replay inside an escape sequence or a UTF-8 character, feeds those skipped
bytes to the copy, and sends :meth:`TerminalModes.restore_sequence` of the copy before the replay.

The byte stream is parsed as UTF-8 text with 7-bit escape sequences (8-bit C1 controls are not
recognised: in UTF-8 they are continuation bytes). The grammar, kept deliberately simple:

* every ESC starts a new sequence, whatever came before it (it aborts an unfinished one and ends
  a control string), so mode-setting sequences can be found by one regex scan;
* CSI ``ESC [ params(0x30-0x3F)* intermediates(0x20-0x2F)* final(0x40-0x7E)``; any other byte
  aborts it and is then read as ordinary text;
* control strings ``ESC ]`` (OSC), ``ESC P|X|^|_`` (DCS, SOS, PM, APC): their body runs up to the
  next ESC (normally the ST ``ESC \\``), or BEL (OSC only), CAN or SUB. Bodies are skipped, never
  buffered, so a huge or unterminated string costs no memory;
* other escapes ``ESC intermediates(0x20-0x2F)* final(0x30-0x7E)``;
* a sequence longer than 1024 bytes is garbage: aborted at its 1024th byte, its effect ignored.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

ESC = 0x1B
_MAX_SEQUENCE = 1024

_MOUSE_TRACKING = frozenset({9, 1000, 1001, 1002, 1003})
_MOUSE_ENCODINGS = frozenset({1005, 1006, 1015})
# Private modes (DECSET/DECRST) kept as flags: mode -> (field, field value when the mode is set).
_FLAG_MODES: dict[int, tuple[str, bool]] = {
    1: ("app_cursor_keys", True),
    6: ("origin_mode", True),
    7: ("autowrap_off", False),
    25: ("cursor_hidden", False),
    47: ("alt_screen", True),
    1047: ("alt_screen", True),
    1049: ("alt_screen", True),
    1004: ("focus_events", True),
    2004: ("bracketed_paste", True),
}

# Only these sequences change a mode we track, and every match starts at an ESC (see the
# grammar): DECSET/DECRST, DECSTBM, DECSTR, keypad and full reset. Each alternative is as narrow
# as the grammar allows (a region with other parameter bytes is ignored anyway) because the regex
# engine tries this at every ESC, and colourful output has one every few bytes.
_MODE_SEQUENCE = re.compile(rb"\x1b(?:\[\?([\x30-\x3f]*)([hl])|\[([0-9;]*)r|(\[!p)|([=>c]))")
_CSI = re.compile(rb"\x1b\[[\x30-\x3f]*[\x20-\x2f]*[\x40-\x7e]")
_CSI_PREFIX = re.compile(rb"\x1b\[[\x30-\x3f]*[\x20-\x2f]*")
_ESCAPE = re.compile(rb"\x1b[\x20-\x2f]*[\x30-\x7e]")
_ESCAPE_PREFIX = re.compile(rb"\x1b[\x20-\x2f]*")
_OSC_STOP = re.compile(rb"[\x07\x18\x1a\x1b]")
_STRING_STOP = re.compile(rb"[\x18\x1a\x1b]")
_STRING_INTRODUCERS = {ord("]"): _OSC_STOP, **{byte: _STRING_STOP for byte in b"PX^_"}}


@dataclass(frozen=True)
class TerminalModes:
    """The terminal modes worth restoring; the defaults are those of a freshly reset xterm.

    ``scroll_region`` is ``(top, bottom)``, 1-based, ``bottom`` None for the last row;
    None means the full screen.
    """

    alt_screen: bool = False
    app_cursor_keys: bool = False
    app_keypad: bool = False
    bracketed_paste: bool = False
    mouse_tracking: frozenset[int] = frozenset()
    mouse_encodings: frozenset[int] = frozenset()
    focus_events: bool = False
    cursor_hidden: bool = False
    origin_mode: bool = False
    autowrap_off: bool = False
    scroll_region: tuple[int, int | None] | None = None

    def restore_sequence(self) -> str:
        """Escape sequences that bring a freshly reset xterm into these modes ("" for defaults).

        The alternate screen comes first (switching screens must not undo the rest), then the
        scroll region (origin mode is relative to it), then the other modes.
        """
        parts: list[str] = []
        if self.alt_screen:
            parts.append("\x1b[?1049h")
        if self.scroll_region is not None:
            top, bottom = self.scroll_region
            parts.append(f"\x1b[{top};{bottom}r" if bottom is not None else f"\x1b[{top}r")
        private = [6] if self.origin_mode else []
        private += [1] if self.app_cursor_keys else []
        private += [2004] if self.bracketed_paste else []
        private += sorted(self.mouse_tracking) + sorted(self.mouse_encodings)
        private += [1004] if self.focus_events else []
        parts += [f"\x1b[?{mode}h" for mode in private]
        parts += ["\x1b="] if self.app_keypad else []
        parts += ["\x1b[?25l"] if self.cursor_hidden else []
        parts += ["\x1b[?7l"] if self.autowrap_off else []
        return "".join(parts)

    def reset_sequence(self) -> str:
        """Escape sequences that bring a terminal in these modes back to the defaults ("" when
        already there): what a client writes to its own terminal when it leaves a session.

        Margins are reset before the alternate screen is left (leaving it restores the cursor);
        on the main screen the cursor is kept around a scroll-region reset, which homes it.
        """
        private = sorted(self.mouse_tracking) + sorted(self.mouse_encodings)
        private += [1] if self.app_cursor_keys else []
        private += [2004] if self.bracketed_paste else []
        private += [1004] if self.focus_events else []
        parts = [f"\x1b[?{mode}l" for mode in private]
        parts += ["\x1b>"] if self.app_keypad else []
        parts += ["\x1b[?25h"] if self.cursor_hidden else []
        parts += ["\x1b[?7h"] if self.autowrap_off else []
        margins = ("\x1b[?6l" if self.origin_mode else "") + (
            "\x1b[r" if self.scroll_region is not None else ""
        )
        if self.alt_screen:
            parts += [margins, "\x1b[?1049l"]
        elif self.origin_mode:
            parts += [margins, "\x1b[999;1H"]  # the cursor went home: continue at the bottom
        elif margins:
            parts.append(f"\x1b7{margins}\x1b8")
        return "".join(parts)


_BOOLEAN_FIELDS = tuple(f.name for f in dataclasses.fields(TerminalModes) if f.type == "bool")


class _LiveModes:
    """The mutable twin of TerminalModes that a tracker updates (replace() is too slow)."""

    def __init__(self) -> None:
        # Any: the values are bools, but TerminalModes(**flags) is checked field by field.
        self.flags: dict[str, Any] = dict.fromkeys(_BOOLEAN_FIELDS, False)
        self.mouse_tracking: set[int] = set()
        self.mouse_encodings: set[int] = set()
        self.scroll_region: tuple[int, int | None] | None = None

    def copy(self) -> _LiveModes:
        twin = _LiveModes()
        twin.flags.update(self.flags)
        twin.mouse_tracking.update(self.mouse_tracking)
        twin.mouse_encodings.update(self.mouse_encodings)
        twin.scroll_region = self.scroll_region
        return twin

    def freeze(self) -> TerminalModes:
        return TerminalModes(
            mouse_tracking=frozenset(self.mouse_tracking),
            mouse_encodings=frozenset(self.mouse_encodings),
            scroll_region=self.scroll_region,
            **self.flags,
        )

    def apply(self, match: re.Match[bytes]) -> None:
        """Follow one sequence matched by ``_MODE_SEQUENCE``."""
        if match.end() - match.start() > _MAX_SEQUENCE:
            return  # garbage by the grammar's length rule
        private, set_or_reset, region, soft_reset, escape = match.groups()
        if private is not None:
            self._set_private_modes(private, set_or_reset == b"h")
        elif region is not None:
            self._set_scroll_region(region)
        elif soft_reset is not None:
            self._soft_reset()
        elif escape == b"c":
            self._full_reset()
        else:
            self.flags["app_keypad"] = escape == b"="

    def _set_private_modes(self, params: bytes, enabled: bool) -> None:
        """DECSET (``enabled``) or DECRST of every mode in ``params`` (``1049;1`` …)."""
        for field in params.split(b";"):
            if not field.isdigit():
                continue  # empty, or sub-parameters (":"): not a mode we track
            mode = int(field)
            if mode in _FLAG_MODES:
                name, value_when_set = _FLAG_MODES[mode]
                self.flags[name] = value_when_set == enabled
            elif mode in _MOUSE_TRACKING or mode in _MOUSE_ENCODINGS:
                group = self.mouse_tracking if mode in _MOUSE_TRACKING else self.mouse_encodings
                if enabled:
                    group.add(mode)
                else:
                    group.discard(mode)

    def _set_scroll_region(self, params: bytes) -> None:
        """DECSTBM ``CSI top;bottom r``; 0 or a missing value means the default (first/last row)."""
        fields = params.split(b";")
        if len(fields) > 2:
            return
        top = int(fields[0] or 0) or 1
        bottom = int(fields[1] or 0) or None if len(fields) == 2 else None
        if bottom is not None and bottom <= top:
            return  # xterm ignores a region of fewer than two rows
        self.scroll_region = None if (top, bottom) == (1, None) else (top, bottom)

    def _full_reset(self) -> None:
        """RIS ``ESC c``: everything back to the defaults."""
        self.flags = dict.fromkeys(_BOOLEAN_FIELDS, False)
        self.mouse_tracking.clear()
        self.mouse_encodings.clear()
        self.scroll_region = None

    def _soft_reset(self) -> None:
        """DECSTR ``CSI ! p``: resets keys, origin, wrap, cursor and margins, not the screen."""
        for name in ("app_cursor_keys", "app_keypad", "origin_mode", "autowrap_off"):
            self.flags[name] = False
        self.flags["cursor_hidden"] = False
        self.scroll_region = None


def _utf8_length(lead: int) -> int:
    """Bytes in the UTF-8 character ``lead`` starts (1 for ASCII and invalid leads)."""
    if 0xC2 <= lead <= 0xDF:
        return 2
    if 0xE0 <= lead <= 0xEF:
        return 3
    if 0xF0 <= lead <= 0xF4:
        return 4
    return 1


def _utf8_missing(buf: bytes, start: int, missing_before: int) -> int:
    """Continuation bytes still missing at the end of the text ``buf[start:]``.

    ``missing_before`` is what was missing before ``start`` (the text continues a character).
    Only the last 4 bytes are looked at: a longer run of continuation bytes ends any character.
    """
    end = len(buf)
    for index in range(end - 1, max(start, end - 4) - 1, -1):
        if buf[index] & 0xC0 != 0x80:
            return max(0, _utf8_length(buf[index]) - (end - index))
    if end - start < 4:
        return max(0, missing_before - (end - start))
    return 0


def _sequence_end(buf: bytes, esc: int) -> tuple[int, re.Pattern[bytes] | None]:
    """Where the sequence starting with the ESC at ``buf[esc]`` ends.

    Returns ``(end, None)`` for a finished or aborted sequence (ground resumes at ``end``),
    ``(end, stop)`` when a control string's body starts at ``end`` (``stop`` finds its end), or
    ``(-1, None)`` when ``buf`` ends inside the sequence.
    """
    if esc + 1 >= len(buf):
        return -1, None
    stop = _STRING_INTRODUCERS.get(buf[esc + 1])
    if stop is not None:
        return esc + 2, stop
    is_csi = buf[esc + 1] == ord("[")
    complete, prefix = (_CSI, _CSI_PREFIX) if is_csi else (_ESCAPE, _ESCAPE_PREFIX)
    found = complete.match(buf, esc)
    partial = found or prefix.match(buf, esc)
    end = partial.end() if partial else esc + 1
    if end - esc > _MAX_SEQUENCE or (found is None and len(buf) - esc >= _MAX_SEQUENCE):
        return esc + _MAX_SEQUENCE, None
    if found is None and end == len(buf):
        return -1, None
    return end, None


def _string_resume(buf: bytes, start: int, stop: re.Pattern[bytes]) -> int:
    """Where ground resumes after a control string whose body starts at ``start``; -1: not yet.

    An ESC ends the body and starts the next sequence (normally the ST ``ESC \\``), so ground
    resumes *at* it; BEL, CAN and SUB are consumed.
    """
    found = stop.search(buf, start)
    if found is None:
        return -1
    return found.start() + (buf[found.start()] != ESC)


class ModeTracker:
    """Follows a terminal output stream, fed incrementally, and knows the modes it set.

    ``feed`` accepts any split of the stream: sequences and UTF-8 characters may be cut at any
    byte. Memory is bounded: at most one unfinished sequence (< 1024 bytes) is held.
    """

    def __init__(self) -> None:
        self._live = _LiveModes()
        self._frozen: TerminalModes | None = TerminalModes()  # None: changed since last frozen
        self._pending = b""  # an unfinished sequence, starting with ESC
        self._string_stop: re.Pattern[bytes] | None = None  # inside a control string body
        self._utf8_missing = 0  # continuation bytes the last character still lacks

    @property
    def modes(self) -> TerminalModes:
        """The modes in force after everything fed so far."""
        if self._frozen is None:
            self._frozen = self._live.freeze()
        return self._frozen

    @property
    def is_mid_sequence(self) -> bool:
        """True when the stream fed so far ends inside an escape sequence or a UTF-8 character."""
        return bool(self._pending) or self._string_stop is not None or self._utf8_missing > 0

    def copy(self) -> ModeTracker:
        """An independent tracker in the same state."""
        twin = ModeTracker()
        twin._live, twin._frozen, twin._pending = self._live.copy(), self._frozen, self._pending
        twin._string_stop, twin._utf8_missing = self._string_stop, self._utf8_missing
        return twin

    def to_state(self) -> dict[str, Any]:
        """A JSON-safe snapshot (``from_state`` reads it back): a hand-over to a new process."""
        live = self._live
        stop = None
        if self._string_stop is not None:
            stop = "osc" if self._string_stop is _OSC_STOP else "string"
        return {
            "flags": dict(live.flags),
            "mouse_tracking": sorted(live.mouse_tracking),
            "mouse_encodings": sorted(live.mouse_encodings),
            "scroll_region": list(live.scroll_region) if live.scroll_region else None,
            "pending": self._pending.hex(),
            "string_stop": stop,
            "utf8_missing": self._utf8_missing,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ModeTracker:
        """A tracker in the state ``to_state`` described (ValueError/KeyError: malformed)."""
        tracker = cls()
        live = tracker._live
        live.flags.update({name: bool(state["flags"][name]) for name in _BOOLEAN_FIELDS})
        live.mouse_tracking.update(int(mode) for mode in state["mouse_tracking"])
        live.mouse_encodings.update(int(mode) for mode in state["mouse_encodings"])
        region = state["scroll_region"]
        live.scroll_region = (int(region[0]), region[1]) if region else None
        tracker._pending = bytes.fromhex(state["pending"])
        stops = {None: None, "osc": _OSC_STOP, "string": _STRING_STOP}
        tracker._string_stop = stops[state["string_stop"]]
        tracker._utf8_missing = int(state["utf8_missing"])
        tracker._frozen = None
        return tracker

    def feed(self, data: bytes) -> None:
        """Follow ``data``, the bytes that come next in the stream."""
        if not self._pending and self._string_stop is None and ESC not in data:
            # Fast path, plain text: one C-level scan and a look at the last bytes.
            self._utf8_missing = _utf8_missing(data, 0, self._utf8_missing)
            return
        buf = self._pending + bytes(data) if self._pending else bytes(data)
        for match in _MODE_SEQUENCE.finditer(buf):
            self._live.apply(match)
            self._frozen = None
        self._follow_state(buf)

    def _follow_state(self, buf: bytes) -> None:
        """Update the parser state (pending, string, UTF-8) for the end of ``buf``.

        Only the last ESC matters: it aborts or ends whatever came before it.
        """
        missing = 0 if self._pending else self._utf8_missing
        self._pending, start = b"", 0
        if self._string_stop is not None:
            start = _string_resume(buf, 0, self._string_stop)
            if start < 0:
                return  # still inside the control string
            self._string_stop, missing = None, 0
        last = buf.rfind(b"\x1b", start)
        if last >= 0:
            start, missing = self._follow_sequence(buf, last), 0
        self._utf8_missing = _utf8_missing(buf, start, missing) if start >= 0 else 0

    def _follow_sequence(self, buf: bytes, esc: int) -> int:
        """State after the sequence at ``buf[esc]``; the start of the text after it, or -1."""
        end, stop = _sequence_end(buf, esc)
        if end < 0:
            self._pending = buf[esc:]
            return -1
        if stop is None:
            return end
        resume = _string_resume(buf, end, stop)
        if resume < 0:
            self._string_stop = stop
        return resume

    def safe_start(self, following: bytes) -> int:
        """How many bytes of ``following`` to skip so that a replay starting there begins outside
        any escape sequence and any UTF-8 character (0 when not mid-sequence).

        ``following`` are the bytes that come right after what was fed. The state is not changed:
        callers then ``feed(following[:n])`` on their copy. Returns ``len(following)`` when the
        sequence does not end within ``following``.
        """
        if self._string_stop is not None:
            return _skip_string(following, 0, self._string_stop)
        if self._pending:
            buf = self._pending + following
            end, stop = _sequence_end(buf, 0)
            if end >= 0 and stop is not None:
                end = _skip_string(buf, end, stop)
            return len(following) if end < 0 else max(0, end - len(self._pending))
        skip = 0
        while skip < min(self._utf8_missing, len(following)) and following[skip] & 0xC0 == 0x80:
            skip += 1
        return skip


def _skip_string(buf: bytes, start: int, stop: re.Pattern[bytes]) -> int:
    """Where a replay may start after a control string whose body starts at ``start``.

    Unlike ``_string_resume`` this also skips the ST ``ESC \\`` that normally ends the string.
    """
    resume = _string_resume(buf, start, stop)
    if resume < 0:
        return len(buf)
    if buf[resume : resume + 1] != b"\x1b":
        return resume
    if resume + 1 == len(buf):
        return len(buf)  # a lone ESC at the end: where it leads is unknown yet
    return resume + 2 if buf[resume + 1] == ord("\\") else resume
