"""The page as a user lives it (issue 15): terminal sizes that match what is shown in every
layout, overlays that do not resize, reasons next to the countdown, a phone, titles, settings,
and the list of one's own sessions."""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page

from tests.browser.helpers import CHROMIUM
from tests.browser.test_page import (
    RECORD_INPUT,
    open_page,
    shoot,
    text,
    type_into,
    wait_line,
    wait_prompt,
    wait_state,
    wait_text,
)
from tests.support.server import ServerProcess, start_server

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no chromium at {CHROMIUM}"),
    pytest.mark.timeout(90),
]

_MARKS = itertools.count(1)


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    with start_server() as server:
        yield server


@contextlib.contextmanager
def sized_page(browser: Browser, **options: Any) -> Iterator[Page]:
    """A page in a context of its own (a viewport size, a phone), failing on page errors."""
    context = browser.new_context(**options)
    try:
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        yield page
        assert not errors, f"errors in the page: {errors}"
    finally:
        context.close()


def pty_size(page: Page, index: int) -> tuple[int, int]:
    """(cols, rows) as the shell's terminal has them (`stty size`)."""
    mark = next(_MARKS)
    type_into(page, f"echo size-{mark}-$(stty size | tr ' ' x)\n", index)
    match = wait_line(page, rf"size-{mark}-(\d+)x(\d+)", index)
    return int(match[2]), int(match[1])


def shown_size(page: Page, index: int) -> tuple[int, int]:
    cols, rows = page.evaluate(
        "i => [window.tether.terminals[i].term.cols, window.tether.terminals[i].term.rows]", index
    )
    return int(cols), int(rows)


def assert_sizes_match(page: Page) -> None:
    for index in range(page.evaluate("window.tether.terminals.length")):
        # A pane resized while (re)connecting must still end up with its shown size.
        page.wait_for_function(
            "i => window.tether.terminals[i].state === 'connected'", arg=index, timeout=15_000
        )
        # The page refits on its ResizeObserver, after the next layout: poll until what it
        # shows is stable across a `stty size`, then that must be the shell's size.
        for _ in range(5):
            shown = shown_size(page, index)
            pty = pty_size(page, index)
            if shown_size(page, index) == shown:
                break
        assert pty == shown, f"terminal {index}: shows {shown}"


def test_every_pane_has_the_size_it_shows_after_any_layout_change(browser: Browser) -> None:
    desktop = {"viewport": {"width": 1000, "height": 700}}
    with sized_page(browser, **desktop) as page, start_server() as server:
        open_page(page, server.base_url, "?layout=grid")
        page.click("#add")
        wait_state(page, "connected", 1)
        wait_prompt(page, 1)
        assert shown_size(page, 0)[0] < 80, "two panes side by side"
        assert_sizes_match(page)
        page.click("#layout")  # to tabs
        assert_sizes_match(page)
        page.click("#layout")  # back to the grid, then a third pane
        page.click("#add")
        wait_state(page, "connected", 2)
        wait_prompt(page, 2)
        page.set_viewport_size({"width": 900, "height": 600})
        assert_sizes_match(page)


def test_the_search_overlay_does_not_resize_the_terminal(page: Page, server: ServerProcess) -> None:
    open_page(page, server.base_url)
    before = shown_size(page, 0)
    type_into(page, "trap 'echo got-$((100 + 1))' WINCH; echo trapped-$((1 + 1))\n")
    wait_line(page, "trapped-2")
    page.keyboard.press("Control+Shift+F")
    search = page.locator(".pane.active .pane-search input")
    search.fill("trapped")
    search.press("Enter")
    assert page.locator(".pane.active .pane-search").is_visible()
    search.press("Escape")
    type_into(page, "echo after-$((2 + 2))\n")
    wait_line(page, "after-4")
    assert shown_size(page, 0) == before
    assert pty_size(page, 0) == before
    assert "got-101" not in text(page), "the program got a SIGWINCH for an overlay"


def test_a_shell_that_cannot_start_shows_the_servers_reason(page: Page) -> None:
    with start_server("--shell", "/nonexistent") as server:
        page.goto(f"{server.base_url}/")
        wait_state(page, "reconnecting")
        status = page.locator(".pane.active .status-text")
        assert re.fullmatch(r"reconnecting in \d+ s · cannot start shell", status.inner_text())
        shoot(page, "cannot-start-shell")
    # The policy is kept: the breaker opens after five failures, and says why it is paused.
    with start_server("--shell", "/nonexistent") as server:
        page.goto(f"{server.base_url}/?timescale=0.05")
        wait_state(page, "paused", timeout=20_000)
        paused = status.inner_text()
        assert paused.startswith("paused, next try in"), paused
        reason = page.evaluate("window.tether.terminals[0].connection.stateInfo.reason")
        assert reason and paused.endswith(f" · {reason}")


def test_the_countdown_shows_in_a_grid_of_four(page: Page, server: ServerProcess) -> None:
    open_page(page, server.base_url, "?layout=grid&timescale=20")
    for _ in range(3):
        page.click("#add")
    for index in range(4):
        wait_state(page, "connected", index)
    server.stop()
    wait_state(page, "reconnecting", 3)
    status = page.locator(".pane").nth(3).locator(".status-text")
    assert re.match(r"reconnecting in \d+ s", status.inner_text())
    assert status.evaluate("e => e.scrollWidth <= e.clientWidth"), "the status is cut"


