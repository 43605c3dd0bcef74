"""Tests of tether.protocol.modes: terminal-mode tracking and safe replay starts."""

from __future__ import annotations

import pyte
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.protocol.modes import ModeTracker, TerminalModes


def modes_of(*chunks: bytes) -> TerminalModes:
    tracker = ModeTracker()
    for chunk in chunks:
        tracker.feed(chunk)
    return tracker.modes


# --- each mode --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [1049, 1047, 47])
def test_alt_screen_modes(mode: int) -> None:
    assert modes_of(f"\x1b[?{mode}h".encode()).alt_screen
    assert not modes_of(f"\x1b[?{mode}h\x1b[?{mode}l".encode()).alt_screen


@pytest.mark.parametrize(
    ("sequence", "expected"),
    [
        (b"\x1b[?1h", TerminalModes(app_cursor_keys=True)),
        (b"\x1b=", TerminalModes(app_keypad=True)),
        (b"\x1b=\x1b>", TerminalModes()),
        (b"\x1b[?2004h", TerminalModes(bracketed_paste=True)),
        (b"\x1b[?1004h", TerminalModes(focus_events=True)),
        (b"\x1b[?25l", TerminalModes(cursor_hidden=True)),
        (b"\x1b[?25l\x1b[?25h", TerminalModes()),
        (b"\x1b[?6h", TerminalModes(origin_mode=True)),
        (b"\x1b[?7l", TerminalModes(autowrap_off=True)),
        (b"\x1b[?7l\x1b[?7h", TerminalModes()),
        (b"\x1b[?1000;1006h", TerminalModes(mouse_tracking=frozenset({1000}),
                                           mouse_encodings=frozenset({1006}))),
        (b"\x1b[?9h\x1b[?1001h\x1b[?1002h\x1b[?1003h\x1b[?1002l",
         TerminalModes(mouse_tracking=frozenset({9, 1001, 1003}))),
        (b"\x1b[?1005h\x1b[?1015h\x1b[?1006h\x1b[?1005l",
         TerminalModes(mouse_encodings=frozenset({1006, 1015}))),
        (b"\x1b[?1049;1h", TerminalModes(alt_screen=True, app_cursor_keys=True)),
        (b"\x1b[?1049;1h\x1b[?1;1049l", TerminalModes()),
    ],
)  # fmt: skip
def test_modes(sequence: bytes, expected: TerminalModes) -> None:
    assert modes_of(sequence) == expected


@pytest.mark.parametrize(
    ("sequence", "region"),
    [
        (b"\x1b[2;20r", (2, 20)),
        (b"\x1b[5r", (5, None)),
        (b"\x1b[;10r", (1, 10)),
        (b"\x1b[0;10r", (1, 10)),
        (b"\x1b[2;20r\x1b[r", None),
        (b"\x1b[2;20r\x1b[1r", None),
        (b"\x1b[2;20r\x1b[0;0r", None),
        (b"\x1b[2;20r\x1b[5;5r", (2, 20)),  # fewer than two rows: ignored
        (b"\x1b[2;20r\x1b[?5r", (2, 20)),  # private: not DECSTBM
        (b"\x1b[2;20r\x1b[1;2;3r", (2, 20)),
    ],
)
def test_scroll_region(sequence: bytes, region: tuple[int, int | None] | None) -> None:
    assert modes_of(sequence).scroll_region == region


EVERYTHING = (
    b"\x1b[?1049h\x1b[3;15r\x1b[?1h\x1b=\x1b[?2004h\x1b[?1000;1006h"
    b"\x1b[?1004h\x1b[?25l\x1b[?6h\x1b[?7l"
)


def test_full_reset_restores_defaults() -> None:
    assert modes_of(EVERYTHING) != TerminalModes()
    assert modes_of(EVERYTHING + b"\x1bc") == TerminalModes()


def test_soft_reset_keeps_screen_and_mouse() -> None:
    assert modes_of(EVERYTHING + b"\x1b[!p") == TerminalModes(
        alt_screen=True,
        bracketed_paste=True,
        mouse_tracking=frozenset({1000}),
        mouse_encodings=frozenset({1006}),
        focus_events=True,
    )


