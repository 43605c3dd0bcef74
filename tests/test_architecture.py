"""The package's shape: no import cycle between any two modules, and the layers import-linter keeps.

import-linter (``./dev lint``) checks the layering contracts in ``pyproject.toml``; this test adds
what a layers contract does not see: a cycle between two modules of one layer (such as a web
front and the core importing each other), including imports made only for type checking.
"""

from __future__ import annotations

import subprocess
import sys

import grimp

_PACKAGE = "tether"


def _strongly_connected(graph: grimp.ImportGraph) -> list[list[str]]:
    """Tarjan's algorithm over the module graph: every group of modules that import each other."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return groups


def _graph() -> grimp.ImportGraph:
    return grimp.build_graph(_PACKAGE, include_external_packages=True, cache_dir=None)


def test_no_module_imports_itself_through_others() -> None:
    assert _strongly_connected(_graph()) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for name in ("pkg.a", "pkg.b", "pkg.c"):
        graph.add_module(name)
    graph.add_import(importer="pkg.a", imported="pkg.b")
    graph.add_import(importer="pkg.b", imported="pkg.a")
    graph.add_import(importer="pkg.b", imported="pkg.c")
    assert _strongly_connected(graph) == [["pkg.a", "pkg.b"]]


def test_the_tree_shows_the_layers() -> None:
    graph = _graph()
    layers = {m.split(".")[1] for m in graph.modules if m.startswith("tether.") and m.count(".")}
    assert {"protocol", "server", "client", "tools", "cli"} <= layers
    core = {m for m in graph.modules if m.startswith("tether.server.") and "aiohttp_front" not in m}
    importers_of_aiohttp = {
        m for m in core if "aiohttp" in graph.find_modules_directly_imported_by(m)
    }
    assert importers_of_aiohttp == set()


def test_a_server_outside_a_cluster_does_not_import_redis() -> None:
    # Start-up time and memory, and Python 3.11.0-3.11.2, where redis-py needs a package
    # (async-timeout) that an install made with a newer Python lacks.
    code = (
        "import sys, tether.cli.serve, tether.server.aiohttp_front.app;"
        "sys.exit('redis' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
