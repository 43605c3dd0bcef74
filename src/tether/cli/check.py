"""``tether check``: validate a deployment; prints a table (rich) or JSON."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from tether.cli._group import cli
from tether.client import websocket_url
from tether.client.credentials import stored_token
from tether.tools.check import SCENARIOS, CheckReport, run_check


class CommandFailed(click.ClickException):
    """End a command with exit status 1 once it has printed its own explanation.

    An exception rather than ``ctx.exit(1)``: with ``standalone_mode=False`` click turns ``Exit``
    into a return value, which ``main(argv)`` would not see.
    """

    exit_code = 1

    def __init__(self) -> None:
        super().__init__("")

    def show(self, file: Any = None) -> None:
        """Nothing more to say: the command has already explained."""


_STYLES = {"pass": "bold green", "fail": "bold red", "skip": "yellow"}


def _figures(figures: dict[str, Any], prefix: str = "") -> list[str]:
    lines = []
    for name, value in figures.items():
        if isinstance(value, dict) and value and name != "canonical":
            lines += _figures(value, f"{prefix}{name}.")
        elif isinstance(value, list):
            lines.append(f"{prefix}{name}: {', '.join(str(v) for v in value)}")
        else:
            lines.append(f"{prefix}{name}: {value}")
    return lines


def _render(report: CheckReport, console: Console) -> None:
    table = Table(
        title=f"tether check — {report.url} (project {report.project}, "
        f"time scale {report.time_scale:g})"
    )
    for column in ("scenario", "result", "figures", "problems"):
        table.add_column(column, overflow="fold")
    for result in report.results:
        status = f"[{_STYLES[result.status]}]{result.status.upper()}[/]"
        table.add_row(
            result.name,
            f"{status}\n{result.seconds:.2f} s",
            "\n".join(_figures(result.figures)),
            "\n".join(result.failures),
        )
    console.print(table)
    verdict = "[bold green]all scenarios passed" if report.passed else "[bold red]check failed"
    console.print(verdict)


def _scenario_names(values: tuple[str, ...]) -> list[str]:
    names = [name.strip() for value in values for name in value.split(",") if name.strip()]
    return names or ["all"]


@cli.command("check")
@click.option(
    "--url",
    "urls",
    multiple=True,
    metavar="URL",
    help="server to check: ws://host:port/ws/terminal, ws://host:port or "
    "http://host:port (default: start an embedded server); repeat it for the nodes of a "
    "cluster: connections go to each in turn",
)
@click.option("--project", default=None, help="project id (default: the server's first)")
@click.option(
    "--scenario",
    "scenarios",
    multiple=True,
    metavar="NAME",
    help=f"{'|'.join([*SCENARIOS, 'all'])} (repeatable or comma-separated; default all)",
)
@click.option(
    "--time-scale",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="scale the client-side delays (not the server's retry-after)",
)
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
@click.option("--strict", is_flag=True, help="also fail on tether's own latency targets")
@click.option("--token", envvar="TETHER_TOKEN", default=None, help="credential ($TETHER_TOKEN)")
def check(
    urls: tuple[str, ...],
    project: str | None,
    scenarios: tuple[str, ...],
    time_scale: float,
    as_json: bool,
    strict: bool,
    token: str | None,
) -> None:
    """Run validation scenarios against a tether server; exit 0 only when all pass."""
    names = _scenario_names(scenarios)
    unknown = [n for n in names if n != "all" and n not in SCENARIOS]
    if unknown:
        raise click.BadParameter(f"unknown scenario {unknown[0]!r}", param_hint="--scenario")
    for each in urls:
        try:
            websocket_url(each)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--url") from None
    url = urls[0] if urls else None
    console = Console(stderr=True)
    progress = None if as_json else (lambda name: console.print(f"[dim]running {name}…"))
    report = asyncio.run(
        run_check(
            url,
            names,
            project=project,
            token=token or (stored_token(url) if url is not None else None),
            time_scale=time_scale,
            strict=strict,
            progress=progress,
            also=urls[1:],
        )
    )
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    elif report.error:
        console.print(f"[bold red]tether check: {report.error}")
    else:
        _render(report, Console())
    if report.error and as_json:
        click.echo(f"tether check: {report.error}", err=True)
    if not report.passed:
        raise CommandFailed()
