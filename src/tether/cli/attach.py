"""``tether attach``: the local terminal on a session (see :mod:`tether.client.attach`)."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import click

from tether.cli._group import CommandFailed, cli
from tether.client import Exited, Terminal, fetch_projects, websocket_url
from tether.client.attach import Attachment, AttachResult, window_size
from tether.client.credentials import stored_token
from tether.errors import ClientError, SessionEnded

DEFAULT_URL = "ws://127.0.0.1:4001"
DETACH_KEYS = "Ctrl-\\ then d"


class NotATerminal(click.ClickException):
    """Standard input is not a terminal: one line, exit 2, before anything is connected."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(f"tether: {self.message}", err=True)


async def _attach(
    url: str, project: str | None, session: str | None, token: str | None
) -> tuple[AttachResult, str]:
    project = project or (await fetch_projects(url, token=token) or ["default"])[0]
    cols, rows = window_size(sys.stdout.fileno())
    term = Terminal(
        url,
        project=project,
        session=session,
        token=token,
        cols=cols,
        rows=rows,
        create=session is None,
    )
    await term.open()
    try:
        click.echo(
            f"[tether] attached to {term.session_id} (project {project}); detach: {DETACH_KEYS}",
            err=True,
        )
        attachment = Attachment(term, sys.stdin.fileno(), sys.stdout.fileno())
        return await attachment.run(), project
    finally:
        await term.close()


def _report(result: AttachResult, url: str, project: str) -> int:
    if result.reason == "ended" and result.ended is not None:
        if result.ended.code == 4012:
            click.echo(f"\r\n[tether] {_exited(result.exit_status)}", err=True)
            return 0
        click.echo(
            f"\r\n[tether] session {result.session_id} ended: {_why(result.ended)}", err=True
        )
        return 1
    again = f"tether attach {url} --project {project}"
    click.echo(f"\r\n[tether] detached from session {result.session_id}", err=True)
    click.echo(f"[tether] re-attach: {again} --session {result.session_id}", err=True)
    return 0


def _why(ended: SessionEnded) -> str:
    return f"{ended.code} {ended.reason}".strip()


def _stdin_is_terminal() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except ValueError:  # closed
        return False


def _exited(status: Exited | None) -> str:
    if status is None:
        return "shell exited"
    if status.signal:
        return f"shell exited on signal {status.signal}"
    return f"shell exited with status {status.code}"


@cli.command("attach")
@click.argument("url", required=False)
@click.option(
    "--url",
    "url_option",
    default=None,
    metavar="URL",
    help="server: ws://host:port/ws/terminal, ws://host:port or http://host:port",
)
@click.option("--project", default=None, help="project id (default: the server's first)")
@click.option("--session", default=None, help="session to attach (default: a new one)")
@click.option("--token", envvar="TETHER_TOKEN", default=None, help="credential ($TETHER_TOKEN)")
def attach(
    url: str | None,
    url_option: str | None,
    project: str | None,
    session: str | None,
    token: str | None,
) -> None:
    """Attach this terminal to a session. Detach with Ctrl-\\ then d (the session keeps running).

    URL may be the WebSocket endpoint or the server's base URL (default ws://127.0.0.1:4001).
    Without --session a new session is created; its id is printed on detach.
    """
    if not _stdin_is_terminal():
        raise NotATerminal("attach needs a terminal on standard input (it is a pipe or a file)")
    target = url_option or url or DEFAULT_URL
    try:
        websocket_url(target)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="URL") from None
    try:
        token = token or stored_token(target)
        result, project = asyncio.run(_attach(target, project, session, token))
    except SessionEnded as exc:
        click.echo(f"tether: cannot attach: {_why(exc)}", err=True)
        raise CommandFailed() from None
    except ClientError as exc:
        click.echo(f"tether: {exc}", err=True)
        raise CommandFailed() from None
    if _report(result, target, project):
        raise CommandFailed()
