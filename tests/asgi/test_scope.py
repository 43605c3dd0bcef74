"""Reading an ASGI scope, and the settings the ASGI front refuses (no server needed)."""

from __future__ import annotations

import pytest

from tether.asgi import create_app
from tether.errors import ConfigError
from tether.server.asgi_front.scope import cookies_of, headers_of, query_of, route_of
from tether.server.config import build_settings


@pytest.mark.parametrize(
    ("path", "root", "route"),
    [
        ("/ws/terminal", "", "/ws/terminal"),  # served at the top
        ("/term/ws/terminal", "/term", "/ws/terminal"),  # Starlette's Mount, uvicorn --root-path
        ("/ws/terminal", "/term", "/ws/terminal"),  # routers that strip the mount point
        ("/term", "/term", "/"),
        ("/terminal/x", "/term", "/terminal/x"),  # not below /term
    ],
)
def test_route_below_the_mount_point(path: str, root: str, route: str) -> None:
    assert route_of({"path": path, "root_path": root}) == route


def test_headers_cookies_and_query() -> None:
    scope = {
        "headers": [
            (b"Host", b"127.0.0.1"),
            (b"cookie", b"a=1; tether_token=secret"),
            (b"x-forwarded-for", b"10.0.0.1"),
            (b"X-Forwarded-For", b"10.0.0.2"),
        ],
        "query_string": b"project=web&session=&project=other",
    }
    headers = headers_of(scope)
    assert headers["HOST"] == "127.0.0.1"
    assert headers.get_all("X-Forwarded-For") == ["10.0.0.1", "10.0.0.2"]
    assert cookies_of(headers) == {"a": "1", "tether_token": "secret"}
    assert query_of(scope) == {"project": "web", "session": ""}


def test_settings_it_cannot_serve_are_refused_by_name() -> None:
    local = build_settings({"auth": "local", "log_file": "-"})
    with pytest.raises(ConfigError, match="auth"):
        create_app(local)
    create_app(local, identify=lambda scope: None)  # the host application logs people in
