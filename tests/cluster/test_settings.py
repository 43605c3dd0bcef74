"""The cluster flags of ``tether serve``: what is refused before listening (exit 2, one line)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tether.cli import main
from tether.errors import ConfigError
from tether.server.config import build_settings

REDIS = "redis://127.0.0.1:6379/0"


@pytest.mark.parametrize(
    ("layer", "setting"),
    [
        ({"redis_url": REDIS}, "auth"),  # the generated local token is one machine's
        ({"redis_url": REDIS, "auth": "local"}, "auth"),
        ({"redis_url": "http://x", "auth": "none"}, "redis-url"),
        (
            {"redis_url": REDIS, "auth": "token", "tokens_file": "tokens.toml"},
            "cluster-secret-env",
        ),
        (
            {
                "redis_url": REDIS,
                "auth": "none",
                "host": "0.0.0.0",
                "insecure_no_auth": True,
                "allowed_hosts": ["example.com"],
            },
            "advertise-url",
        ),
        ({"redis_url": REDIS, "auth": "none", "advertise_url": "ftp://x"}, "advertise-url"),
        (
            {"redis_url": REDIS, "auth": "none", "cluster_lease": 1, "cluster_renew_every": 1},
            "cluster-renew-every",
        ),
    ],
)
def test_refused_cluster_settings(layer: dict[str, object], setting: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        build_settings(layer, cwd=tmp_path)
    assert caught.value.setting == setting


def test_accepted_cluster_settings(tmp_path: Path) -> None:
    settings = build_settings(
        {"redis_url": REDIS, "auth": "none", "node_id": "a", "cluster_lease": "2"}, cwd=tmp_path
    )
    assert (settings.redis_url, settings.node_id, settings.cluster_lease) == (REDIS, "a", 2.0)
    wildcard = build_settings(
        {
            "redis_url": REDIS,
            "auth": "none",
            "host": "0.0.0.0",
            "insecure_no_auth": True,
            "allowed_hosts": ["example.com"],
            "advertise_url": "http://10.0.0.5:4001",
        },
        cwd=tmp_path,
    )
    assert wildcard.advertise_url == "http://10.0.0.5:4001"


def test_serve_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--redis-url", REDIS]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--redis-url needs a configured credential" in err


def test_the_secret_must_be_set(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens.toml"
    tokens.write_text('[[tokens]]\ntoken = "' + "t" * 32 + '"\nowner = "ann"\noperator = true\n')
    monkeypatch.delenv("TETHER_TEST_CLUSTER_SECRET", raising=False)
    argv = ["serve", "--redis-url", REDIS, "--auth", "token", "--tokens-file", str(tokens)]
    argv += ["--cluster-secret-env", "TETHER_TEST_CLUSTER_SECRET", "--allow-same-user-shells"]
    argv += ["--port", "0", "--log-file", "-", "--no-supervise"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "TETHER_TEST_CLUSTER_SECRET" in err
