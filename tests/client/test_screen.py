"""The local screen of ``tether attach``: the status bar leaves the program's screen alone, and
leaving resets exactly the modes the program set (rendered with pyte, checked with the tracker)."""

from __future__ import annotations

import pyte
from hypothesis import given

from tests.protocol.test_modes import any_modes
from tether.client.screen import LocalScreen
from tether.protocol.modes import ModeTracker, TerminalModes

COLS, ROWS = 30, 6


def rendered(*chunks: bytes) -> pyte.Screen:
    screen = pyte.Screen(COLS, ROWS)
    stream = pyte.ByteStream(screen)
    for chunk in chunks:
        stream.feed(chunk)
    return screen


PROGRAM = b"".join(b"\x1b[%d;1Hline-%d" % (row, row) for row in range(1, ROWS + 1))
PROGRAM += b"\x1b[3;5H\x1b[1m"  # the cursor in the middle, bold on


def test_status_bar_is_drawn_on_the_last_row_and_the_cursor_stays() -> None:
    local = LocalScreen()
    bar = local.show_status("reconnecting in 2 s", COLS, ROWS)
    screen = rendered(local.output(PROGRAM), bar)
    assert screen.display[-1].rstrip() == "[tether] reconnecting in 2 s"
    assert screen.buffer[ROWS - 1][0].reverse
    assert screen.display[:-1] == rendered(PROGRAM).display[:-1]
    assert (screen.cursor.x, screen.cursor.y, screen.cursor.attrs.bold) == (4, 2, True)
    assert local.status == "reconnecting in 2 s"


def test_status_bar_is_erased_without_touching_the_rest() -> None:
    local = LocalScreen()
    screen = rendered(
        local.output(PROGRAM), local.show_status("x", COLS, ROWS), local.hide_status()
    )
    assert screen.display[-1].strip() == ""
    assert screen.display[:-1] == rendered(PROGRAM).display[:-1]
    assert (screen.cursor.x, screen.cursor.y, screen.cursor.attrs.bold) == (4, 2, True)
    assert local.status is None and local.hide_status() == b""


def test_status_bar_is_cut_to_the_width_and_printable() -> None:
    local = LocalScreen()
    screen = rendered(local.show_status("é\x07" + "x" * 100, COLS, ROWS))
    assert screen.display[-1] == "[tether] ??" + "x" * (COLS - 12) + " "


def test_output_while_the_bar_shows_erases_it_first_and_draws_it_again() -> None:
    local = LocalScreen()
    local.show_status("down", COLS, ROWS)
    written = local.output(b"\x1b[6;1Hlate output")
    screen = rendered(written)
    assert screen.display[-1].rstrip() == "[tether] down"
    assert written.index(b"\x1b[2K") < written.index(b"late output")


def test_no_bar_inside_an_unfinished_escape_sequence() -> None:
    local = LocalScreen()
    local.output(b"abc\x1b[3")
    assert local.show_status("down", COLS, ROWS) == b""
    assert local.status is None
    local.output(b"1m")
    assert local.show_status("down", COLS, ROWS) != b""


def test_origin_mode_does_not_move_the_bar_into_the_scroll_region() -> None:
    local = LocalScreen()
    program = b"\x1b[2;4r\x1b[?6h\x1b[1;1H"
    screen = rendered(local.output(program), local.show_status("down", COLS, ROWS), b"in")
    assert screen.display[-1].rstrip() == "[tether] down"
    assert screen.display[1].startswith("in")  # origin mode still on: row 1 is the region's


def test_leaving_resets_what_vim_set() -> None:
    local = LocalScreen()
    vim = b"\x1b[?1049h\x1b[?1h\x1b=\x1b[?2004h\x1b[?1002h\x1b[?1006h\x1b[?25l\x1b[2;20r"
    local.output(vim)
    local.show_status("down", COLS, ROWS)
    tracker = ModeTracker()
    tracker.feed(vim + local.leave())
    assert tracker.modes == TerminalModes()
    assert local.status is None and local.modes == TerminalModes()


def test_leaving_after_plain_output_writes_only_an_attribute_reset() -> None:
    local = LocalScreen()
    local.output(b"ls\r\n\x1b[31mred")
    assert local.leave() == b"\x1b[0m"


def test_leaving_inside_a_sequence_cancels_it_first() -> None:
    local = LocalScreen()
    local.output(b"\x1b[?1049h\x1b]0;title")
    assert local.leave().startswith(b"\x18")


@given(any_modes)
def test_reset_sequence_undoes_any_modes(modes: TerminalModes) -> None:
    tracker = ModeTracker()
    tracker.feed(modes.restore_sequence().encode())
    assert tracker.modes == modes
    tracker.feed(modes.reset_sequence().encode())
    assert tracker.modes == TerminalModes()
    assert TerminalModes().reset_sequence() == ""


def test_reset_keeps_the_cursor_on_the_main_screen() -> None:
    modes = TerminalModes(scroll_region=(2, 5))
    screen = rendered(b"\x1b[2;5r\x1b[4;7H", modes.reset_sequence().encode(), b"X")
    assert screen.display[3][6] == "X"
