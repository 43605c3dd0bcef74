"""``tether serve``: run the terminal server."""

from __future__ import annotations

import errno
import os
import sys
from typing import Any, NoReturn

import click

from tether.cli._group import cli
from tether.errors import ConfigError, HandoverError
from tether.startup import no_collection

# (flag, metavar, help): each flag sets the settings field of the same name; every value is
# validated by the settings model.
_SCALAR_FLAGS = (
    ("host", "ADDR", "address to listen on (default 127.0.0.1)"),
    ("port", "PORT", "port to listen on; 0 picks a free one (default 4001)"),
    ("shell", "CMD", "command line each terminal runs (default: login shell, else bash)"),
    ("buffer-size", "BYTES", "output kept per session for replay (default 1048576)"),
    ("idle-timeout", "SECONDS", "end a session detached this long (default 1800)"),
    ("kill-grace", "SECONDS", "SIGHUP to SIGKILL delay when a session ends (default 5)"),
    ("storm-threshold", "N", "connects per key within the storm window (default 10)"),
    ("address-storm-threshold", "N", "connects per client address in the window (default 300)"),
    ("storm-window", "SECONDS", "the storm window (default 10)"),
    ("heartbeat", "SECONDS", "ping interval; two unanswered pings drop a client (default 25)"),
    ("max-message-size", "BYTES", "larger client frames close with 1009 (default 1048576)"),
    ("max-sessions", "N", "sessions held at most, then 1013 (default: what fds and PTYs allow)"),
    ("log-file", "PATH", "JSON lifecycle log, '-' for none (default logs/terminal-websocket.log)"),
    ("log-level", "LEVEL", "debug, info, warning or error (default info)"),
    ("log-stderr-level", "LEVEL", "human log on stderr, or off (default: warning with a log file)"),
    ("drain-grace", "SECONDS", "after SIGTERM or POST /api/drain, end shells after (default 5)"),
    ("tombstone-ttl", "SECONDS", "how long an ended session's reason is kept (default 300)"),
    ("record-dir", "DIR", "record every session's output as asciicast v2 files in DIR (mode 700)"),
    ("record-max-bytes", "BYTES", "size of a recording file, then a continuation (default 64 MiB)"),
    ("record-queue-bytes", "BYTES", "recording not yet written, then events drop (default 8 MiB)"),
)


# Security flags (docs/security.md): (flag, metavar, help).
_SECURITY_FLAGS = (
    ("auth", "local|none|token|jwt", "authentication (default local: a generated token)"),
    ("tokens-file", "FILE", "TOML file of [[tokens]] (owner, projects, operator) for --auth token"),
    ("jwt-secret-file", "FILE", "file holding the HS256 secret for --auth jwt (mode 600)"),
    ("jwt-secret-env", "NAME", "environment variable holding the HS256 secret for --auth jwt"),
    ("jwt-public-key", "FILE", "PEM RSA public key (RS256) for --auth jwt"),
    ("jwt-audience", "AUD", "required JWT audience (aud)"),
    ("jwt-leeway", "SECONDS", "clock skew tolerated on exp/nbf (default 30)"),
    ("max-sessions-per-owner", "N", "sessions one owner may hold, where auth is on (default 50)"),
    ("certfile", "FILE", "TLS certificate chain (PEM): serve https:// and wss://"),
    ("keyfile", "FILE", "TLS private key (PEM), if not inside --certfile"),
    ("shell-user", "USER", "run shells as this unprivileged user (server running as root)"),
    ("jwt-account-claim", "CLAIM", "JWT claim naming the owner's Unix account for its shells"),
    ("user-map", "FILE", 'TOML file of owner = "account": the Unix account of each owner'),
    ("jwt-issuer", "ISS", "required JWT issuer (iss)"),
    ("jwt-max-lifetime", "SECONDS", "longest JWT lifetime accepted (exp - now; default 86400)"),
    ("jwt-deny-list", "FILE", "file of revoked JWT ids (jti), one a line; reloaded on SIGHUP"),
    ("max-login-failures", "N", "failed logins per address per minute before 4129/429"),
    ("handshake-timeout", "SECONDS", "time to send the request headers (default 10)"),
    ("max-pending-per-address", "N", "connections not yet upgraded per address (default 32)"),
)


# Cluster flags (docs/scaling.md): (flag, metavar, help).
_CLUSTER_FLAGS = (
    ("redis-url", "URL", "join a cluster of nodes sharing this Redis (redis://HOST:PORT/DB)"),
    ("node-id", "NAME", "this node's name in the cluster (default: host name and port)"),
    ("advertise-url", "URL", "how other nodes reach this one (default: from --host/--port)"),
    ("cluster-secret-env", "NAME", "environment variable holding the node-to-node secret"),
)


