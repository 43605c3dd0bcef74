"""The ``tether`` click group every command module registers itself with."""

from __future__ import annotations

import click

from tether._version import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="tether")
def cli() -> None:
    """tether: persistent browser terminals — real shells that survive every disconnect."""
