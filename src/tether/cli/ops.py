"""``tether stats`` and ``tether sessions list | kill | clear``: the operator API, from a shell.

Every command talks to a running server over its HTTP API (docs/protocol.md, section 9), so it works
the same against a local server, a remote one, or one behind a proxy. Errors (server
unreachable, 404, 401/403) are one line on stderr and exit status 1; a ``--project`` the server
does not have is one line naming those it has, exit status 2.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, BinaryIO, TypeVar

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tether.cli._group import cli, emit_report, report_options
from tether.client import http_url
from tether.client.credentials import stored_token
from tether.client.problems import reason, unknown_project, unknown_session, unreachable

DEFAULT_URL = "http://127.0.0.1:4001"
_LOOPBACK_HOSTS = {"127.0.0.1", "::1", "localhost"}
F = TypeVar("F", bound=Callable[..., Any])


class OperatorError(click.ClickException):
    """A command failed for a reason the operator can act on; shown as one line, exit 1.

    ``status``: the HTTP status that said so, if any (404 names an unknown session).
    """

    exit_code = 1

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    def show(self, file: Any = None) -> None:
        click.echo(f"tether: {self.message}", err=True)


class UsageProblem(OperatorError):
    """The command named something the server does not have (a project): exit 2."""

    exit_code = 2


# ------------------------------------------------------------------------------ HTTP client
@dataclass(frozen=True)
class ApiClient:
    """The server's JSON API over plain HTTP (stdlib: the CLI needs no event loop)."""

    base: str
    token: str | None = None
    timeout: float = 10.0

    def get(self, path: str, **query: str | None) -> Any:
        return self._request("GET", path, query=query)

    def delete(self, path: str) -> Any:
        return self._request("DELETE", path)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self._request("POST", path, body=body)

    def download(self, path: str, out: BinaryIO) -> int:
        """GET ``path`` and copy its body to ``out`` as it comes; returns the bytes copied."""
        request = urllib.request.Request(self.base + path, headers=self._headers(None))
        copied = 0
        try:
            with self._opener().open(request, timeout=self.timeout) as response:
                while chunk := response.read(256 * 1024):
                    out.write(chunk)
                    copied += len(chunk)
        except urllib.error.HTTPError as exc:
            raise OperatorError(_http_error_message(exc), status=exc.code) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            raise OperatorError(unreachable(self.base, reason(exc))) from None
        return copied

    def _request(
        self,
        method: str,
        path: str,
        query: dict[str, str | None] | None = None,
        body: dict[str, Any] | None = None,
    ) -> Any:
        params = {k: v for k, v in (query or {}).items() if v is not None}
        url = self.base + path + (f"?{urllib.parse.urlencode(params)}" if params else "")
        request = urllib.request.Request(url, method=method, headers=self._headers(body))
        if body is not None:
            request.data = json.dumps(body).encode()
        try:
            with self._opener().open(request, timeout=self.timeout) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise OperatorError(_http_error_message(exc), status=exc.code) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            raise OperatorError(unreachable(self.base, reason(exc))) from None
        except ValueError:
            raise OperatorError(f"{self.base}{path} did not answer JSON: is it tether?") from None

    def _headers(self, body: dict[str, Any] | None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def _opener(self) -> urllib.request.OpenerDirector:
        # A proxy from the environment must not swallow requests to this very machine.
        host = urllib.parse.urlsplit(self.base).hostname or ""
        if host in _LOOPBACK_HOSTS or host.startswith("127."):
            return urllib.request.build_opener(urllib.request.ProxyHandler({}))
        return urllib.request.build_opener()


def _http_error_message(exc: urllib.error.HTTPError) -> str:
    try:
        error = json.loads(exc.read())["error"]
        detail = f"{error['message']} ({error['code']})"
    except (ValueError, KeyError, TypeError):
        detail = exc.reason or "error"
    hint = {401: "; pass --token or set TETHER_TOKEN", 403: "; an operator token is needed"}
    return f"HTTP {exc.code}: {detail}{hint.get(exc.code, '')}"


def _client(url: str, token: str | None) -> ApiClient:
    try:
        return ApiClient(http_url(url), token or stored_token(url))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--url") from None


def _server_options(command: F) -> F:
    command = click.option(
        "--token", envvar="TETHER_TOKEN", default=None, help="credential ($TETHER_TOKEN)"
    )(command)
    return click.option(
        "--url",
        envvar="TETHER_URL",
        default=DEFAULT_URL,
        show_default=True,
        help="server: http://host:port (or ws://…; $TETHER_URL)",
    )(command)


# ------------------------------------------------------------------------------ rendering
def _console() -> Console:
    # Piped output keeps whole keys on one line (grep-able); a terminal gets its own width.
    return Console(highlight=False, width=None if sys.stdout.isatty() else 200)


def _size(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GiB"


def _ago(stamp: str | None, now: float) -> str:
    if not stamp:
        return "-"
    seconds = max(0.0, now - datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp())
    for unit, span in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= span:
            return f"{seconds / span:.0f}{unit} ago"
    return f"{seconds:.0f}s ago"


_STATE_STYLE = {"attached": "green", "detached": "yellow", "starting": "cyan", "ended": "dim"}
_BREAKER_STYLE = {"open": "bold red", "half_open": "yellow", "closed": "green"}


def _sessions_table(sessions: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=escape(title), title_justify="left")
    # In a cluster, a session of another node has no live figures here (clients, buffered).
    clustered = len({entry.get("node") for entry in sessions}) > 1
    named = any(entry.get("name") for entry in sessions)  # display names given by their owners
    columns: tuple[str, ...] = ("key", "project", "owner", "state", "pid", "clients", "buffered")
    columns = (columns[0], *(["name"] if named else []), *columns[1:], "active")
    for name in (*columns, "node") if clustered else columns:
        table.add_column(name, no_wrap=name == "key")
    now = time.time()
    for entry in sessions:
        state = entry.get("state", "?")
        buffered = entry.get("buffered_bytes")
        row = [
            escape(entry["key"]),
            *([escape(entry.get("name") or "-")] if named else []),
            escape(entry.get("project", "?")),
            escape(entry.get("owner", "?")),
            f"[{_STATE_STYLE.get(state, '')}]{state}[/]",
            str(entry.get("pid", "-")),
            str(entry.get("clients", "-")),
            "-" if buffered is None else _size(buffered),
            _ago(entry.get("last_activity"), now),
        ]
        if clustered:
            node_state = entry.get("node_state", "up")
            row.append(entry["node"] + ("" if node_state == "up" else f" [red]({node_state})[/]"))
        table.add_row(*row)
    return table


def _nodes_table(view: dict[str, Any]) -> Table:
    table = Table(title="cluster nodes", title_justify="left")
    for name in ("node", "state", "sessions", "url"):
        table.add_column(name)
    for node in view.get("nodes", []):
        style = "green" if node["state"] == "up" else "bold red"
        mark = " *" if node["node"] == view.get("node") else ""
        state = f"[{style}]{node['state']}[/]"
        table.add_row(node["node"] + mark, state, str(node["sessions"]), node["url"])
    return table


def _breakers_table(breakers: dict[str, Any]) -> Table:
    table = Table(title="circuit breakers", title_justify="left")
    for name in ("scope", "name", "state", "attempts/failures", "trips", "retry after", "opened"):
        table.add_column(name, no_wrap=name == "name")
    now = time.time()
    for scope, name_field, count_field in (
        ("key", "key", "attempts"),
        ("address", "key", "attempts"),
        ("project", "project", "failures"),
    ):
        for row in breakers.get(scope, []):
            state = row["state"]
            table.add_row(
                scope,
                row[name_field],
                f"[{_BREAKER_STYLE.get(state, '')}]{state}[/]",
                str(row[count_field]),
                str(row.get("trips", "-")),
                f"{row['retry_after']} s" if row["retry_after"] else "-",
                _ago(row.get("opened_at"), now),
            )
    return table


def _summary(stats: dict[str, Any]) -> str:
    totals, server = stats["totals"], stats.get("server", {})
    by_state = totals.get("by_state", {})
    states = ", ".join(f"{count} {state}" for state, count in by_state.items() if count)
    lines = [
        f"[bold]sessions[/] {totals['sessions']}" + (f" ({states})" if states else ""),
        f"[bold]clients[/] {totals['clients']}   [bold]buffered[/] "
        f"{_size(totals['buffered_bytes'])}",
    ]
    if server:
        lines.append(
            f"[bold]server[/] pid {server['pid']}   RSS {_size(server['rss_bytes'])}   "
            f"CPU {server['cpu_seconds']:.1f} s ({server['cpu_percent']:.0f} %)   "
            f"up {server['uptime_seconds']:.0f} s"
            + ("" if server.get("ready", True) else "   [bold red]draining[/]")
        )
    return "\n".join(lines)


def _thresholds(breakers: dict[str, Any]) -> str:
    limits = breakers.get("thresholds", {})
    key, address, project = (limits.get(s, {}) for s in ("key", "address", "project"))
    return (
        f"[dim]thresholds: key {key.get('threshold')} per {key.get('window')} s, "
        f"address {address.get('threshold')} per {address.get('window')} s, "
        f"project {project.get('failures')} failed starts → open {project.get('open_for')} s[/]"
    )


# ------------------------------------------------------------------------------ commands
@cli.command("stats")
@_server_options
@click.option("--project", default=None, help="only sessions of this project")
@click.option("--owner", default=None, help="only sessions of this owner")
@report_options
def stats(
    url: str,
    token: str | None,
    project: str | None,
    owner: str | None,
    as_json: bool,
    out_file: str | None,
) -> None:
    """Sessions, totals and circuit breakers of a running server."""
    api = _client(url, token)
    _check_project(api, project)
    sessions = api.get("/stats/sessions", project=project, owner=owner)
    breakers = api.get("/stats/circuit-breaker")
    view = _cluster_view(api)
    emit_report({"sessions": sessions, "breakers": breakers, "cluster": view}, as_json, out_file)
    if as_json:
        return
    console = _console()
    if view is not None and view.get("cluster"):
        console.print(_nodes_table(view))
    console.print(_summary(sessions))
    console.print(_sessions_table(sessions["sessions"], f"sessions at {api.base}"))
    if any(breakers.get(scope) for scope in ("key", "address", "project")):
        console.print(_breakers_table(breakers))
    else:
        console.print("circuit breakers: [green]none tripped[/]")
    console.print(_thresholds(breakers))


def _cluster_view(api: ApiClient) -> dict[str, Any] | None:
    """``/stats/cluster`` (None from a server older than clusters, or without the right)."""
    try:
        view: dict[str, Any] = api.get("/stats/cluster")
    except OperatorError:
        return None
    return view


@cli.group("sessions")
def sessions_group() -> None:
    """List, kill or clear sessions (operator API)."""


def _list(api: ApiClient, project: str | None, owner: str | None) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = api.get("/api/sessions", project=project, owner=owner)[
        "sessions"
    ]
    return listed


@sessions_group.command("list")
@_server_options
@click.option("--project", default=None, help="only sessions of this project")
@click.option("--owner", default=None, help="only sessions of this owner")
@report_options
def list_sessions(
    url: str,
    token: str | None,
    project: str | None,
    owner: str | None,
    as_json: bool,
    out_file: str | None,
) -> None:
    """List every session (with its display name, when it has one)."""
    api = _client(url, token)
    _check_project(api, project)
    listed = _list(api, project, owner)
    emit_report(listed, as_json, out_file)
    if as_json:
        return
    if not listed:
        click.echo("no sessions")
    else:
        _console().print(_sessions_table(listed, f"{len(listed)} session(s) at {api.base}"))


def _resolve_key(api: ApiClient, key: str) -> str:
    """A composite key as given, or the key of the one session with this session id."""
    if ":" in key:
        return key
    matches = [s["key"] for s in _list(api, None, None) if s["session"] == key]
    if len(matches) == 1:
        return str(matches[0])
    if not matches:
        raise OperatorError(unknown_session(key))
    raise OperatorError(f"{key} is in several projects; give the key: {', '.join(matches)}")


def _check_project(api: ApiClient, project: str | None) -> None:
    """A project the server does not offer is a usage error: one line naming those it does."""
    if project is None:
        return
    valid = [str(entry["id"]) for entry in api.get("/api/projects")]
    if project not in valid:
        raise UsageProblem(unknown_project(project, valid))


def _confirm_clear(api: ApiClient, listed: list[dict[str, Any]], scope: str) -> None:
    """Show what would end and ask; only a terminal can answer (a pipe's "y" is no consent)."""
    count = f"{len(listed)} session(s){scope}"
    if not sys.stdin.isatty():
        raise OperatorError(f"nothing cleared: no terminal to ask on; pass --yes to end {count}")
    _console().print(_sessions_table(listed, f"{count} at {api.base} would end"))
    try:
        if click.confirm(f"End these {count}? Their clients get 4013"):
            return
    except click.Abort:
        pass
    raise OperatorError("nothing cleared (answer y, or pass --yes)")


@sessions_group.command("kill")
@_server_options
@click.argument("key")
def kill(url: str, token: str | None, key: str) -> None:
    """End the session KEY (SESSION:PROJECT, or a session id in one project only).

    Every process in its terminal is ended; its clients are told 4013.
    """
    api = _client(url, token)
    key = _resolve_key(api, key)
    try:
        killed = api.delete(f"/api/sessions/{urllib.parse.quote(key, safe=':')}")["killed"]
    except OperatorError as exc:
        if exc.status == 404:
            raise OperatorError(unknown_session(key)) from None
        raise
    click.echo(f"killed {killed}")


@sessions_group.command("clear")
@_server_options
@click.option("--project", default=None, help="only sessions of this project")
@click.option("--yes", "-y", is_flag=True, help="do not ask for confirmation")
def clear(url: str, token: str | None, project: str | None, yes: bool) -> None:
    """End every session (of a project): the "clear sessions" step of a rollback.

    Only tether's own sessions (and, with a shared store, only tether's own keys) are touched:
    this never flushes a whole Redis database.
    """
    api = _client(url, token)
    _check_project(api, project)
    listed = _list(api, project, None)
    scope = f" of project {project}" if project else ""
    if not listed:
        click.echo(f"no sessions{scope} to clear")
        return
    if not yes:
        _confirm_clear(api, listed, scope)
    body = {"project": project} if project else {}
    result = api.post("/api/sessions/clear", body)
    click.echo(f"cleared {result['count']} session(s){scope}")


@sessions_group.command("record")
@_server_options
@click.argument("key")
@click.option("-o", "--output", default=None, metavar="FILE", help="where to save it ('-': stdout)")
def record(url: str, token: str | None, key: str, output: str | None) -> None:
    """Save the recording of session KEY (SESSION:PROJECT) as one asciicast v2 file.

    The server must run with --record-dir; an ended session's recording is there too. By
    default the file is named after the key, in this directory (docs/operations.md).
    """
    from tether.server.recording import file_stem

    api = _client(url, token)
    path = f"/api/sessions/{urllib.parse.quote(key, safe=':')}/recording"
    if output == "-":
        api.download(path, sys.stdout.buffer)
        sys.stdout.flush()
        return
    target = output or file_stem(key) + ".cast"
    partial = target + ".part"
    try:
        with open(partial, "wb") as out:
            size = api.download(path, out)
        os.replace(partial, target)
    except OSError as exc:
        raise OperatorError(f"cannot write {target}: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(partial)
    click.echo(f"saved {_size(size)} to {target}")


# ------------------------------------------------------------------------------ restart
RESTART_POLL = 0.1  # seconds between looks at the server's generation


@cli.command("restart")
@_server_options
@click.option("--timeout", default=60.0, show_default=True, help="seconds to wait for it")
def restart(url: str, token: str | None, timeout: float) -> None:
    """Upgrade the server in place to the code now installed, keeping every session.

    Waits until the new generation serves (exit 0); if the new code or settings fail their
    check, says why and exits 1 while the old server keeps serving (docs/operations.md).
    """
    api = _client(url, token)
    before = api.post("/api/restart", {})
    generation = int(before["generation"])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(RESTART_POLL)
        try:
            facts = api.get("/stats/sessions")["server"]
        except OperatorError:
            continue  # the port answers again in a moment: connections wait in its backlog
        if int(facts.get("generation", 0)) > generation:
            click.echo(f"restarted: generation {facts['generation']}, pid {facts['pid']}")
            return
    raise OperatorError(f"no new generation within {timeout:g} s (see the server's log)")