def _options(command: Any) -> Any:
    for flag, metavar, text in reversed(_SCALAR_FLAGS + _SECURITY_FLAGS + _CLUSTER_FLAGS):
        command = click.option(f"--{flag}", default=None, metavar=metavar, help=text)(command)
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
@click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    metavar="NAME",
    help="host name served besides loopback addresses (repeatable; .example.com: subdomains)",
)
@click.option(
    "--insecure-no-auth",
    "insecure_no_auth",
    is_flag=True,
    default=None,
    help="allow --auth none on a non-loopback address (anyone reaching it gets a shell)",
)
@click.option(
    "--allow-same-user-shells",
    "allow_same_user_shells",
    is_flag=True,
    default=None,
    help="with --auth token|jwt, let owners' shells share one account (insecure)",
)
@click.option(
    "--metrics-auth/--no-metrics-auth",
    "metrics_auth",
    default=None,
    help="/metrics needs a credential where auth is on (default: yes)",
)
@click.option(
    "--supervise/--no-supervise",
    "supervise",
    default=None,
    help="a supervising process keeps the shells through a crash of the server (default: yes)",
)
@click.option(
    "--upgrade-command",
    "upgrade_command",
    default=None,
    metavar="CMD",
    help="command line an upgrade in place runs (default: this one; docs/operations.md)",
)
@click.option(
    "--record-input",
    "record_input",
    is_flag=True,
    default=None,
    help="with --record-dir, record what users type too (off by default: passwords)",
)
@click.option(
    "--healthz-auth/--no-healthz-auth",
    "healthz_auth",
    default=None,
    help="/healthz and /readyz need a credential where auth is on (default: no)",
)
@_options
def serve(config_file: str | None, **flags: Any) -> None:
    """Serve terminals over WebSocket (default 127.0.0.1:4001)."""
    raw = {key: value for key, value in flags.items() if value not in (None, ())}
    try:
        with no_collection():
            from tether.server.capacity import prepare as prepare_capacity
            from tether.server.config import build_settings, from_environment, load_toml
            from tether.server.supervisor import should_supervise, supervise
            from tether.server.upgrade import check_requested
            from tether.server.worker import run

            file_layer = (
                load_toml(config_file or os.environ["TETHER_CONFIG"])
                if (config_file or os.environ.get("TETHER_CONFIG"))
                else {}
            )
            settings = build_settings(file_layer, from_environment(os.environ), raw)
        if check_requested(os.environ):  # an upgrade's pre-check of this code and settings
            check_only(settings)
        elif should_supervise(settings, os.environ):
            # The supervisor keeps two fds per session and its worker inherits the limit.
            prepare_capacity(settings.max_sessions)
            raise click.exceptions.Exit(supervise(sys.orig_argv))
        else:
            run(settings)  # raises ConfigError before listening (tokens file, keys, certificate)
    except ConfigError as exc:
        click.echo(f"tether: invalid configuration: {exc}", err=True)
        raise click.exceptions.Exit(2) from None
    except HandoverError as exc:
        click.echo(f"tether: {exc}", err=True)
        raise click.exceptions.Exit(1) from None
    except OSError as exc:
        if exc.errno not in _LISTEN_ERRORS:
            raise
        click.echo(f"tether: {_listen_problem(settings.host, settings.port, exc)}", err=True)
        raise click.exceptions.Exit(2) from None


# A worker exits 2 on these: the supervisor takes that as final (no restart), so the one line
# comes out once however the server runs.
_LISTEN_ERRORS = (errno.EADDRINUSE, errno.EADDRNOTAVAIL)


def _listen_problem(host: str, port: int, exc: OSError) -> str:
    """One line naming the address that could not be listened on, and what to do."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return f"cannot listen on {where}: port {port} is already in use (choose another: --port)"
    return f"cannot listen on {where}: the address is not available on this machine (--host)"


def check_only(settings: Any) -> NoReturn:
    """``TETHER_UPGRADE_CHECK=1`` (an upgrade's pre-check, docs/operations.md): this code
    imported whole, the settings, keys, certificate and hand-over version good; then exit."""
    from tether.server.aiohttp_front.app import create_app
    from tether.server.starting import tls_context
    from tether.server.upgrade import CHECK_OK, check_version

    check_version(os.environ)
    tls_context(settings)
    create_app(settings)  # the tokens file, keys, deny list, user map
    click.echo(CHECK_OK)  # flushed
    # A throwaway process: it ends here, without the interpreter's teardown (0.1-0.2 s of CPU
    # that would compete with the start of the new worker, which the clients wait for).
    os._exit(0)