@pytest.mark.parametrize(
    "sequence",
    [b"\x1b[1049h", b"\x1b[>1h", b"\x1b[?1$h", b"\x1b[?1:2h", b"\x1b[1!p", b"\x1b[?99999h", b"?1h"],
)
def test_sequences_that_are_not_tracked_modes(sequence: bytes) -> None:
    assert modes_of(sequence) == TerminalModes()


def test_mode_sequence_inside_osc_body_is_not_executed_but_esc_ends_it() -> None:
    assert modes_of(b"\x1b]0;[?1049h\x07") == TerminalModes()
    assert modes_of(b"\x1b]0;title\x1b[?1049h").alt_screen


def test_overlong_sequence_is_ignored() -> None:
    assert modes_of(b"\x1b[?" + b"0" * 2000 + b"1049h") == TerminalModes()
    tracker = ModeTracker()
    tracker.feed(b"\x1b[" + b"1" * 5000)
    assert not tracker.is_mid_sequence


# --- restore_sequence -------------------------------------------------------------------


def test_restore_sequence_of_defaults_is_empty() -> None:
    assert TerminalModes().restore_sequence() == ""


def test_restore_sequence_order() -> None:
    restore = modes_of(EVERYTHING).restore_sequence()
    assert restore.startswith("\x1b[?1049h\x1b[3;15r")
    for part in ["\x1b[?1h", "\x1b=", "\x1b[?2004h", "\x1b[?1000h", "\x1b[?1006h", "\x1b[?1004h",
                 "\x1b[?25l", "\x1b[?6h", "\x1b[?7l"]:  # fmt: skip
        assert part in restore


def test_restore_sequence_with_open_bottom() -> None:
    assert TerminalModes(scroll_region=(4, None)).restore_sequence() == "\x1b[4r"


regions = st.one_of(
    st.none(),
    st.integers(2, 100).map(lambda top: (top, None)),
    st.tuples(st.integers(1, 100), st.integers(1, 100)).map(lambda p: (p[0], p[0] + p[1])),
)
any_modes = st.builds(
    TerminalModes,
    alt_screen=st.booleans(),
    app_cursor_keys=st.booleans(),
    app_keypad=st.booleans(),
    bracketed_paste=st.booleans(),
    mouse_tracking=st.frozensets(st.sampled_from([9, 1000, 1001, 1002, 1003])),
    mouse_encodings=st.frozensets(st.sampled_from([1005, 1006, 1015])),
    focus_events=st.booleans(),
    cursor_hidden=st.booleans(),
    origin_mode=st.booleans(),
    autowrap_off=st.booleans(),
    scroll_region=regions,
)


@given(any_modes)
def test_restore_sequence_round_trips_through_tracker(modes: TerminalModes) -> None:
    assert modes_of(modes.restore_sequence().encode()) == modes


# --- incremental feeding ----------------------------------------------------------------

SAMPLE = (
    "plain é 漢字 😀 text\r\n".encode()
    + EVERYTHING
    + b"\x1b]0;a title \xc3\xa9\x07\x1b]2;other\x1b\\\x1bP1$r0m\x1b\\\x1b_apc\x1b\\"
    + b"\x1b(B\x1b#8\x1b7\x1b[1;31mred\x1b[0m \xf0\x9f\x98\x80\x1b[?1049l\x1b[?2004l"
)


def state_of(tracker: ModeTracker, following: bytes) -> tuple[TerminalModes, bool, int]:
    return tracker.modes, tracker.is_mid_sequence, tracker.safe_start(following)


def test_every_two_part_split_matches_one_feed() -> None:
    whole = ModeTracker()
    whole.feed(SAMPLE)
    for cut in range(len(SAMPLE) + 1):
        tracker = ModeTracker()
        tracker.feed(SAMPLE[:cut])
        tracker.feed(SAMPLE[cut:])
        assert state_of(tracker, b"x") == state_of(whole, b"x"), cut


def test_byte_at_a_time_matches_one_feed() -> None:
    tracker = ModeTracker()
    for index in range(len(SAMPLE)):
        tracker.feed(SAMPLE[index : index + 1])
    assert tracker.modes == modes_of(SAMPLE)
    assert not tracker.is_mid_sequence


