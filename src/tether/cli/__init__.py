"""The ``tether`` command. All printing of the package lives under this folder."""

from __future__ import annotations

import sys

import click

from tether.cli._group import cli

# Each command module registers its commands with the group when the group first looks the
# command up (tether.cli._group.COMMAND_MODULES).


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
