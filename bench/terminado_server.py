"""A terminado server for the side-by-side benchmark: named terminals, the bench's shell.

Run by bench/targets.py as ``python bench/terminado_server.py SHELL...``; prints
``terminado listening on PORT`` once it accepts connections; SIGTERM ends every terminal.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import tornado.web
from terminado import NamedTermManager, TermSocket


async def main(shell: list[str]) -> None:
    manager = NamedTermManager(shell_command=shell, max_terminals=10000)
    app = tornado.web.Application([(r"/websocket/(\w+)", TermSocket, {"term_manager": manager})])
    server = app.listen(0, "127.0.0.1")
    port = next(iter(server._sockets.values())).getsockname()[1]
    print(f"terminado listening on {port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    server.stop()
    await manager.shutdown()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:] or ["bash", "--norc", "--noprofile"]))
