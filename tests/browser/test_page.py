"""The web page end to end: Debian's chromium (Playwright) against a real `tether serve`.

The page exposes `window.tether.terminals[i]` (text(), screen(), state, history, connection)
for these tests. `?timescale=` shrinks the client's reconnection delays where the schedule
itself is not what is being tested."""

from __future__ import annotations

import collections
import json
import os
import re
import threading
import time
import urllib.request
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page

from tests.browser.helpers import ARTIFACTS, CHROMIUM, ROOT, ThreadedProxy, tmux_reference
from tests.support.server import ServerProcess, controlled_environment, start_server

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no chromium at {CHROMIUM}"),
    pytest.mark.timeout(90),
]


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    with start_server() as server:
        yield server


@pytest.fixture
def proxied(server: ServerProcess) -> Iterator[ThreadedProxy]:
    proxy = ThreadedProxy(server.port)
    try:
        yield proxy
    finally:
        proxy.close()


# -- page helpers ----------------------------------------------------------------------------


def wait_state(page: Page, state: str, index: int = 0, timeout: float = 15_000) -> None:
    page.wait_for_function(
        "([i, s]) => window.tether?.terminals[i]?.state === s", arg=[index, state], timeout=timeout
    )


def wait_text(page: Page, text: str, index: int = 0, timeout: float = 15_000) -> None:
    page.wait_for_function(
        "([i, s]) => window.tether.terminals[i].text().includes(s)",
        arg=[index, text],
        timeout=timeout,
    )


def wait_line(page: Page, pattern: str, index: int = 0, timeout: float = 15_000) -> re.Match[str]:
    """Wait for a whole line matching `pattern` (output, not the command's echo)."""
    page.wait_for_function(
        "([i, p]) => new RegExp(p, 'm').test(window.tether.terminals[i].text())",
        arg=[index, f"^{pattern}$"],
        timeout=timeout,
    )
    match = re.search(f"^{pattern}$", text(page, index), re.MULTILINE)
    assert match
    return match


def text(page: Page, index: int = 0) -> str:
    return str(page.evaluate("i => window.tether.terminals[i].text()", index))


def screen(page: Page, index: int = 0) -> list[str]:
    return [
        line.rstrip() for line in page.evaluate("i => window.tether.terminals[i].screen()", index)
    ]


def type_into(page: Page, keys: str, index: int = 0, delay: float = 0) -> None:
    page.evaluate("i => window.tether.activate(i)", index)
    page.keyboard.type(keys, delay=delay)


def wait_prompt(page: Page, index: int = 0, timeout: float = 15_000) -> None:
    page.wait_for_function(
        "i => /[$#] $/m.test(window.tether.terminals[i].text())", arg=index, timeout=timeout
    )


def open_page(page: Page, base_url: str, query: str = "") -> None:
    page.goto(f"{base_url}/{query}")
    wait_state(page, "connected")
    wait_prompt(page)


