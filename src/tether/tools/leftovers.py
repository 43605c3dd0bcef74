"""The sessions a tool opened, and ending those still running: ``check``, ``load`` and ``stress``
leave no shell behind, after a failure or when Ctrl-C cancelled the run (no printing here).

::

    opened = OpenedSessions((url,), project, token)
    opened.remember(session_id)          # before (or after) connecting: the key is derived
    try:
        ...                              # the run
    finally:
        await opened.end_leftovers()     # also when the run was cancelled

A session still running is told ``^C`` then ``exit`` at its prompt (any owner may do that); one
that does not end so is ended through the operator API (``DELETE /api/sessions/{key}``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import quote

import aiohttp

from tether.client import Terminal, connect, fetch_json, http_url
from tether.errors import ClientError
from tether.protocol.codes import CloseCode
from tether.protocol.ids import composite_key

EXIT_TIMEOUT = 5.0  # seconds for a shell to end after ``exit``
AT_ONCE = 16  # sessions ended concurrently


@dataclass
class OpenedSessions:
    """Every session a tool opened (composite key → session id), on the nodes ``urls``."""

    urls: tuple[str, ...]  # the server, then the other nodes of a cluster (any URL form)
    project: str
    token: str | None = None
    keys: dict[str, str] = field(default_factory=dict)

    def remember(self, session_id: str, key: str | None = None) -> None:
        """A session this tool opened, or is about to open (the key defaults to the session id
        in :attr:`project`)."""
        self.keys[key or composite_key(session_id, self.project)] = session_id

    async def end_leftovers(self) -> list[str]:
        """End every remembered session that still runs; returns the keys it ended."""
        ended = await self.end(list(self.keys))
        self.keys.clear()
        return ended

    async def end(self, keys: Iterable[str]) -> list[str]:
        """End those of ``keys`` (remembered ones) that still run; returns the keys it ended."""
        wanted = [key for key in keys if key in self.keys]
        if not wanted:
            return []
        running = await self._running()
        targets = [key for key in wanted if running is None or key in running]
        gate = asyncio.Semaphore(AT_ONCE)

        async def end_one(key: str) -> bool:
            async with gate:
                return await self._end_session(key)

        done = await asyncio.gather(*(end_one(key) for key in targets))
        return [key for key, ended in zip(targets, done, strict=True) if ended]

    async def _running(self) -> set[str] | None:
        """Keys of the sessions every node lists as not ended (None when a node cannot say)."""
        keys: set[str] = set()
        for url in self.urls:
            try:
                stats = await fetch_json(url, "/stats/sessions", token=self.token)
            except ClientError:
                return None
            keys |= {e["key"] for e in stats.get("sessions", []) if e.get("state") != "ended"}
        return keys

    async def _end_session(self, key: str) -> bool:
        """``^C`` and ``exit`` at the session's prompt, else the operator API; True if it ended."""
        if await self._exit_shell(self.keys[key]):
            return True
        return await delete_session(self.urls[0], key, self.token)

    async def _exit_shell(self, session_id: str) -> bool:
        try:
            term = await connect(
                self.urls[0], project=self.project, token=self.token, session=session_id,
                create=False, ping_interval=None, connect_timeout=EXIT_TIMEOUT,
            )  # fmt: skip
        except ClientError:
            return False
        with contextlib.suppress(ClientError):
            await term.send("\x03")  # a program that runs (cat, a command) stops first
        return await end_shell(term)


async def end_shell(term: Terminal, timeout: float = EXIT_TIMEOUT) -> bool:
    """End a shell a tool started (``exit``), so that no session is left behind, and close
    ``term``. True when the server confirmed (4012)."""
    try:
        with contextlib.suppress(ClientError):
            await term.send("exit\r")  # the shell may have gone already (``exec cat`` and ^C)
        async with asyncio.timeout(timeout):
            ended = await term.wait_closed()
        return ended is not None and ended.code == CloseCode.EXITED
    except (TimeoutError, ClientError):
        return False
    finally:
        await term.close()


async def delete_session(url: str, key: str, token: str | None = None) -> bool:
    """End a session through the operator API (``DELETE /api/sessions/{key}``); True if done."""
    target = f"{http_url(url)}/api/sessions/{quote(key, safe='')}"
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else None
        async with aiohttp.ClientSession(headers=headers) as http, http.delete(target) as response:
            return response.status == 200
    except (aiohttp.ClientError, OSError):
        return False
