"""The two checks of a resume test with tether's own client (``Terminal`` + ``Probe``): what was
typed reached the shell exactly once, and a fresh replay from 0 equals what was delivered."""

from __future__ import annotations

import asyncio
import hashlib
import re

from tether.client import Terminal
from tether.tools.check_probe import Probe, end_shell


async def assert_typed_exactly_once(term: Terminal, probe: Probe, typed: bytes | bytearray) -> None:
    """End the ``cat > typed.txt`` the test typed into: the file must hold ``typed`` exactly."""
    await term.send(b"\x04")
    await term.send("stty echo; md5sum < typed.txt; printf '%s-%s\\n' wc $(wc -c < typed.txt)\r")
    match = await probe.wait_for(re.compile(rb"wc-(\d+)"), timeout=30)
    assert int(match.group(1)) == len(typed)
    assert hashlib.md5(typed).hexdigest().encode() in probe.transcript


async def assert_replay_matches(replay: Terminal, probe: Probe) -> None:
    """``replay`` (connected at offset 0) must replay what ``probe`` saw; then end the shell."""
    replayed = Probe(replay)
    async with asyncio.timeout(10):
        while len(replayed.transcript) < len(probe.transcript):
            await replayed.read_some()
    assert bytes(replayed.transcript[: len(probe.transcript)]) == bytes(probe.transcript)
    await end_shell(replay)