def shoot(page: Page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def session_stats(server: ServerProcess) -> list[dict[str, object]]:
    with urllib.request.urlopen(f"{server.base_url}/stats/sessions", timeout=5) as response:
        return list(json.load(response)["sessions"])


# -- tests -----------------------------------------------------------------------------------


def test_type_a_command_and_see_its_output(page: Page, server: ServerProcess) -> None:
    open_page(page, server.base_url)
    type_into(page, "echo answer-$((6 * 7))\n")
    wait_text(page, "answer-42")
    assert page.locator(".pane.active .status-text").inner_text() == "connected"
    session = page.evaluate("window.tether.terminals[0].sessionId")
    assert re.fullmatch(r"session_\d{13}_[a-z0-9]{20,32}", session)
    assert page.locator(".pane.active .status-session").inner_text() == session
    page.wait_for_function(
        "/\\d+ ms/.test(document.querySelector('.pane.active .status-latency').textContent)"
    )
    shoot(page, "connected")


def test_every_line_once_and_every_key_once_across_cuts(page: Page, proxied: ThreadedProxy) -> None:
    open_page(page, proxied.base_url, "?timescale=0.1")
    # Output: 1500 numbered lines over about 3 s, with the connection cut four times meanwhile.
    type_into(
        page,
        "for i in $(seq 1 1500); do echo line-$i; (( i % 50 )) || sleep 0.1; done;"
        " echo printed-$((1 + 1))\n",
    )
    wait_text(page, "line-100")
    for _ in range(3):
        proxied.abort_all()
        time.sleep(0.4)
    proxied.cut()  # refused for a while: attempts fail, then the listener comes back
    time.sleep(0.6)
    proxied.restore()
    wait_text(page, "printed-2", timeout=30_000)
    wait_state(page, "connected")
    numbers = collections.Counter(
        int(match[1]) for match in re.finditer(r"^line-(\d+)$", text(page), re.MULTILINE)
    )
    assert sorted(numbers) == list(range(1, 1501)), "a line is missing"
    assert set(numbers.values()) == {1}, "a line appears twice"

    # Input: keys typed while the connection is cut, and in flight when it drops, arrive once.
    typed = "echo " + "".join(f"k{i:02d}" for i in range(40))
    timers = [threading.Timer(delay, proxied.abort_all) for delay in (0.3, 0.7)]
    timers.append(threading.Timer(1.2, proxied.cut))
    for timer in timers:
        timer.start()
    type_into(page, typed, delay=15)
    for timer in timers:
        timer.join()
    time.sleep(0.2)
    assert page.evaluate("window.tether.terminals[0].state") in (
        "connecting",
        "reconnecting",
        "paused",
    )
    proxied.restore()
    # The network is back: `online` brings a waiting attempt forward (a paused one waits for
    # its trial, so there the user's "retry now" does it).
    page.evaluate("window.dispatchEvent(new Event('online'))")
    if page.evaluate("window.tether.terminals[0].state") == "paused":
        page.click(".pane.active .status-action")
    wait_state(page, "connected", timeout=5_000)
    page.keyboard.press("Enter")
    expected = typed.removeprefix("echo ")
    wait_text(page, f"\n{expected}\n")
    assert text(page).count(typed) == 1
    page.wait_for_function("window.tether.terminals[0].connection.pendingInput === 0")  # all acked


def test_reload_reattaches_to_the_same_shell_and_screen(page: Page, server: ServerProcess) -> None:
    open_page(page, server.base_url)
    type_into(page, "echo shell-$$\n")
    pid = wait_line(page, r"shell-(\d+)")
    session = page.evaluate("window.tether.terminals[0].sessionId")
    page.reload()
    wait_state(page, "connected")
    assert page.evaluate("window.tether.terminals[0].sessionId") == session
    wait_line(page, f"shell-{pid[1]}")  # the screen came back
    type_into(page, "echo again-$$\n")
    wait_line(page, f"again-{pid[1]}")


def test_replayed_queries_are_not_answered_again(page: Page, server: ServerProcess) -> None:
    open_page(page, server.base_url)
    # Ask for device attributes and the cursor position, take the live answers, then let
    # `cat -v` show anything that arrives: after a reload the replay holds the same queries.
    type_into(page, "printf '\\e[c\\e[6n'; read -rs -t 2 -d R; echo asked-$((2 + 2)); cat -v\n")
    wait_text(page, "asked-4")
    page.reload()
    wait_state(page, "connected")
    wait_text(page, "asked-4")
    page.wait_for_function("!window.tether.terminals[0].binding.isReplaying")
    time.sleep(0.5)
    type_into(page, "visible\n")
    wait_text(page, "visible\nvisible")
    assert "^[" not in text(page), "an automatic answer reached the shell"
    page.keyboard.press("Control+C")


def test_six_terminals_side_by_side(page: Page, server: ServerProcess) -> None:
    open_page(page, server.base_url, "?layout=grid")
    for _ in range(3):
        page.keyboard.press("Alt+Shift+N")
    page.click("#add")
    page.click("#add")
    assert page.evaluate("window.tether.terminals.length") == 6
    for index in range(6):
        wait_state(page, "connected", index)
        wait_prompt(page, index)
    for index in range(6):
        type_into(page, f"echo term-{index}-$(({index} * 11))\n", index)
    for index in range(6):
        wait_text(page, f"term-{index}-{index * 11}", index)
    sessions = page.evaluate("window.tether.terminals.map((t) => t.sessionId)")
    assert len(set(sessions)) == 6
    assert page.locator(".pane").evaluate_all(
        "ps => ps.every((p) => p.getBoundingClientRect().width > 200)"
    )
    page.keyboard.press("Alt+Shift+ArrowLeft")
    assert page.evaluate("window.tether.active") == 4
    shoot(page, "six-terminals")
    if os.environ.get("TETHER_UPDATE_SCREENSHOT"):  # refresh the README's picture on demand
        page.screenshot(path=str(ROOT / "docs" / "screenshot.png"))
    page.keyboard.press("Alt+Shift+W")
    assert page.evaluate("window.tether.terminals.length") == 5


def test_full_screen_program_restored_after_a_gap(page: Page) -> None:
    with start_server("--buffer-size", "65536") as server:
        proxy = ThreadedProxy(server.port)
        try:
            run_full_screen_gap(page, server, proxy)
        finally:
            proxy.close()


def run_full_screen_gap(page: Page, server: ServerProcess, proxy: ThreadedProxy) -> None:
    log = server.project_dir / "growing.log"
    log.write_text("".join(f"first {i}\n" for i in range(50)))
    open_page(page, proxy.base_url)
    type_into(page, "less +F growing.log\n")
    wait_text(page, "Waiting for data")
    [before] = session_stats(server)
    proxy.cut()
    wait_state(page, "reconnecting")
    shoot(page, "reconnecting")
    with log.open("a") as out:  # while nobody is attached: far more than the 64 KiB buffer
        for batch in range(30):
            out.write("".join(f"batch {batch:02d} line {i:03d} {'x' * 40}\n" for i in range(100)))
            out.flush()
            time.sleep(0.05)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        [after] = session_stats(server)
        if int(after["output_position"]) - int(before["output_position"]) > 128 * 1024:  # type: ignore[call-overload]
            break
        time.sleep(0.2)
    else:
        pytest.fail("less did not print the appended lines")
    time.sleep(1.5)  # less prints the last lines
    proxy.restore()
    page.click(".pane.active .status-action")  # "retry now"
    wait_state(page, "connected")
    assert page.evaluate("window.tether.terminals[0].connection.hello.gap") > 0
    cols, rows = page.evaluate(
        "[window.tether.terminals[0].term.cols, window.tether.terminals[0].term.rows]"
    )
    env = controlled_environment(server.home, {"TERM": "xterm-256color"})
    with tmux_reference("less +F growing.log", cols, rows, server.project_dir, env) as capture:
        reference = wait_stable(capture)
        assert any("batch 29 line 099" in line for line in reference)
        page.wait_for_function(
            "([i, want]) => JSON.stringify("
            "window.tether.terminals[i].screen().map((l) => l.trimEnd())) === want",
            arg=[0, json.dumps(reference, separators=(",", ":"))],
            timeout=10_000,
        )
    assert screen(page) == reference
    shoot(page, "full-screen-restored")
    page.keyboard.press("q")


def wait_stable(capture: object, timeout: float = 10.0) -> list[str]:
    """The reference screen once it stops changing."""
    deadline = time.monotonic() + timeout
    last: list[str] = []
    while time.monotonic() < deadline:
        current = capture()  # type: ignore[operator]
        if current == last and any("Waiting for data" in line for line in current):
            return current
        last = current
        time.sleep(0.3)
    raise AssertionError(f"the reference screen did not settle: {last}")


def test_breaker_opens_after_five_failures_then_ends_cleanly(
    page: Page, server: ServerProcess
) -> None:
    open_page(page, server.base_url, "?timescale=0.05")
    server.stop()  # for good: every attempt is refused
    wait_state(page, "paused", timeout=20_000)
    history = page.evaluate("window.tether.terminals[0].history")
    lost = max(i for i, info in enumerate(history) if info["state"] == "connected")
    attempts = [info for info in history[lost:] if info["state"] == "connecting"]
    waits = [info for info in history[lost:] if info["state"] == "reconnecting"]
    assert [info["attempt"] for info in attempts] == [1, 2, 3, 4, 5]
    assert [info["delay"] for info in waits] == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.8])
    paused = history[-1]
    assert paused["failures"] == 5 and paused["delay"] == pytest.approx(1.5)
    status = page.locator(".pane.active .status-text").inner_text()
    assert status.startswith("paused, next try in") and "after 5 failed attempts" in status
    assert page.locator(".pane.active .status-action").inner_text() == "retry now"
    shoot(page, "paused")

    # The half-open trial fails too: paused again, never a tight loop.
    page.wait_for_function(
        "window.tether.terminals[0].history.filter((s) => s.trial).length >= 1", timeout=10_000
    )
    wait_state(page, "paused")
    trials = page.evaluate("window.tether.terminals[0].history.filter((s) => s.trial).length")
    assert trials <= 2

    # The server comes back without the session: "retry now" reports it gone, and a click
    # starts a new shell in the same terminal.
    server.start()
    page.click(".pane.active .status-action")
    page.wait_for_function("['ended', 'connected'].includes(window.tether.terminals[0].state)")
    if page.evaluate("window.tether.terminals[0].state") == "ended":
        assert page.evaluate("window.tether.terminals[0].connection.stateInfo.code") == 4004
        assert page.locator(".pane.active .status-action").inner_text() == "start a new session"
        shoot(page, "session-not-found")
        page.click(".pane.active .status-action")
    wait_state(page, "connected")
    type_into(page, "echo back-$((40 + 2))\n")
    wait_text(page, "back-42")


