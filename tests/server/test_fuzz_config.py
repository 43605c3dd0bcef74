"""Property fuzzing of configuration: any TOML file, environment or flag values either give valid
settings or one ConfigError naming a setting (the CLI's one line and exit 2) — never a traceback."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tether.errors import ConfigError
from tether.server.auth import is_valid_owner, load_tokens
from tether.server.config import FIELDS, Settings, build_settings, from_environment, load_toml
from tether.server.hostcheck import is_loopback_host

FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
WORKDIR = Path(tempfile.mkdtemp(prefix="tether-fuzz-config-"))
(WORKDIR / "p").mkdir(exist_ok=True)

SETTING_NAMES = sorted(FIELDS)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**65), max_value=2**65),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(
        ["0.0.0.0", "127.0.0.1", "::1", "token", "jwt", "none", "-", "p=p", "p", "*", "nobody"]
    ),
)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=3),
    st.dictionaries(st.text(max_size=5), scalars, max_size=2),
)
layers = st.dictionaries(st.sampled_from(SETTING_NAMES) | st.text(max_size=12), values, max_size=6)


def _one_line(error: ConfigError) -> None:
    text = f"tether: invalid configuration: {error}"
    assert "\n" not in text and len(text) < 400
    assert error.setting and error.message


@FUZZ
@given(layers, layers)
def test_any_layers_give_settings_or_one_config_error(first: dict, second: dict) -> None:
    try:
        result = build_settings(first, second, cwd=WORKDIR)
    except ConfigError as error:
        _one_line(error)
        return
    assert isinstance(result, Settings)
    # Whatever got through, the security rules hold.
    if result.auth == "none" and not is_loopback_host(result.host):
        assert result.insecure_no_auth
    if result.auth == "token":
        assert result.tokens_file is not None
    if result.auth == "jwt":
        assert (result.jwt_secret_env is None) != (result.jwt_public_key is None)


@FUZZ
@given(
    st.dictionaries(
        st.text(max_size=30).map(lambda s: "TETHER_" + s.upper()), st.text(max_size=30), max_size=6
    )
)
def test_any_environment_gives_settings_or_one_config_error(environ: dict[str, str]) -> None:
    raw = from_environment(environ)
    assert set(raw) <= set(FIELDS)
    try:
        build_settings(raw, cwd=WORKDIR)
    except ConfigError as error:
        _one_line(error)


@FUZZ
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode)))
def test_any_config_file_loads_or_is_one_config_error(content: bytes) -> None:
    path = WORKDIR / "fuzz.toml"
    path.write_bytes(content)
    try:
        data = load_toml(path)
        build_settings(data, cwd=WORKDIR)
    except ConfigError as error:
        _one_line(error)


@st.composite
def token_entries(draw: st.DrawFn) -> dict[str, object]:
    # Mostly well-formed entries, some with a wrong part: both paths get exercised.
    source = draw(st.sampled_from(["token", "token_env", "sha256"]))
    good = {"token": "tok-0123456789abcdef", "token_env": "SET", "sha256": "f" * 64}[source]
    well_formed = draw(st.integers(0, 4)) > 0
    entry: dict[str, object] = {
        "owner": draw(st.sampled_from(["alice", "bob"]))
        if well_formed
        else draw(st.sampled_from(["", "anonymous", "a\tb"]) | scalars),
        source: good
        if draw(st.integers(0, 4))
        else draw(st.sampled_from(["UNSET", "short"]) | scalars),
    }
    optional = {
        "projects": st.sampled_from(["*", ["p"], [], ["q"], "p", [1]]),
        "operator": st.sampled_from([True, False, "yes", 1]),
        "sha256": st.just("f" * 64),
        "x": scalars,
    }
    for key, strategy in optional.items():
        if draw(st.integers(0, 3)) == 0:
            entry[key] = draw(strategy)
    return entry


token_tables = st.lists(token_entries(), max_size=3)


@FUZZ
@given(st.one_of(st.binary(max_size=200), token_tables.map(lambda t: {"tokens": t})))
def test_any_tokens_file_loads_or_is_one_config_error(content: bytes | dict) -> None:
    path = WORKDIR / "tokens.toml"
    if isinstance(content, dict):
        path.write_text(_toml(content), encoding="utf-8")
    else:
        path.write_bytes(content)
    try:
        entries = load_tokens(path, frozenset({"p"}), {"SET": "x" * 20})
    except ConfigError as error:
        _one_line(error)
        assert error.setting == "tokens-file"
        return
    for entry in entries:
        assert len(entry.digest) == 32 and is_valid_owner(entry.identity.owner)


def _toml(data: dict) -> str:
    # A small TOML writer for the generated tables: only what the strategies produce.
    lines = []
    for table in data["tokens"]:
        lines.append("[[tokens]]")
        lines += [
            f"{key} = {_toml_value(value)}" for key, value in table.items() if value is not None
        ]
    return "\n".join(lines) + "\n"


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value != value:
        return "nan"
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, int) and not -(2**63) <= value < 2**63:
        return json.dumps(str(value))
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value if v is not None) + "]"
    if isinstance(value, dict):
        return (
            "{"
            + ", ".join(
                f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items() if v is not None
            )
            + "}"
        )
    return json.dumps(value) if isinstance(value, str) else repr(value)
