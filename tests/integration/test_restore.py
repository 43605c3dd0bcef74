"""Screen restore after a gap: a full-screen program (vim) keeps printing while one client is
away; on its return, a fresh emulator fed `restore` + replay shows what an emulator that saw the
whole stream shows (pyte as the reference terminal)."""

from __future__ import annotations

import asyncio
import shutil

import pyte
import pytest

from tests.support.server import inprocess_server
from tests.support.wsclient import must_connect

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(shutil.which("vim") is None, reason="vim is installed by ./dev setup"),
]

COLS, ROWS = 80, 24


class Screen(pyte.Screen):  # type: ignore[misc]
    """pyte's screen, tolerating xterm's private SGR queries (``CSI ? … m``) that vim sends."""

    def select_graphic_rendition(self, *attrs: int, private: bool = False) -> None:
        if not private:
            super().select_graphic_rendition(*attrs)


def emulator() -> tuple[pyte.Screen, pyte.ByteStream]:
    screen = Screen(COLS, ROWS)
    return screen, pyte.ByteStream(screen)


async def settle(conn, seconds: float = 1.0) -> None:
    """Receive until nothing arrives for a while."""
    quiet = 0.0
    while quiet < seconds:
        if await conn.pump(0.2):
            quiet = 0.0
        else:
            quiet += 0.2


async def test_vim_screen_comes_back_after_more_than_the_buffer_was_printed() -> None:
    async with inprocess_server(buffer_size=64 * 1024) as srv:
        watcher = await must_connect(srv.ws_url, project="default", cols=COLS, rows=ROWS)
        key, session_id = watcher.hello["key"], watcher.hello["session"]
        away = await must_connect(srv.ws_url, project="default", session=session_id, offset=0)
        await watcher.send(
            "seq 1 100000 | sed 's/$/ lorem ipsum dolor sit amet, consectetur"
            " adipiscing elit, sed do/' > big.txt; vim -u NONE -N -n big.txt\r"
        )
        await watcher.read_until(b"\x1b[?1049h", 20)
        await settle(watcher)
        await settle(away, 0.4)
        position = away.position
        assert position > 0
        await away.close()
        for _ in range(100):  # page down: every page is a full redraw
            await watcher.send(b"\x06")
            await asyncio.sleep(0.01)
        await watcher.send(":call setline(1, 'restored-marker')\r")
        await settle(watcher)
        session = srv.server.manager.sessions[key]
        assert session.ring.tail > position, "more than the buffer was printed while away"

        back = await must_connect(
            srv.ws_url, project="default", session=session_id, offset=position, create=0
        )
        assert back.hello["gap"] > 0
        assert "\x1b[?1049h" in back.hello["restore"], "the alternate screen comes back"
        await settle(back, 1.5)
        await settle(watcher, 0.5)

        reference, reference_stream = emulator()
        reference_stream.feed(bytes(watcher.output))
        fresh, fresh_stream = emulator()
        fresh_stream.feed(back.hello["restore"].encode())
        fresh_stream.feed(bytes(back.output))
        assert fresh.display == reference.display
        assert any("restored-marker" in line for line in fresh.display) or any(
            line.strip() for line in fresh.display
        )
        await watcher.send(":q!\r")
        await watcher.close()
        await back.close()


async def test_resume_without_gap_has_no_restore() -> None:
    async with inprocess_server(buffer_size=64 * 1024) as srv:
        conn = await must_connect(srv.ws_url, project="default")
        await conn.send("printf '\\033[?2004h\\033[?1h'; echo MODES\r")
        await conn.read_until("MODES\r\n")
        await conn.close()
        again = await must_connect(
            srv.ws_url,
            project="default",
            session=conn.hello["session"],
            offset=conn.position,
            create=0,
        )
        assert again.hello["restore"] == "" and again.hello["gap"] == 0
        await again.close()


async def test_modes_set_by_dropped_bytes_come_back_in_restore() -> None:
    async with inprocess_server(buffer_size=4096) as srv:
        conn = await must_connect(srv.ws_url, project="default")
        await conn.send(
            "printf '\\033[?2004h\\033[?1h\\033[?25l\\033[?1000h\\033[5;20r'; "
            "seq 1 5000; echo FILL$((1+1))ED\r"
        )
        await conn.read_until("FILL2ED\r\n", 20)
        await conn.close()
        again = await must_connect(
            srv.ws_url, project="default", session=conn.hello["session"], offset=0, create=0
        )
        restore = again.hello["restore"]
        assert again.hello["gap"] > 0
        for sequence in ("?2004h", "?1h", "?25l", "?1000h", "5;20r"):
            assert sequence in restore, (sequence, restore)
        await again.close()
