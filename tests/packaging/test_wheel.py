"""The wheel carries the page: ``python -m build`` makes an sdist and, from it, a wheel; installed
alone into a fresh venv, its ``tether serve`` serves ``/`` and every asset the page references,
with no ``node`` on the PATH. A tree whose page is not built does not build, and says why."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import tarfile
import urllib.request
import zipfile
from email.parser import HeaderParser
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin

import pytest

from tests.support.server import ServerProcess
from tether._version import __version__

ROOT = Path(__file__).resolve().parents[2]
PAGE = ("index.html", "app.js", "app.css", "tether-client.js")
# What browsers accept for each kind (a module script needs a JavaScript MIME type).
TYPES = {
    ".js": {"text/javascript", "application/javascript"},
    ".css": {"text/css"},
    ".html": {"text/html"},
}


def run(command: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def check_run(command: list[str], cwd: Path | None = None) -> None:
    done = run(command, cwd)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}"


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist and the wheel built from it, as a release would make them (no network)."""
    out = tmp_path_factory.mktemp("dist")
    check_run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)])
    return out


class References(HTMLParser):
    """The URLs a page loads: scripts, stylesheets, icons, images."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        url = found.get("src") if tag in ("script", "img") else None
        if tag == "link" and found.get("rel") in ("stylesheet", "icon", "modulepreload"):
            url = found.get("href")
        if url and not url.startswith("data:"):
            self.urls.append(url)


def fetch(url: str) -> tuple[int, str, bytes]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.headers.get("Content-Type", ""), response.read()


def test_the_sdist_and_the_wheel_carry_the_page_and_the_metadata(dist: Path) -> None:
    (sdist,) = dist.glob("*.tar.gz")
    (wheel,) = dist.glob("*.whl")
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert {f"src/tether/web/static/{name}" for name in PAGE} <= names
    assert {"CHANGELOG.md", "web/build.mjs", "web/packages/client/src/index.js"} <= names
    assert not [name for name in names if "node_modules" in name]

    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = HeaderParser().parsestr(
            archive.read(f"tether-{__version__}.dist-info/METADATA").decode()
        )
    assert {f"tether/web/static/{name}" for name in PAGE} <= names
    assert "tether/protocol/close_codes.json" in names
    assert metadata["Version"] == __version__
    assert metadata["License-Expression"] == "MIT"
    urls = dict(value.split(", ", 1) for value in metadata.get_all("Project-URL", []))
    assert {"Documentation", "Changelog"} <= set(urls)


def fresh_venv(path: Path, wheel: Path) -> Path:
    """A venv holding only the wheel; its dependencies come from this venv's site-packages
    (a .pth line), whose editable tether is not active there (.pth files of an added path are
    not read), so tether can only come from the wheel."""
    check_run([sys.executable, "-m", "venv", "--without-pip", str(path)])
    python = path / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet"]
    check_run([*pip, "--no-deps", "--no-index", str(wheel)])
    site = run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"])
    (Path(site.stdout.strip()) / "dependencies.pth").write_text(sysconfig.get_path("purelib"))
    return path


def test_an_installed_wheel_serves_the_page_without_node(dist: Path, tmp_path: Path) -> None:
    (wheel,) = dist.glob("*.whl")
    venv = fresh_venv(tmp_path / "venv", wheel)
    where = run([str(venv / "bin" / "python"), "-c", "import tether; print(tether.__file__)"])
    assert Path(where.stdout.strip()).is_relative_to(venv), where
    path = str(venv / "bin")
    assert shutil.which("node", path=path) is None

    server = ServerProcess(program=(str(venv / "bin" / "tether"),), env={"PATH": path})
    with server.start():
        status, content_type, body = fetch(server.base_url + "/")
        assert status == 200 and content_type.startswith("text/html")
        parser = References()
        parser.feed(body.decode())
        urls = [*parser.urls, "static/tether-client.js"]  # the client module, for other pages
        assert {"static/app.js", "static/app.css"} <= set(parser.urls)
        for url in urls:
            status, content_type, body = fetch(urljoin(server.base_url + "/", url))
            assert status == 200, url
            assert content_type.split(";")[0] in TYPES[Path(url).suffix], (url, content_type)
            assert body, url


def test_a_tree_without_the_built_page_does_not_build(dist: Path, tmp_path: Path) -> None:
    (sdist,) = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        archive.extractall(tmp_path, filter="data")
    (tree,) = tmp_path.glob("tether-*")
    shutil.rmtree(tree / "src" / "tether" / "web" / "static")
    built = run([sys.executable, "-m", "build", "--no-isolation", "--wheel", str(tree)])
    assert built.returncode != 0
    assert "error: the web page is not built" in built.stdout + built.stderr
    assert not list((tree / "dist").glob("*.whl"))
