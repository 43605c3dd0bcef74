"""The JavaScript client as an npm package (web/packages/client, ``@tether/client``): ``npm pack``
makes a tarball that a scratch project installs offline, type-checks against and uses, with the
``ws`` package, to open a shell on a live tether server and attach to it again."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path, PurePosixPath

import pytest

from tests.support.server import start_server
from tether._version import __version__

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "web"
PACKAGE = WEB / "packages" / "client"
HERE = Path(__file__).parent
IMPORT = re.compile(r"""^\s*(?:import|export)\b[^'"]*?\bfrom\s*['"]([^'"]+)['"]""", re.MULTILINE)


def run(command: list[str], cwd: Path, env: dict[str, str], timeout: float = 60) -> str:
    """Run a command; fail with its output when it fails."""
    done = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def npm_environment(where: Path) -> dict[str, str]:
    """An empty npm cache of the test's own: nothing can come from an earlier download."""
    return {
        **os.environ,
        "npm_config_cache": str(where / "npm-cache"),
        "npm_config_audit": "false",
        "npm_config_fund": "false",
        "npm_config_update_notifier": "false",
    }


@pytest.fixture(scope="module")
def tarball(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``npm pack`` of the package (its ``prepack`` generates the close-code table and types)."""
    out = tmp_path_factory.mktemp("packed")
    env = npm_environment(out)
    run(["npm", "pack", "--silent", "--pack-destination", str(out)], PACKAGE, env, timeout=120)
    (packed,) = out.glob("*.tgz")
    return packed


def packed_files(tarball: Path) -> dict[str, str]:
    files = {}
    with tarfile.open(tarball) as archive:
        for member in archive.getmembers():
            stream = archive.extractfile(member)
            if stream is not None:
                files[member.name.removeprefix("package/")] = stream.read().decode()
    return files


def test_the_tarball_holds_its_modules_and_types_and_imports_nothing_outside(
    tarball: Path,
) -> None:
    files = packed_files(tarball)
    manifest = json.loads(files["package.json"])
    assert manifest["name"] == "@tether/client"
    assert manifest["version"] == __version__, "package.json and src/tether/_version.py differ"
    assert "dependencies" not in manifest
    assert manifest["peerDependenciesMeta"]["@xterm/xterm"]["optional"] is True
    for entry in manifest["exports"].values():
        if isinstance(entry, dict):
            assert entry["types"].removeprefix("./") in files
            assert entry["default"].removeprefix("./") in files
    assert {"src/index.js", "src/close-codes-table.js", "types/index.d.ts"} <= set(files)
    assert not [name for name in files if name.startswith(("scripts/", "tsconfig"))]
    # Nothing but its own modules: no xterm.js, no file of the repository outside the package.
    imports = [
        (n, t) for n, text in files.items() if n.endswith(".js") for t in IMPORT.findall(text)
    ]
    assert ("src/index.js", "./connection.js") in imports
    for name, target in imports:
        resolved = os.path.normpath(PurePosixPath(name).parent / target)
        assert target.startswith("./") and resolved in files, f"{name} imports {target}"


def install_consumer(tmp_path: Path, tarball: Path, env: dict[str, str]) -> Path:
    """A scratch project with the tarball, ``ws`` and xterm.js installed, without the registry."""
    project = tmp_path / "consumer"
    project.mkdir()
    (project / "package.json").write_text(
        json.dumps({"name": "consumer", "private": True, "type": "module"})
    )
    others = [WEB / "node_modules" / "ws", WEB / "node_modules" / "@xterm" / "xterm"]
    assert all(path.is_dir() for path in others), "web/node_modules is not there: ./dev setup"
    install = ["npm", "install", "--offline", "--no-save", str(tarball), *map(str, others)]
    run(install, project, env)
    for name in ("npm_consumer.mjs", "npm_consumer_check.ts"):
        shutil.copy(HERE / name, project / name)
    return project


def type_check(project: Path, env: dict[str, str]) -> None:
    """``tsc --strict`` over a TypeScript file that uses the installed package."""
    (project / "tsconfig.json").write_text(
        json.dumps(
            {
                "compilerOptions": {
                    "strict": True,
                    "noEmit": True,
                    "module": "nodenext",
                    "moduleResolution": "nodenext",
                    "target": "es2022",
                    "lib": ["es2022", "dom"],
                },
                "files": ["npm_consumer_check.ts"],
            }
        )
    )
    run([str(WEB / "node_modules" / ".bin" / "tsc"), "-p", "tsconfig.json"], project, env)


def test_the_installed_package_type_checks_and_drives_a_live_shell(
    tarball: Path, tmp_path: Path
) -> None:
    env = npm_environment(tmp_path)
    project = install_consumer(tmp_path, tarball, env)
    type_check(project, env)

    with start_server() as server:
        output = run(["node", "npm_consumer.mjs", server.ws_url, server.project], project, env)
    result = json.loads(output.strip().splitlines()[-1])
    assert result["created"] is True
    assert result["acknowledged"] == len("echo tether-$((6*7))\r")
    assert result["reattachedCreated"] is False
    assert result["reattachedSession"] == result["session"]
    assert result["connected"] is True
