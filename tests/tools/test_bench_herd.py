"""``bench/herd.py``: a herd cut at once through the proxy, its users in worker processes, resumes
byte-exact, and its figures count every user and every process's CPU apart."""

from __future__ import annotations

import asyncio

from bench.herd import herd

from tests.support.server import server_stats, start_server


async def test_a_small_herd_resumes_byte_exact_and_says_so() -> None:
    with start_server() as running:
        worker = (await asyncio.to_thread(server_stats, running.base_url))["server"]["pid"]
        supervisor = (running.pid,) if running.pid != worker else ()
        figures = await herd(running.port, 12, 2, (worker, *supervisor))
    assert figures["herd_ready"] == 12
    assert figures["herd_connections_cut"] == 12  # every user's connection, at once
    assert figures["herd_resumes"] == 12
    assert figures["herd_exact"] == 12
    assert figures["herd_replays_exact"] == 12
    assert figures["herd_storm_refusals"] == 0
    assert figures["herd_failures"] == []
    assert figures["herd_close_codes"] == {"1006": 12}  # the cut, and nothing else
    # The clients' and the proxy's CPU are measured apart (the server's too, but a dozen resumes
    # may take less than the kernel's 10 ms tick of its CPU time).
    assert {"herd_server_cpu_s", "herd_supervisor_cpu_s", "herd_machine_cpu_s"} <= set(figures)
    assert figures["herd_client_cpu_s"] > 0
    assert figures["herd_proxy_cpu_s"] > 0
    # Resuming takes the policy's first delay (1 s) at least.
    assert figures["herd_all_resumed_s"] >= 1.0
