"""No import cycles among the project's own modules: a module that needs a piece another one also needs takes it
from a module below both (issue 25), never from the other. Every import counts, a function's lazy one too (an
import deferred to run time is still a cycle in the design); imports only for type checkers do not."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

from tests.photos import REPO

PACKAGES = ("cloud", "edge_client")


def _module_files() -> dict[str, Path]:
    files = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


class _Imports(ast.NodeVisitor):
    """The project modules `module` imports anywhere in its file, outside `if TYPE_CHECKING:` blocks."""

    def __init__(self, module: str, is_package: bool, modules: set[str]) -> None:
        self.module, self.modules, self.found = module, modules, set[str]()
        self.package = module if is_package else module.rpartition(".")[0]

    def visit_If(self, node: ast.If) -> None:
        if not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            anchor = self.package.split(".")[: len(self.package.split(".")) - node.level + 1]
            base = ".".join([*anchor, base] if base else anchor)
        for alias in node.names:
            self._add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in self.modules else base)

    def _add(self, name: str) -> None:
        while name and name not in self.modules:  # `cloud.functions.aws.client` -> the module cloud.functions.aws
            name = name.rpartition(".")[0]
        if name and name != self.module and not self.module.startswith(name + "."):  # a package's own parents
            self.found.add(name)


def import_graph(files: dict[str, Path]) -> dict[str, set[str]]:
    graph = {}
    for module, path in files.items():
        visitor = _Imports(module, path.name == "__init__.py", set(files))
        visitor.visit(ast.parse(path.read_text(), filename=str(path)))
        graph[module] = visitor.found
    return graph


def test_the_project_has_no_import_cycle() -> None:
    graph = import_graph(_module_files())
    assert len(graph) > 50 and sum(map(len, graph.values())) > 100  # the whole project was read
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        pytest.fail("import cycle: " + " -> ".join(exc.args[1]))


def test_a_lazy_import_back_is_a_cycle(tmp_path: Path) -> None:
    # GIVEN the shape the detection doors had: ingest imports the handler, the handler imports ingest in a function
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "handler.py").write_text("def handle():\n    from pkg import ingest\n")
    (tmp_path / "pkg" / "ingest.py").write_text("from pkg.handler import handle\n")
    (tmp_path / "pkg" / "types.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                               "    from pkg import ingest\n")
    files = {"pkg": tmp_path / "pkg" / "__init__.py",
             **{f"pkg.{n}": tmp_path / "pkg" / f"{n}.py" for n in ("handler", "ingest", "types")}}
    graph = import_graph(files)
    assert graph["pkg.handler"] == {"pkg.ingest"} and graph["pkg.ingest"] == {"pkg.handler"}
    assert graph["pkg.types"] == set()  # for type checkers only
    with pytest.raises(graphlib.CycleError):
        graphlib.TopologicalSorter(graph).prepare()


# Where code runs, and what each place may import (docs/architecture.md, "Where the code runs"): the Lambda image
# holds cloud/functions/ alone, so nothing there may reach up into the operator's tools, the emulator, the
# benchmarks or the edge; the edge takes only the wire formats.
ALLOWED = {
    "cloud.functions": ("cloud.functions",),
    # the faces library's page guards itself as the edge's status page does (Host check, loopback): one copy
    "cloud.operator": ("cloud.operator", "cloud.functions", "edge_client.access"),
    "cloud.emulator": ("cloud.emulator", "cloud.operator", "cloud.functions"),
    "cloud.bench": ("cloud.bench", "cloud.emulator", "cloud.operator", "cloud.functions", "edge_client"),
    "edge_client": ("edge_client", "cloud.functions.contracts"),
}


def _folder(module: str) -> str | None:
    return next((folder for folder in ALLOWED if module == folder or module.startswith(folder + ".")), None)


def layering_violations(graph: dict[str, set[str]]) -> list[str]:
    wrong = []
    for module, imported in graph.items():
        folder = _folder(module)
        for name in imported:
            allowed = ALLOWED[folder] if folder else ()
            if name != "cloud" and folder and not any(name == ok or name.startswith(ok + ".") for ok in allowed):
                wrong.append(f"{module} imports {name}")
    return sorted(wrong)


def test_each_folder_imports_only_what_runs_beside_it() -> None:
    files = _module_files()
    assert {_folder(module) for module in files} == {*ALLOWED, None}  # every folder exists; None: cloud/__init__
    assert [module for module in files if _folder(module) is None] == ["cloud"]
    assert layering_violations(import_graph(files)) == []


def test_a_function_importing_an_operator_tool_is_a_violation() -> None:
    # the shape detection had before device_identity.py: the handler took device_of_arn from the `facepipe device` tool
    graph = {"cloud.functions.detection.handler": {"cloud.operator.devices", "cloud.functions.contracts"},
             "edge_client.daemon": {"cloud.functions.contracts", "cloud.functions.settings"}}
    assert layering_violations(graph) == ["cloud.functions.detection.handler imports cloud.operator.devices",
                                          "edge_client.daemon imports cloud.functions.settings"]
