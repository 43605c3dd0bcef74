"""Build hooks of the sdist and the wheel (all metadata is in pyproject.toml).

Both carry the built web page, ``src/tether/web/static/`` (made by ``cd web && npm run build``,
gitignored), so that a wheel built from the sdist, and any installed tether, serves the page
without Node. Building either without it stops with one line that says how to build it. An
editable install (``pip install -e .``, as ``./dev setup`` does before it builds the page) is
not checked: it serves the page straight from the source tree.
"""

from __future__ import annotations

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist
from setuptools.errors import SetupError

PAGE = Path(__file__).resolve().parent / "src" / "tether" / "web" / "static"
PAGE_FILES = ("index.html", "app.js", "app.css", "tether-client.js")


def require_page() -> None:
    missing = [name for name in PAGE_FILES if not (PAGE / name).is_file()]
    if missing:
        raise SetupError(
            f"the web page is not built (src/tether/web/static/ lacks {', '.join(missing)}): "
            "run `./dev setup`, or `cd web && npm install && npm run build`, then build again"
        )


class BuildPyWithPage(build_py):
    def run(self) -> None:
        if not self.editable_mode:
            require_page()
        super().run()


class SdistWithPage(sdist):
    def run(self) -> None:
        require_page()
        super().run()


setup(cmdclass={"build_py": BuildPyWithPage, "sdist": SdistWithPage})
