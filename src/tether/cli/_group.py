"""The ``tether`` click group every command module registers itself with, and what the commands
that print reports share: ``--json`` / ``--out FILE``, plain-text figures, exit status 1 (a failed
report), 2 (bad input) or 130 (interrupted)."""

from __future__ import annotations

import contextlib
import importlib
import json
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import click

from tether._version import __version__
from tether.errors import UnknownProject

if TYPE_CHECKING:
    from rich.console import Console

F = TypeVar("F", bound=Callable[..., Any])

# The module that registers each command. A command's module is imported when the command is
# looked up, so that ``tether serve`` (run twice by every upgrade in place: its check, then the
# exec) does not import the client, the tools and rich (tests/cli/test_serve_imports.py).
COMMAND_MODULES = {
    "serve": "serve",
    "attach": "attach",
    "check": "check",
    "stats": "ops",
    "sessions": "ops",
    "restart": "ops",
    "load": "loadtools",
    "stress": "loadtools",
}


class LazyGroup(click.Group):
    """A click group whose commands register themselves when their module is first imported."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        for name in COMMAND_MODULES:
            self._load(name)
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        self._load(cmd_name)
        return super().get_command(ctx, cmd_name)

    def _load(self, name: str) -> None:
        module = COMMAND_MODULES.get(name)
        if module is None or name in self.commands:
            return
        try:
            importlib.import_module(f"tether.cli.{module}")
        except ModuleNotFoundError as exc:  # a command module left out of this install
            if exc.name != f"tether.cli.{module}":
                raise


@click.group(
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="tether")
def cli() -> None:
    """tether: persistent browser terminals — real shells that survive every disconnect."""


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


class BadInput(click.ClickException):
    """A tool was given something the server does not have (a project): one line, exit 2."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(self.message, err=True)


@contextlib.contextmanager
def tool_run(tool: str) -> Iterator[None]:
    """Around a tool's ``asyncio.run``: Ctrl-C (the tool ended its sessions on the way out) is
    one line and exit 130; an unknown project is one line and exit 2, no report."""
    try:
        yield
    except KeyboardInterrupt:
        click.echo(f"tether {tool}: interrupted; the sessions it opened were ended", err=True)
        raise click.exceptions.Exit(130) from None
    except UnknownProject as exc:
        raise BadInput(f"tether {tool}: {exc}") from None


def report_options(command: F) -> F:
    """``--json`` (the report as JSON on stdout, and nothing else there) and ``--out FILE``."""
    command = click.option(
        "--out",
        "out_file",
        default=None,
        metavar="FILE",
        type=click.Path(dir_okay=False, writable=True),
        help="also write the report as JSON to FILE",
    )(command)
    return click.option(
        "--json", "as_json", is_flag=True, help="print the report as JSON on stdout, nothing else"
    )(command)


def emit_report(data: Any, as_json: bool, out_file: str | None) -> None:
    """Print (``--json``) and/or write (``--out``) a report's JSON."""
    text = json.dumps(data, indent=2)
    if as_json:
        click.echo(text)
    if out_file:
        with open(out_file, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")


def as_text(value: Any) -> str:
    """A figure's value for a person: no Python reprs (dicts, None, True) in tables."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict):
        return ", ".join(f"{key} {as_text(item)}" for key, item in value.items()) or "none"
    if isinstance(value, list | tuple):
        return ", ".join(as_text(item) for item in value) or "none"
    return str(value)


def figure_lines(figures: dict[str, Any], prefix: str = "") -> list[str]:
    """``name: value`` lines, nested mappings flattened into dotted names."""
    lines = []
    for name, value in figures.items():
        if isinstance(value, dict) and value:
            lines += figure_lines(value, f"{prefix}{name}.")
        else:
            lines.append(f"{prefix}{name}: {as_text(value)}")
    return lines


def report_console(*, stderr: bool = False) -> Console:
    """A console for reports: a terminal's own width; piped, wide enough that lines do not wrap
    (grep-able)."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, highlight=False, width=None if stream.isatty() else 160)
