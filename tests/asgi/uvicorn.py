"""The worked example (examples/fastapi_app.py) under a real uvicorn subprocess.

uvicorn gets a listening socket this process bound (``--fd``): no port race. Shells are
``bash --norc --noprofile`` with a temporary HOME; tether's settings come from ``TETHER_*``.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.server import READY_TIMEOUT, SHELL, controlled_environment

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class UvicornApp:
    process: subprocess.Popen[bytes]
    port: int
    workdir: Path
    output: list[str] = field(default_factory=list)
    # Set by the output pump at "Application startup complete", or when the output ends.
    started_or_ended: threading.Event = field(default_factory=threading.Event)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def term_url(self) -> str:
        return f"{self.base_url}/term"

    def login(self, user: str = "alice", password: str = "wonderland") -> str:
        """A session token of the example's own login (``POST /login.json``)."""
        body = json.dumps({"user": user, "password": password}).encode()
        request = urllib.request.Request(self.base_url + "/login.json", data=body, method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            token: str = json.load(response)["token"]
        return token

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, then wait (SIGKILL after ``timeout``); the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


@contextmanager
def example_app(**tether: str) -> Iterator[UvicornApp]:
    """``uvicorn examples.fastapi_app:app`` on a loopback socket; stopped and cleaned up after.
    ``tether``: extra settings as ``TETHER_*`` variables (``heartbeat="0.2"``)."""
    workdir = Path(tempfile.mkdtemp(prefix="tether-asgi-"))
    (workdir / "home").mkdir()
    (workdir / "project").mkdir()
    listener = socket.socket()
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # uvicorn's --fd does not
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    variables = {
        "TETHER_PROJECTS": f"default={workdir / 'project'}",
        "TETHER_SHELL": SHELL,
        "TETHER_LOG_FILE": str(workdir / "tether.log"),
        "TETHER_KILL_GRACE": "1",
        "TETHER_DRAIN_GRACE": "0.2",
        "PYTHONPATH": str(ROOT),
    } | {f"TETHER_{name.upper()}": value for name, value in tether.items()}
    command = [sys.executable, "-m", "uvicorn", "examples.fastapi_app:app"]
    command += ["--fd", str(listener.fileno()), "--no-access-log"]
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=controlled_environment(workdir / "home", variables),
        pass_fds=(listener.fileno(),),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    app = UvicornApp(process, listener.getsockname()[1], workdir)
    listener.close()
    threading.Thread(target=_pump, args=(app,), daemon=True).start()
    try:
        _wait_ready(app)
        yield app
    finally:
        app.stop()
        if process.stdout is not None:
            process.stdout.close()
        shutil.rmtree(workdir, ignore_errors=True)


def _pump(app: UvicornApp) -> None:
    assert app.process.stdout is not None
    for raw in iter(app.process.stdout.readline, b""):
        line = raw.decode(errors="replace")
        app.output.append(line)
        if "Application startup complete" in line:
            app.started_or_ended.set()
    app.started_or_ended.set()


def _wait_ready(app: UvicornApp) -> None:
    assert app.started_or_ended.wait(READY_TIMEOUT), "uvicorn did not start:\n" + "".join(
        app.output
    )
    started = any("Application startup complete" in line for line in app.output)
    assert started, "uvicorn exited:\n" + "".join(app.output)
