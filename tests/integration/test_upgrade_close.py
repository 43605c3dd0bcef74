"""An upgrade in place tells every client 1012 and does not wait for their answers: the exec
follows as soon as every close frame is in the kernel (docs/architecture.md, "Surviving the
server process"), so one client that never answers does not hold up everyone's resumption."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import struct
from datetime import datetime
from urllib.parse import urlsplit

import pytest

from tests.support.rawws import raw_upgrade, read_until_closed
from tests.support.server import start_server, wait_generation
from tether.server.upgrade import CLOSE_WAIT, RESTART_REASON

pytestmark = pytest.mark.timeout(120)


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, payload) of each whole frame a server sent (unmasked, RFC 6455 5.1)."""
    frames, at = [], 0
    while at + 2 <= len(data):
        opcode, length, at = data[at] & 0x0F, data[at + 1] & 0x7F, at + 2
        if length == 126:
            (length,), at = struct.unpack_from("!H", data, at), at + 2
        elif length == 127:
            (length,), at = struct.unpack_from("!Q", data, at), at + 8
        if at + length > len(data):
            break
        frames.append((opcode, data[at : at + length]))
        at += length
    return frames


def upgrade_steps(log: str) -> dict[str, float]:
    """When the server logged each step of its upgrade (seconds since the epoch)."""
    steps = {}
    for line in log.splitlines():
        entry = json.loads(line)
        if entry["event"] == "upgrade" and "step" in entry:
            stamp = datetime.fromisoformat(entry["ts"].replace("Z", "+00:00")).timestamp()
            steps.setdefault(entry["step"], stamp)
    return steps


async def test_a_client_that_never_answers_its_1012_does_not_hold_up_the_upgrade() -> None:
    with start_server() as srv:
        port = urlsplit(srv.base_url).port
        assert port is not None
        sock = raw_upgrade(port)  # it reads what it is sent, and never answers a close
        try:
            os.kill(srv.pid, signal.SIGUSR2)
            received = await asyncio.to_thread(read_until_closed, sock, 30)
        finally:
            sock.close()
        await wait_generation(srv.base_url, 2)
        close = [payload for opcode, payload in server_frames(received) if opcode == 0x8]
        assert close == [struct.pack("!H", 1012) + RESTART_REASON.encode()]
        steps = upgrade_steps(srv.log_file.read_text())
        # Waiting for this client's answer would have taken CLOSE_WAIT (3 s) from the check.
        assert steps["closed"] - steps["checked"] < CLOSE_WAIT / 2