@pytest.mark.parametrize(
    ("fed", "mid"),
    [
        (b"", False),
        (b"abc", False),
        (b"\xc3", True),
        (b"\xe6\xbc", True),
        (b"\xe6\xbc\xa2", False),
        (b"\x1b", True),
        (b"\x1b[", True),
        (b"\x1b[?10", True),
        (b"\x1b[?1049h", False),
        (b"\x1b(", True),
        (b"\x1b]0;title", True),
        (b"\x1b]0;title\x07", False),
        (b"\x1b]0;title\x1b", True),
        (b"\x1b]0;title\x1b\\", False),
        (b"\x1bPdata", True),
        (b"\x1bPdata\x07", True),  # BEL does not end a DCS
        (b"\x1bPdata\x18", False),  # CAN aborts it
        (b"\x80\x80", False),  # stray continuation bytes
        (b"\x1b[1\xc3", True),  # aborted CSI, then the start of a character
    ],
)
def test_is_mid_sequence(fed: bytes, mid: bool) -> None:
    tracker = ModeTracker()
    tracker.feed(fed)
    assert tracker.is_mid_sequence is mid


def test_fast_path_carries_utf8_state() -> None:
    tracker = ModeTracker()
    tracker.feed(b"\xf0")
    tracker.feed(b"\x9f")
    tracker.feed(b"\x98")
    assert tracker.is_mid_sequence
    tracker.feed(b"\x80")
    assert not tracker.is_mid_sequence


def test_copy_is_independent() -> None:
    tracker = ModeTracker()
    tracker.feed(b"\x1b[?1049h\x1b[?25")
    twin = tracker.copy()
    twin.feed(b"l")
    assert twin.modes.cursor_hidden and not tracker.modes.cursor_hidden
    assert tracker.is_mid_sequence and not twin.is_mid_sequence


# --- safe_start -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fed", "following", "skip"),
    [
        (b"ab", b"cd", 0),
        (b"\xe6", b"\xbc\xa2x", 2),
        (b"\xe6", b"x", 0),  # the character was broken: text resumes at once
        (b"\x1b[?10", b"49hxyz", 3),
        (b"\x1b", b"[?1049hxyz", 7),
        (b"\x1b", b"\\xyz", 1),
        (b"\x1b]0;ti", b"tle\x07xyz", 4),
        (b"\x1b]0;ti", b"tle\x1b\\xyz", 5),
        (b"\x1b]0;ti", b"tle\x1b[mxyz", 3),  # ESC ends the string and starts a sequence
        (b"\x1b]0;ti", b"tle", 3),
        (b"\x1b]0;ti", b"tle\x1b", 4),
        (b"\x1b]", b"0;title\x07x", 8),
        (b"\x1bP", b"1$r\x1b\\x", 5),
        (b"\x1b[1", b"\x80x", 0),  # aborted by an invalid byte
        (b"\x1b[1", b"", 0),
    ],
)
def test_safe_start(fed: bytes, following: bytes, skip: int) -> None:
    tracker = ModeTracker()
    tracker.feed(fed)
    before = (tracker.modes, tracker.is_mid_sequence)
    assert tracker.safe_start(following) == skip
    assert (tracker.modes, tracker.is_mid_sequence) == before  # unchanged


# --- properties -------------------------------------------------------------------------

printable = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=4
)
csi_token = st.builds(
    lambda params, inter, final: b"\x1b[" + params.encode() + inter.encode() + bytes([final]),
    st.text(alphabet="0123456789;?<=>:", max_size=8),
    st.text(alphabet=" !\"#$%&'()*+,-./", max_size=2),
    st.integers(0x40, 0x7E),
)
mode_token = st.one_of(
    st.builds(
        lambda mode, on: f"\x1b[?{mode}{'h' if on else 'l'}".encode(),
        st.sampled_from([1, 6, 7, 9, 25, 47, 1000, 1002, 1004, 1006, 1047, 1049, 2004]),
        st.booleans(),
    ),
    st.builds(
        lambda top, n: f"\x1b[{top};{top + n}r".encode(), st.integers(1, 9), st.integers(1, 9)
    ),
    st.sampled_from([b"\x1b[r", b"\x1b[!p", b"\x1b=", b"\x1b>", b"\x1bc"]),
)
body = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=12)
osc_token = st.builds(
    lambda text, end: b"\x1b]0;" + text.encode() + end, body, st.sampled_from([b"\x07", b"\x1b\\"])
)
dcs_token = st.builds(
    lambda kind, text: b"\x1b" + kind + text.encode() + b"\x1b\\",
    st.sampled_from([b"P", b"X", b"^", b"_"]),
    body,
)
string_token = osc_token | dcs_token
escape_token = st.builds(
    lambda inter, final: b"\x1b" + inter.encode() + bytes([final]),
    st.text(alphabet=" !\"#$%&'()*+,-./", min_size=1, max_size=2),
    st.integers(0x30, 0x7E),
) | st.sampled_from([b"\x1b7", b"\x1b8", b"\x1bM", b"\x1b\\", b"\x1bD"])
char_token = st.characters(min_codepoint=0x80, exclude_categories=["Cs"]).map(str.encode)
text_token = printable.map(str.encode) | st.sampled_from(
    [b"\r\n", b"\t", b"\x07", b"\x08", b"\x18"]
)
tokens = st.lists(
    st.one_of(text_token, char_token, csi_token, mode_token, string_token, escape_token),
    max_size=25,
)