def test_shell_exit_then_a_new_session(page: Page, server: ServerProcess) -> None:
    open_page(page, server.base_url)
    first = page.evaluate("window.tether.terminals[0].sessionId")
    type_into(page, "exit 3\n")
    wait_state(page, "ended")
    assert page.locator(".pane.active .status-text").inner_text() == "shell exited (code 3)"
    shoot(page, "ended")
    page.click(".pane.active .status-action")
    wait_state(page, "connected")
    wait_prompt(page)
    assert page.evaluate("window.tether.terminals[0].sessionId") != first
    stored = page.evaluate("JSON.parse(sessionStorage.getItem('tether.terminals'))")
    assert stored[0]["session"] != first


def test_copy_on_select_and_bracketed_paste(page: Page, server: ServerProcess) -> None:
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.base_url)
    open_page(page, server.base_url)
    type_into(page, "echo copy-me-$((5 * 5))\n")
    wait_line(page, "copy-me-25")
    page.evaluate(SELECT_LINE, "copy-me-25")  # selecting copies
    deadline = time.monotonic() + 5
    while page.evaluate("navigator.clipboard.readText()") != "copy-me-25":
        assert time.monotonic() < deadline, "the selection was not copied"
        time.sleep(0.1)

    page.evaluate("navigator.clipboard.writeText('echo pasted-$((3 * 3))')")
    page.evaluate(RECORD_INPUT)
    page.keyboard.press("Control+Shift+V")
    page.keyboard.press("Enter")
    wait_line(page, "pasted-9")
    sent = page.evaluate("window.recordedInput.join('')")
    assert sent == "\x1b[200~echo pasted-$((3 * 3))\x1b[201~\r"  # bracketed: bash asked for it


