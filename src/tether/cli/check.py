"""``tether check``: validate a deployment; prints a table (rich) or JSON."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tether.cli._group import (
    CommandFailed,
    cli,
    emit_report,
    figure_lines,
    report_console,
    report_options,
    tool_run,
)
from tether.client import websocket_url
from tether.client.credentials import stored_token
from tether.tools.check import SCENARIOS, CheckProgress, CheckReport, run_check
from tether.tools.figures import describe

__all__ = ["check"]

_STYLES = {"pass": "bold green", "fail": "bold red", "skip": "yellow"}


def _figure_text(figures: dict[str, Any]) -> list[str]:
    """A scenario's figures as ``name: value`` lines; latency summaries in words."""
    lines = []
    for name, value in figures.items():
        if isinstance(value, dict) and "count" in value:
            lines.append(f"{name}: {describe(value)}")
        else:
            lines += figure_lines({name: value})
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
        notes = [f"note: {note}" for note in result.notes]
        table.add_row(
            result.name,
            f"{status}\n{result.seconds:.2f} s",
            escape("\n".join(_figure_text(result.figures) + notes)),
            escape("\n".join(result.failures)),
        )
    console.print(table)
    verdict = "[bold green]all scenarios passed" if report.passed else "[bold red]check failed"
    console.print(verdict)


def _progress_printer(console: Console) -> Callable[[CheckProgress], None]:
    """One line per scenario start, note and end (on stderr: stdout is for the report)."""

    def show(event: CheckProgress) -> None:
        if event.event == "start":
            console.print(f"[dim]{event.scenario}: running…", highlight=False)
        elif event.event == "note":
            console.print(f"[dim]{event.scenario}: {escape(event.message)}", highlight=False)
        elif event.result is not None:
            status = event.result.status
            console.print(
                f"{event.scenario}: [{_STYLES[status]}]{status.upper()}[/] "
                f"({event.result.seconds:.1f} s)",
                highlight=False,
            )

    return show


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
@report_options
@click.option("--strict", is_flag=True, help="also fail on tether's own latency targets")
@click.option("--token", envvar="TETHER_TOKEN", default=None, help="credential ($TETHER_TOKEN)")
def check(
    urls: tuple[str, ...],
    project: str | None,
    scenarios: tuple[str, ...],
    time_scale: float,
    as_json: bool,
    out_file: str | None,
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
    work = run_check(
        url,
        names,
        project=project,
        token=token or (stored_token(url) if url is not None else None),
        time_scale=time_scale,
        strict=strict,
        progress=_progress_printer(report_console(stderr=True)),
        also=urls[1:],
    )
    with tool_run("check"):
        report = asyncio.run(work)
    emit_report(report.to_json(), as_json, out_file)
    if report.error:
        click.echo(f"tether check: {report.error}", err=True)
    elif not as_json:
        _render(report, report_console())
    if not report.passed:
        raise CommandFailed()