def boundaries_of(parts: list[bytes]) -> set[int]:
    """Token boundaries; plain ASCII text may be cut between any two bytes."""
    found, offset = {0}, 0
    for part in parts:
        if part.isascii() and b"\x1b" not in part:
            found.update(range(offset, offset + len(part) + 1))
        offset += len(part)
        found.add(offset)
    return found


@settings(max_examples=200)
@given(tokens, st.data())
def test_random_chunkings_match_one_feed(parts: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(parts)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    tracker = ModeTracker()
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        tracker.feed(stream[start:end])
    whole = ModeTracker()
    whole.feed(stream)
    assert state_of(tracker, b"tail") == state_of(whole, b"tail")


@settings(max_examples=200)
@given(tokens)
def test_safe_start_lands_on_a_token_boundary(parts: list[bytes]) -> None:
    stream = b"".join(parts)
    boundaries = boundaries_of(parts)
    final_modes = modes_of(stream)
    for cut in range(len(stream) + 1):
        tracker = ModeTracker()
        tracker.feed(stream[:cut])
        assert tracker.is_mid_sequence is (cut not in boundaries)
        skip = tracker.safe_start(stream[cut:])
        assert cut + skip in boundaries
        assert skip == 0 or cut not in boundaries
        tracker.feed(stream[cut : cut + skip])
        assert not tracker.is_mid_sequence
        # The restore property: restore sequence + replay reaches the modes of the whole stream.
        restored = modes_of(tracker.modes.restore_sequence().encode(), stream[cut + skip :])
        assert restored == final_modes


# --- against a terminal emulator --------------------------------------------------------

FULL_SCREEN_APP = (
    b"$ vim notes.txt\r\n"
    + b"\x1b]0;vim \xe2\x80\x94 notes\x07\x1b[?1049h\x1b[?1h\x1b=\x1b[?2004h\x1b[?25l"
    + b"\x1b[2J\x1b[H\x1b[2;20r"
    + "".join(f"\x1b[{row};1Hline {row} — día ✓" for row in range(1, 24)).encode()
    + b"\x1b[?7l\x1b[24;1H\x1b[7m-- INSERT --\x1b[0m\x1b[?25h"
)
PYTE_TRACKED = [1049 << 5, 1 << 5, 2004 << 5, 25 << 5, 7 << 5]


def emulate(stream: bytes) -> pyte.Screen:
    screen = pyte.Screen(80, 24)
    pyte.ByteStream(screen).feed(stream)
    return screen


def test_restore_then_replay_reaches_the_same_emulator_state() -> None:
    expected = emulate(FULL_SCREEN_APP)
    assert 1049 << 5 in expected.mode and expected.margins == (1, 19)
    clear = FULL_SCREEN_APP.index(b"\x1b[2J")
    for cut in range(len(FULL_SCREEN_APP) + 1):
        tracker = ModeTracker()
        tracker.feed(FULL_SCREEN_APP[:cut])
        start = cut + tracker.safe_start(FULL_SCREEN_APP[cut:])
        tracker.feed(FULL_SCREEN_APP[cut:start])
        restore = tracker.modes.restore_sequence().encode()
        screen = emulate(restore + FULL_SCREEN_APP[start:])
        for mode in PYTE_TRACKED:
            assert (mode in screen.mode) == (mode in expected.mode), (cut, mode >> 5)
        assert screen.margins == expected.margins, cut
        assert screen.cursor.hidden == expected.cursor.hidden, cut
        if cut <= clear:  # the redraw is replayed whole: the screens match character for character
            assert screen.display == expected.display, cut
