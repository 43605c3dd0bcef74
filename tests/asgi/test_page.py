"""The page in Debian's chromium through the worked example under uvicorn: the host
application's login, then terminals at /term/ that resume after a cut connection."""

from __future__ import annotations

import collections
import re
from collections.abc import Iterator

import pytest

from tests.asgi.uvicorn import example_app
from tests.browser.conftest import browser, context, page  # noqa: F401 (fixtures)
from tests.browser.helpers import CHROMIUM, ThreadedProxy
from tests.browser.test_page import text, type_into, wait_prompt, wait_state, wait_text

sync_api = pytest.importorskip("playwright.sync_api")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no chromium at {CHROMIUM}"),
    pytest.mark.timeout(90),
]


@pytest.fixture
def proxied() -> Iterator[ThreadedProxy]:
    with example_app() as running:
        proxy = ThreadedProxy(running.port)
        try:
            yield proxy
        finally:
            proxy.close()


def test_log_in_then_every_line_once_across_cuts(
    page: sync_api.Page,  # noqa: F811
    proxied: ThreadedProxy,
) -> None:
    page.goto(f"{proxied.base_url}/")
    page.fill("input[name=user]", "alice")
    page.fill("input[name=password]", "wonderland")
    page.click("button")
    page.wait_for_url("**/term/")
    wait_state(page, "connected")
    wait_prompt(page)
    type_into(page, "for i in $(seq 1 600); do echo line-$i; (( i % 50 )) || sleep 0.1; done;"
              " echo printed-$((1 + 1))\n")  # fmt: skip
    wait_text(page, "line-60")
    proxied.abort_all()
    wait_text(page, "printed-2", timeout=30_000)
    wait_state(page, "connected")
    numbers = collections.Counter(
        int(match[1]) for match in re.finditer(r"^line-(\d+)$", text(page), re.MULTILINE)
    )
    assert sorted(numbers) == list(range(1, 601)), "a line is missing"
    assert set(numbers.values()) == {1}, "a line appears twice"
    history = page.evaluate("window.tether.terminals[0].history")
    connected = [info for info in history if info["state"] == "connected"]
    assert len(connected) >= 2, "the cut connection was not resumed"
    assert all(info.get("gap", 0) == 0 for info in connected), "output was lost"