def test_a_phone_reaches_every_terminal_and_has_soft_keys(browser: Browser) -> None:
    phone = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}
    with sized_page(browser, **phone) as page, start_server() as server:
        open_page(page, server.base_url, "?layout=grid")
        page.click("#add")
        wait_state(page, "connected", 1)
        tabs = page.locator(".tab")
        assert tabs.count() == 2
        assert tabs.nth(0).bounding_box()["width"] > 40  # type: ignore[index]
        tabs.nth(0).tap()
        assert page.evaluate("window.tether.active") == 0
        pane = page.locator(".pane.active")
        assert pane.bounding_box()["width"] > 300, "one usable pane, not 20 columns"  # type: ignore[index]
        assert shown_size(page, 0)[0] >= 40
        status = pane.locator(".status-text")
        assert status.evaluate("e => e.scrollWidth <= e.clientWidth"), "the status is cut"
        assert status.is_visible()
        shoot(page, "phone")

        wait_prompt(page, 0)
        page.evaluate(RECORD_INPUT)
        type_into(page, "echo one-$((1 + 1))\n")
        wait_line(page, "one-2")
        page.locator(".softkeys [data-key=up]").tap()  # the shell's history: the same line
        page.keyboard.press("Enter")
        page.wait_for_function("window.tether.terminals[0].text().split('\\none-2').length > 2")
        type_into(page, "cat -v\n")
        page.locator(".softkeys [data-key=tab]").tap()
        page.locator(".softkeys [data-key=escape]").tap()
        page.keyboard.press("Enter")
        # The tty echoes the escape as ^[, then cat -v prints the line back: twice.
        page.wait_for_function("window.tether.terminals[0].text().split('^[').length > 2")
        ctrl = page.locator(".softkeys [data-key=ctrl]")
        ctrl.tap()
        assert ctrl.get_attribute("aria-pressed") == "true"
        type_into(page, "c")  # Ctrl+C from the soft Ctrl and a typed c: cat ends
        assert ctrl.get_attribute("aria-pressed") == "false", "it lets go after one key"
        wait_prompt(page, 0)
        type_into(page, "printf '\\e[?1h'; echo app-$((3 + 3))\n")  # application cursor keys
        wait_line(page, "app-6")
        page.locator(".softkeys [data-key=left]").tap()
        sent = "".join(page.evaluate("window.recordedInput"))
        assert "\x1b[A" in sent and "\t" in sent and "\x03" in sent
        assert sent.endswith("\x1bOD"), "application cursor mode is respected"


def test_titles_font_size_and_renaming_a_tab(page: Page, server: ServerProcess) -> None:
    open_page(page, server.base_url)
    type_into(page, "printf '\\e]0;build-box\\a'; echo titled-$((2 + 3))\n")
    wait_line(page, "titled-5")
    page.wait_for_function("document.title.startsWith('build-box')")
    assert "build-box" in page.locator(".tab").nth(0).inner_text()

    page.select_option("#font-size", "18")
    assert page.evaluate("window.tether.terminals[0].term.options.fontSize") == 18
    page.reload()
    wait_state(page, "connected")
    assert page.evaluate("window.tether.terminals[0].term.options.fontSize") == 18
    assert pty_size(page, 0) == shown_size(page, 0)

    page.locator(".tab .tab-title").nth(0).dblclick()
    editor = page.locator(".tab input")
    editor.fill("my build")
    editor.press("Enter")
    page.wait_for_function("document.querySelector('.tab').textContent.includes('my build')")
    key = page.evaluate("window.tether.terminals[0].connection.hello.key")
    with urllib.request.urlopen(f"{server.base_url}/api/me/sessions", timeout=5) as response:
        names = {s["key"]: s["name"] for s in json.load(response)["sessions"]}
    assert names[key] == "my build", "the name is the session's, shared with the list"
    page.wait_for_function("document.title.startsWith('my build')")


def test_the_session_list_opens_renames_and_ends_sessions(
    page: Page, server: ServerProcess
) -> None:
    open_page(page, server.base_url)
    type_into(page, "echo first-$((4 + 4))\n")
    wait_line(page, "first-8")
    first = page.evaluate("window.tether.terminals[0].sessionId")
    page.click("#add")
    wait_state(page, "connected", 1)
    page.evaluate("window.tether.closeTerminal(1, {end: false})")  # closed, shell kept
    page.click("#sessions")
    rows = page.locator(".session-row")
    page.wait_for_function("document.querySelectorAll('.session-row').length === 2")
    row_text = rows.nth(0).inner_text()
    assert "default" in row_text and "attached" in row_text
    assert re.search(r"\d+×\d+", row_text) and re.search(r"\b1 client", row_text)
    assert "detached" in rows.nth(1).inner_text()
    shoot(page, "session-list")

    rows.nth(1).locator("[data-do=open]").click()
    wait_state(page, "connected", 1)
    assert page.evaluate("window.tether.terminals.length") == 2
    reopened = page.evaluate("window.tether.terminals[1].sessionId")

    rows.nth(0).locator("[data-do=rename]").click()
    editor = page.locator(".session-row input")
    editor.fill("first one")
    editor.press("Enter")
    page.wait_for_function(
        "document.querySelector('.session-row').textContent.includes('first one')"
    )
    page.wait_for_function("document.querySelector('.tab').textContent.includes('first one')")

    page.on("dialog", lambda dialog: dialog.accept())
    page.locator(".session-row", has_text=reopened).locator("[data-do=end]").click()
    wait_state(page, "ended", 1)
    page.wait_for_function("document.querySelectorAll('.session-row').length === 1")
    assert page.locator(".session-row").get_attribute("data-key").startswith(f"{first}:")
    wait_text(page, "first-8")
