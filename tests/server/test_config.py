"""Settings: defaults, layering (file < environment < flags), and one clear error per setting."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tether.errors import ConfigError
from tether.server.config import FIELDS, Settings, build_settings, from_environment, load_toml


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


# ------------------------------------------------------------------- the field table (coercion)
# Every setting arrives as TOML, as a TETHER_* string or as a flag string; the defaults written
# out in each form must come back as the defaults (a type whose text form its coercion refuses,
# or a default outside its own bounds, fails here).
ROUND_TRIPPED = [
    name
    for name, spec in FIELDS.items()
    if spec.default is not None and name not in {"projects", "shell"}  # computed at start
]


def _text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return _text(value)
    if isinstance(value, tuple):
        return json.dumps(list(value))
    return json.dumps(str(value)) if isinstance(value, str | Path) else repr(value)


def test_defaults_survive_toml_environment_and_flags(tmp_path: Path) -> None:
    defaults = build_settings(cwd=tmp_path)
    config = tmp_path / "defaults.toml"
    lines = [f"{name.replace('_', '-')} = {_toml(FIELDS[name].default)}" for name in ROUND_TRIPPED]
    config.write_text("\n".join(lines) + "\n")
    environ = {
        f"TETHER_{name.upper()}": ",".join(value) if isinstance(value, tuple) else _text(value)
        for name in ROUND_TRIPPED
        for value in [FIELDS[name].default]
    }
    flags = {
        name: value if isinstance(value, tuple) else _text(value)
        for name in ROUND_TRIPPED
        for value in [FIELDS[name].default]
    }
    assert len(ROUND_TRIPPED) >= 40  # every setting with a default other than None
    for layer in (load_toml(config), from_environment(environ), flags):
        assert build_settings(layer, cwd=tmp_path) == defaults


@pytest.mark.parametrize(
    ("name", "given", "value"),
    [
        ("port", "4001", 4001),
        ("port", " 5000 ", 5000),
        ("port", "4.0", 4),
        ("port", 6000.0, 6000),
        ("heartbeat", "1.5", 1.5),
        ("heartbeat", 2, 2.0),
        ("heartbeat", "1e-3", 0.001),
        ("max_sessions", "5", 5),
        ("allowed_hosts", ["a.example", "b.example"], ("a.example", "b.example")),
        ("trusted_proxies", ("10.0.0.1",), ("10.0.0.1",)),
        ("tokens_file", "/etc/tether/tokens.toml", Path("/etc/tether/tokens.toml")),
        ("auth", "jwt", "jwt"),
        ("log_level", "DEBUG", "debug"),
        ("log_stderr_level", "Off", "off"),
        ("log_stderr_level", None, None),
        ("max_sessions", None, None),
    ],
)
def test_values_as_given_are_coerced(name: str, given: Any, value: Any) -> None:
    settings = Settings(**{name: given})
    assert getattr(settings, name) == value
    assert type(getattr(settings, name)) is type(value)


@pytest.mark.parametrize(
    "word", ["true", "FALSE", "1", "0", "yes", "No", "on", "OFF", "t", "F", "y", "N", True, 0]
)
def test_booleans_from_words(word: str | bool | int) -> None:
    expected = str(word).lower() in {"true", "1", "yes", "on", "t", "y"}
    assert Settings(supervise=word).supervise is expected
    assert build_settings({"record_input": word}).record_input is expected


@pytest.mark.parametrize(
    ("name", "given", "message"),
    [
        ("port", "4.5", "must be an integer"),
        ("port", "abc", "must be an integer"),
        ("port", True, "must be an integer"),
        ("port", "0x10", "must be an integer"),
        ("heartbeat", "soon", "must be a number"),
        ("heartbeat", "nan", "must be a number"),
        ("heartbeat", False, "must be a number"),
        ("supervise", "maybe", "must be true or false"),
        ("supervise", 2, "must be true or false"),
        ("host", 80, "must be a string"),
        ("allowed_origins", "https://a.example", "must be a list of strings"),
        ("allowed_origins", ["https://a.example", 1], "must be a list of strings"),
        ("log_file", 3, "must be a file path"),
        ("auth", "TOKEN", "must be one of local, none, token, jwt"),
        ("log_level", "loud", "must be one of debug, info, warning, error"),
        ("log_stderr_level", "", "must be one of debug, info, warning, error, off"),
        ("log_level", None, "must be a string"),
    ],
)
def test_wrong_values_name_the_setting_and_why(name: str, given: Any, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings(**{name: given})
    assert (caught.value.setting, caught.value.message) == (name.replace("_", "-"), message)


BOUNDED = [
    (name, spec) for name, spec in FIELDS.items() if (spec.ge, spec.gt, spec.le) != (None,) * 3
]


@pytest.mark.parametrize(("name", "spec"), BOUNDED, ids=[name for name, _ in BOUNDED])
def test_bounds_hold_at_the_edge(name: str, spec: Any) -> None:
    step = 1 if isinstance(spec.coerce("1"), int) else 1e-6  # the field's own type
    if spec.ge is not None:
        assert getattr(Settings(**{name: spec.ge}), name) == spec.ge
        with pytest.raises(ConfigError, match=f"{name.replace('_', '-')}: must be at least"):
            Settings(**{name: spec.ge - step})
    if spec.gt is not None:
        assert getattr(Settings(**{name: spec.gt + step}), name) == spec.gt + step
        with pytest.raises(ConfigError, match=f"{name.replace('_', '-')}: must be greater than"):
            Settings(**{name: spec.gt})
    if spec.le is not None:
        assert getattr(Settings(**{name: str(spec.le)}), name) == spec.le
        with pytest.raises(ConfigError, match=f"{name.replace('_', '-')}: must be at most"):
            Settings(**{name: spec.le + step})


def test_the_documented_bounds() -> None:
    # The edges users meet most, as numbers: a change to one is a change users notice.
    assert [Settings(port=p).port for p in (0, 65535)] == [0, 65535]
    for bad in ({"port": -1}, {"port": 65536}, {"buffer_size": 1023}, {"idle_timeout": 0}):
        with pytest.raises(ConfigError):
            Settings(**bad)
    assert Settings(buffer_size=1024, max_sessions=1, kill_grace=0).kill_grace == 0


def test_unknown_settings_are_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        build_settings({"no_such_setting": 1})
    assert str(caught.value) == "no-such-setting: unknown setting"
    with pytest.raises(ConfigError) as caught:
        build_settings({"not a name!": 1})
    assert str(caught.value) == "config: unknown setting 'not a name!'"
    with pytest.raises(ConfigError) as caught:  # a known setting's error comes first
        build_settings({"zz_unknown": 1, "port": "x"})
    assert caught.value.setting == "port"
    with pytest.raises(TypeError):
        Settings(no_such_setting=1)  # type: ignore[call-arg]


def test_settings_are_immutable_hashable_and_replace_checks_again() -> None:
    settings = Settings(port="5000")
    assert settings == Settings(port=5000) and hash(settings) == hash(Settings(port=5000))
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.port = 1  # type: ignore[misc]
    assert dataclasses.replace(settings, heartbeat="2").heartbeat == 2.0
    with pytest.raises(ConfigError, match="heartbeat: must be greater than 0"):
        dataclasses.replace(settings, heartbeat=0)
