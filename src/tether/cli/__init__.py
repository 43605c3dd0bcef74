"""The ``tether`` command. All printing of the package lives under this folder."""

from __future__ import annotations

import importlib
import sys

import click

from tether.cli._group import cli

# Each module registers its commands with the group when imported.
_COMMAND_MODULES = ("serve", "attach", "check", "ops", "loadtools")
for _name in _COMMAND_MODULES:
    try:
        importlib.import_module(f"tether.cli.{_name}")
    except ModuleNotFoundError as _exc:
        if _exc.name != f"tether.cli.{_name}":
            raise


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    try:
        result = cli.main(args=argv, prog_name="tether", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    # Without standalone mode click returns a command's value, or the code of a click Exit.
    return result if isinstance(result, int) else 0


__all__ = ["cli", "main"]

if __name__ == "__main__":
    sys.exit(main())
