"""``tether serve``: run the terminal server."""

from __future__ import annotations

import os
from typing import Any

import click

from tether.cli._group import cli
from tether.config import build_settings, from_environment, load_toml
from tether.errors import ConfigError

# flag name → settings field; every value is validated by the settings model.
_SCALAR_FLAGS = (
    "host",
    "port",
    "shell",
    "buffer-size",
    "idle-timeout",
    "kill-grace",
    "storm-threshold",
    "address-storm-threshold",
    "storm-window",
    "heartbeat",
    "max-message-size",
    "max-sessions",
    "log-file",
    "log-level",
    "drain-grace",
    "tombstone-ttl",
)


def _options(command: Any) -> Any:
    for flag in reversed(_SCALAR_FLAGS):
        command = click.option(
            f"--{flag}", default=None, metavar="VALUE", help=f"see docs ({flag.replace('-', '_')})"
        )(command)
    return command


@cli.command()
@click.option(
    "--config",
    "config_file",
    default=None,
    metavar="FILE",
    help="TOML config file (flags and TETHER_* variables win over it)",
)
@click.option(
    "--project",
    "projects",
    multiple=True,
    metavar="ID=DIR",
    help="a project and its directory (repeatable; default: default=.)",
)
@click.option(
    "--allowed-origin",
    "allowed_origins",
    multiple=True,
    metavar="ORIGIN",
    help="browser origin allowed to connect (repeatable; default: our own)",
)
@click.option(
    "--trusted-proxy",
    "trusted_proxies",
    multiple=True,
    metavar="ADDR",
    help="peer address whose X-Forwarded-For is believed (repeatable)",
)
@click.option(
    "--loopback-exempt/--no-loopback-exempt",
    "storm_exempt_loopback",
    default=None,
    help="exempt loopback peers from the per-address storm rule (default: yes)",
)
@_options
def serve(config_file: str | None, **flags: Any) -> None:
    """Serve terminals over WebSocket (default 127.0.0.1:4001)."""
    from tether.app import run

    raw = {key: value for key, value in flags.items() if value not in (None, ())}
    try:
        file_layer = (
            load_toml(config_file or os.environ["TETHER_CONFIG"])
            if (config_file or os.environ.get("TETHER_CONFIG"))
            else {}
        )
        settings = build_settings(file_layer, from_environment(os.environ), raw)
    except ConfigError as exc:
        click.echo(f"tether: invalid configuration: {exc}", err=True)
        raise click.exceptions.Exit(2) from None
    run(settings)
