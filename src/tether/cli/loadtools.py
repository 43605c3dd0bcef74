"""``tether load`` and ``tether stress``: live progress (rich), a final report, exit 1 on FAIL
(2: an unknown project; 130: interrupted, every session they opened ended)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

import click
from rich.console import Console
from rich.live import Live
from rich.table import Table

from tether.cli._group import (
    CommandFailed,
    as_text,
    cli,
    emit_report,
    figure_lines,
    report_console,
    report_options,
    tool_run,
)
from tether.client import websocket_url
from tether.client.credentials import stored_token
from tether.tools.figures import DEFINITIONS
from tether.tools.load import LoadOptions, LoadProgress, run_load, write_plot
from tether.tools.loadkit import Verdict
from tether.tools.stress import StressOptions, StressProgress, run_stress


def _check_url(urls: tuple[str, ...]) -> tuple[str | None, tuple[str, ...]]:
    """The first ``--url`` and the others (nodes of one cluster), each checked."""
    for url in urls:
        try:
            websocket_url(url)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--url") from None
    return (urls[0] if urls else None), urls[1:]


def _url_option(command: Any) -> Any:
    return click.option(
        "--url",
        "url",
        multiple=True,
        metavar="URL",
        help="server: ws://host:port/ws/terminal, ws://host:port or http://host:port "
        "(default: start an embedded server for the run); repeat it for the nodes of a "
        "cluster: connects and reconnects go to a random one",
    )(command)


def _progress_table(title: str, rows: Iterable[tuple[str, str]]) -> Table:
    table = Table(title=title, show_header=False, box=None)
    table.add_column(style="dim")
    table.add_column()
    for name, value in rows:
        table.add_row(name, value)
    return table


def _load_rows(progress: LoadProgress) -> list[tuple[str, str]]:
    return [
        ("phase", progress.phase),
        ("elapsed / remaining", f"{progress.elapsed:.0f} s / {progress.remaining:.0f} s"),
        ("users up / connected", f"{progress.users} / {progress.connected}"),
        ("reconnects", str(progress.reconnects)),
        ("lines verified", str(progress.lines)),
        ("keystrokes/s", f"{progress.keys_per_second:.0f}"),
        ("errors", f"[red]{progress.errors}[/]" if progress.errors else "0"),
    ]


def _stress_rows(progress: StressProgress) -> list[tuple[str, str]]:
    return [
        ("phase", progress.phase),
        ("elapsed", f"{progress.elapsed:.0f} s"),
        ("iterations", f"{progress.iterations} / {progress.total}"),
        ("storm refusals (4129)", str(progress.storm_refusals)),
        ("errors", f"[red]{progress.errors}[/]" if progress.errors else "0"),
    ]


def _verdict_table(verdicts: list[Verdict], strict: bool) -> Table:
    table = Table(title="targets")
    for column in ("target", "kind", "goal", "measured", "result"):
        table.add_column(column)
    for v in verdicts:
        counted = strict or v.kind != "tether"
        mark = "[green]PASS[/]" if v.passed else ("[red]FAIL[/]" if counted else "[yellow]miss[/]")
        table.add_row(v.name, v.kind, v.target, v.measured, mark)
    return table


def _latency_table(latency: dict[str, dict[str, float]]) -> Table:
    table = Table(title="latency (ms)")
    for column in ("what", "count", "p50", "p95", "p99", "max"):
        table.add_column(column, justify="right")
    for name, summary in latency.items():
        cells = [as_text(summary.get(k)) for k in ("count", "p50", "p95", "p99", "max")]
        table.add_row(name, *cells)
    return table


def _figures_table(figures: dict[str, Any]) -> Table:
    table = Table(title="figures", show_header=False)
    table.add_column(style="dim")
    table.add_column()
    skip = {"latency_ms", "latencies_s", "server"}
    for line in figure_lines({k: v for k, v in figures.items() if k not in skip}):
        name, _, value = line.partition(": ")
        table.add_row(name, value)
    return table


def _print_report(report: dict[str, Any], verdicts: list[Verdict], strict: bool) -> None:
    console = report_console()
    figures = report["figures"]
    if "latency_ms" in figures:
        console.print(_latency_table(figures["latency_ms"]))
        for name in figures["latency_ms"]:  # what each row measures (tether.tools.figures)
            console.print(f"[dim]{name}: {DEFINITIONS.get(name, '')}")
    console.print(_figures_table(figures))
    for line in report["errors"][:20]:
        console.print(f"[red]error:[/] {line}", markup=True, highlight=False)
    console.print(_verdict_table(verdicts, strict))
    verdict = "[bold green]PASS" if report["passed"] else "[bold red]FAIL"
    console.print(f"{verdict}[/] — {report['tool']} against {report['url']}")


def _run_live(
    tool: str, title: str, rows: Callable[[Any], list[tuple[str, str]]], work: Any
) -> Any:
    """Run ``work(show)`` under a live progress display (stderr); Ctrl-C and an unknown project
    end the command as :func:`tool_run` says."""
    console = Console(stderr=True)
    with tool_run(tool), Live(console=console, refresh_per_second=4, transient=True) as live:

        def show(progress: Any) -> None:
            live.update(_progress_table(title, rows(progress)))

        return asyncio.run(work(show))


def _finish(
    report: Any, as_json: bool, out_file: str | None, plot_file: str | None, strict: bool
) -> None:
    data = report.to_json()
    emit_report(data, as_json, out_file)
    if report.error:
        click.echo(f"tether {data['tool']}: {report.error}", err=True)
    elif not as_json:
        _print_report(data, report.verdicts, strict)
    if plot_file and not report.error:
        write_plot(data, plot_file)
    if not report.passed:
        raise CommandFailed()


@cli.command("load")
@_url_option
@click.option("--project", default=None, help="project id (default: the server's first)")
@click.option("--connections", type=click.IntRange(1, 5000), default=100, show_default=True)
@click.option("--duration", type=click.FloatRange(1, 3600), default=300.0, show_default=True)
@click.option("--ramp-up", type=click.FloatRange(0, 600), default=None, help="seconds to start all")
@click.option(
    "--reconnect-every",
    type=click.FloatRange(0, 3600),
    default=None,
    help="mean seconds between cuts of each user (default: 30, or a quarter of the duration "
    "if shorter; 0: never)",
)
@report_options
@click.option("--plot", "plot_file", default=None, metavar="FILE", help="write a PNG")
@click.option("--seed", type=int, default=None, help="random seed")
@click.option("--strict", is_flag=True, help="also fail on tether's own targets")
@click.option("--token", envvar="TETHER_TOKEN", default=None, help="credential ($TETHER_TOKEN)")
def load(
    url: tuple[str, ...],
    project: str | None,
    connections: int,
    duration: float,
    ramp_up: float | None,
    reconnect_every: float | None,
    as_json: bool,
    out_file: str | None,
    plot_file: str | None,
    seed: int | None,
    strict: bool,
    token: str | None,
) -> None:
    """Simulate users typing into their own sessions, cut and resumed; verify every byte."""
    first, also = _check_url(url)
    options = LoadOptions(
        url=first,
        also=also,
        project=project,
        connections=connections,
        duration=duration,
        ramp_up=ramp_up,
        reconnect_every=reconnect_every,
        seed=seed,
        token=token or (stored_token(first) if first is not None else None),
    )
    report = _run_live(
        "load",
        f"tether load — {connections} users × {duration:g} s",
        _load_rows,
        lambda show: run_load(options, show, strict=strict),
    )
    _finish(report, as_json, out_file, plot_file, strict)


@cli.command("stress")
@_url_option
@click.option("--project", default=None, help="project id (default: the server's first)")
@click.option(
    "--rapid-reconnect",
    is_flag=True,
    default=True,
    help="connect/disconnect cycles (the only mode; accepted for the plan's command line)",
)
@click.option("--iterations", type=click.IntRange(10, 100000), default=1000, show_default=True)
@click.option("--concurrency", type=click.IntRange(1, 500), default=20, show_default=True)
@report_options
@click.option("--seed", type=int, default=None, help="random seed")
@click.option("--strict", is_flag=True, help="also fail on tether's own targets")
@click.option("--token", envvar="TETHER_TOKEN", default=None, help="credential ($TETHER_TOKEN)")
def stress(
    url: tuple[str, ...],
    project: str | None,
    rapid_reconnect: bool,
    iterations: int,
    concurrency: int,
    as_json: bool,
    out_file: str | None,
    seed: int | None,
    strict: bool,
    token: str | None,
) -> None:
    """Rapid reconnects, concurrent creates, aborts mid-replay, storms; check for leaks."""
    first, also = _check_url(url)
    options = StressOptions(
        url=first,
        also=also,
        project=project,
        iterations=iterations,
        concurrency=concurrency,
        seed=seed,
        token=token or (stored_token(first) if first is not None else None),
    )
    report = _run_live(
        "stress",
        f"tether stress — {iterations} iterations",
        _stress_rows,
        lambda show: run_stress(options, show, strict=strict),
    )
    _finish(report, as_json, out_file, None, strict)
