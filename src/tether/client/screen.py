"""The local terminal as ``tether attach`` draws on it. Pure: it returns the bytes to write.

Everything ``tether attach`` writes to its terminal goes through :class:`LocalScreen`, which

* follows the modes the remote program set (a :class:`~tether.protocol.modes.ModeTracker` fed
  every byte written, restore sequences and resets included), so that leaving the session resets
  exactly those: alternate screen, mouse reporting, cursor keys, bracketed paste, cursor
  visibility, keypad, scroll region (:meth:`LocalScreen.leave`);
* draws a one-line status bar on the terminal's last row while the connection is down. The bar
  is drawn between a save and a restore of the cursor (DECSC/DECRC keep its position, the
  character attributes and origin mode), never at a point where the output stopped inside an
  escape sequence or a UTF-8 character (it would break the sequence), and erased again before
  any output is written and when the connection is back. What the bar covered is repainted by
  the program itself: the caller nudges it to redraw (docs/client.md).
"""

from __future__ import annotations

from tether.protocol.modes import ModeTracker, TerminalModes

STATUS_PREFIX = "[tether] "
_SAVE, _RESTORE = b"\x1b7", b"\x1b8"
_CANCEL = b"\x18"  # CAN: aborts an unfinished escape sequence


class LocalScreen:
    """What is on the local terminal: the modes in force and whether the status bar shows."""

    def __init__(self) -> None:
        self._tracker = ModeTracker()
        self._status: str | None = None
        self._size = (80, 24)

    @property
    def modes(self) -> TerminalModes:
        """The modes the output written so far has set."""
        return self._tracker.modes

    @property
    def status(self) -> str | None:
        """The text of the status bar on screen, or None."""
        return self._status

    def output(self, data: bytes) -> bytes:
        """The bytes to write for ``data`` (output, or screen-restore bytes): the status bar,
        if shown, is erased before and drawn again after (when the output allows it)."""
        status = self._status
        if status is None:
            self._tracker.feed(data)
            return data
        erase = self.hide_status()
        self._tracker.feed(data)
        return erase + data + self.show_status(status, *self._size)

    def show_status(self, text: str, cols: int, rows: int) -> bytes:
        """The bytes that draw the bar (``text``, cut to the width) on the last of ``rows`` rows;
        b"" while the output written stopped inside a sequence (the bar then stays hidden)."""
        if self._tracker.is_mid_sequence:
            return self.hide_status()
        erase = self.hide_status() if self._size != (cols, rows) else b""
        self._status, self._size = text, (cols, rows)
        line = _printable(STATUS_PREFIX + text)[: max(0, cols - 1)]
        return erase + self._at_last_row(b"\x1b[0;7m" + line + b"\x1b[0m\x1b[K")

    def hide_status(self) -> bytes:
        """The bytes that erase the bar (b"" when none shows)."""
        if self._status is None:
            return b""
        self._status = None
        return self._at_last_row(b"\x1b[0m\x1b[2K")

    def leave(self) -> bytes:
        """The bytes that leave the local terminal as it was: bar erased, modes reset."""
        erase = self.hide_status()
        cancel = _CANCEL if self._tracker.is_mid_sequence else b""
        reset = self._tracker.modes.reset_sequence().encode() + b"\x1b[0m"
        self._tracker = ModeTracker()
        return cancel + erase + reset

    def _at_last_row(self, drawing: bytes) -> bytes:
        # Origin mode would make the row relative to the scroll region: off, within the save.
        origin_off = b"\x1b[?6l" if self._tracker.modes.origin_mode else b""
        row = str(self._size[1]).encode()
        return _SAVE + origin_off + b"\x1b[" + row + b";1H" + drawing + _RESTORE


def _printable(text: str) -> bytes:
    """ASCII without controls: one byte per cell, so cutting to the width is exact."""
    return "".join(c if " " <= c <= "~" else "?" for c in text).encode()