SELECT_LINE = """(wanted) => {
  const term = window.tether.terminals[0].term;
  const buffer = term.buffer.active;
  for (let y = 0; y < buffer.length; y += 1) {
    if (buffer.getLine(y).translateToString(true) === wanted) term.select(0, y, wanted.length);
  }
}"""

RECORD_INPUT = """() => {
  const connection = window.tether.terminals[0].connection;
  const send = connection.send.bind(connection);
  window.recordedInput = [];
  connection.send = (data) => {
    window.recordedInput.push(typeof data === 'string' ? data : new TextDecoder().decode(data));
    send(data);
  };
}"""


def test_search_links_theme_and_a_new_tab(page: Page, server: ServerProcess) -> None:
    open_page(page, server.base_url)
    type_into(page, "echo see https://example.invalid/docs; seq 1 300\n")
    wait_text(page, "\n300\n")
    page.keyboard.press("Control+Shift+F")
    search = page.locator(".pane.active .pane-search input")
    search.fill("example.invalid")
    search.press("Enter")
    assert page.evaluate("window.tether.terminals[0].term.getSelection()") == "example.invalid"
    search.press("Escape")
    page.keyboard.press("Alt+Shift+L")
    assert page.evaluate("document.documentElement.dataset.theme") == "light"
    shoot(page, "light-theme")
    first = page.evaluate("window.tether.terminals[0].sessionId")
    other = page.context.new_page()  # a new tab: its own sessionStorage, its own shell
    try:
        open_page(other, server.base_url)
        assert other.evaluate("window.tether.terminals[0].sessionId") != first
    finally:
        other.close()


def test_no_request_leaves_the_server(page: Page, server: ServerProcess) -> None:
    origins: set[str] = set()
    page.on("request", lambda request: origins.add(re.sub(r"^(\w+://[^/]+).*", r"\1", request.url)))
    open_page(page, server.base_url)
    assert origins <= {server.base_url, server.ws_url.rsplit("/ws/", 1)[0]}, origins


def test_a_token_in_the_link_signs_the_page_in(page: Page, tmp_path) -> None:  # type: ignore[no-untyped-def]
    token = "page-token-0123456789abcdef"
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(
        f'[[tokens]]\ntoken = "{token}"\nowner = "alice"\nprojects = "*"\n', encoding="utf-8"
    )
    with start_server("--auth", "token", "--tokens-file", str(tokens)) as server:
        page.goto(f"{server.base_url}/#token={token}")
        wait_state(page, "connected")
        wait_prompt(page)
        type_into(page, "echo signed-in-$((2 * 21))\n")
        wait_text(page, "signed-in-42")
        assert "token" not in page.url, "the credential is removed from the address bar"
        cookies = {c["name"]: c["value"] for c in page.context.cookies()}
        assert cookies.get("tether_token") == token
        request = urllib.request.Request(
            f"{server.base_url}/stats/sessions", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            owners = {s["owner"] for s in json.load(response)["sessions"]}
        assert owners == {"alice"}
