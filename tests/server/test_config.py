"""Settings: defaults, layering (file < environment < flags), and one clear error per setting."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tether.errors import ConfigError
from tether.server.config import build_settings, from_environment, load_toml


def test_defaults_match_the_documented_ones(tmp_path: Path) -> None:
    settings = build_settings(cwd=tmp_path)
    assert (settings.host, settings.port) == ("127.0.0.1", 4001)
    assert [(p.id, p.directory) for p in settings.projects] == [("default", tmp_path.resolve())]
    assert settings.buffer_size == 1024 * 1024
    assert settings.idle_timeout == 1800 and settings.kill_grace == 5
    assert (settings.storm_threshold, settings.address_storm_threshold) == (10, 300)
    assert settings.storm_window == 10 and settings.heartbeat == 25
    assert settings.max_message_size == 1024 * 1024 and settings.max_sessions is None
    assert settings.log_file == (tmp_path / "logs/terminal-websocket.log").resolve()
    assert settings.shell and settings.shell[0]


def test_layers_later_wins_and_shell_is_split(tmp_path: Path) -> None:
    config = tmp_path / "tether.toml"
    config.write_text(
        f'port = 5000\nbuffer-size = 65536\nshell = "bash --norc"\nprojects = ["web={tmp_path}"]\n'
    )
    env = from_environment(
        {
            "TETHER_PORT": "6000",
            "TETHER_HEARTBEAT": "3",
            "TETHER_JWT_SECRET": "not-a-setting",
            "HOME": "/x",
        }
    )
    settings = build_settings(load_toml(config), env, {"heartbeat": "4"}, cwd=tmp_path)
    assert settings.port == 6000 and settings.heartbeat == 4
    assert settings.buffer_size == 65536
    assert settings.shell == ("bash", "--norc")
    assert settings.project_ids == ["web"]


@pytest.mark.parametrize(
    ("layer", "named"),
    [
        ({"port": "70000"}, "port"),
        ({"buffer_size": "lots"}, "buffer-size"),
        ({"idle_timeout": "0"}, "idle-timeout"),
        ({"projects": ["no-equals-sign"]}, "project"),
        ({"projects": ["bad/id=/tmp"]}, "project"),
        ({"projects": ["web=/definitely/not/here"]}, "project"),
        ({"shell": "'unbalanced"}, "shell"),
        ({"log_level": "loud"}, "log-level"),
        ({"no_such_setting": "1"}, "no_such_setting"),
    ],
)
def test_invalid_settings_name_the_setting(tmp_path: Path, layer: dict, named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build_settings(layer, cwd=tmp_path)
    assert caught.value.setting.replace("_", "-") == named.replace("_", "-")


def test_bad_toml_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("port = = 3")
    with pytest.raises(ConfigError, match="config"):
        load_toml(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_toml(tmp_path / "missing.toml")


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--port", "-1"], "port"),
        (["--project", "x"], "project"),
        (["--buffer-size", "12"], "buffer-size"),
        (["--heartbeat", "soon"], "heartbeat"),
    ],
)
def test_serve_refuses_invalid_configuration_with_exit_2(tmp_path: Path, args, named) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tether", "serve", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin"},
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0], result.stderr
