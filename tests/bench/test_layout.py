"""The house rules of ``src/``, read from the source with ``ast`` (nothing is imported to check).

* the library (``bytes_handoff``) never imports the bench package;
* ``bytes_handoff_bench`` modules import each other without a cycle (imports
  inside functions count too: they only move a cycle to run time);
* ``bytes_handoff_bench.tools`` never imports ``bytes_handoff_bench.harness``,
  nor the harness the tools: the tools start the harness as a program; the
  shared top-level modules import neither (``__main__`` is the harness's entry);
* ``bytes_handoff_bench.soak`` (the fault soak) reuses the harness in-process
  but never imports the tools, and neither the harness nor the tools import it
  (nor the shared modules);
* ``names`` imports nothing from the project;
* the bench package uses only the library's public API: no ``_``-module, no
  ``_``-name, and every imported name is in its module's ``__all__``.

Each rule is also run on a small tree that breaks it, so a rule that stopped
finding anything would fail here too.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
LIBRARY = "bytes_handoff"
BENCH = "bytes_handoff_bench"


@dataclass(frozen=True)
class Import:
    """One imported target: ``module`` (absolute); ``name`` for ``from module import name``."""

    source: str  # the importing module
    module: str
    name: str | None
    line: int


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules_of(root: Path, packages: tuple[str, ...] = (LIBRARY, BENCH)) -> dict[str, Path]:
    """Every module of ``packages`` below ``root``: dotted name -> file."""
    found: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            found[module_name(root, path)] = path
    return found


def imports_of(name: str, path: Path) -> Iterator[Import]:
    """Every import in the file, at any depth (functions, ``TYPE_CHECKING`` blocks)."""
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(name, alias.name, None, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                if not is_package:
                    base.pop()
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            for alias in node.names:
                yield Import(name, module, alias.name, node.lineno)


def in_package(module: str, package: str) -> bool:
    return module == package or module.startswith(f"{package}.")


def target(imp: Import, modules: dict[str, Path]) -> str:
    """The project module an import loads: ``from pkg import mod`` loads ``pkg.mod``."""
    if imp.name is not None and f"{imp.module}.{imp.name}" in modules:
        return f"{imp.module}.{imp.name}"
    return imp.module


def all_imports(root: Path) -> tuple[dict[str, Path], list[Import]]:
    modules = modules_of(root)
    return modules, [imp for name, path in modules.items() for imp in imports_of(name, path)]


# -- the rules: each returns its violations, one line each -------------------------------------


def cycles(root: Path) -> list[str]:
    """Import cycles among the bench modules (as ``a -> b -> a``)."""
    modules, imports = all_imports(root)
    graph: dict[str, set[str]] = {m: set() for m in modules if in_package(m, BENCH)}
    for imp in imports:
        to = target(imp, modules)
        if imp.source in graph and to in graph and to != imp.source:
            graph[imp.source].add(to)
    found: list[str] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                found.append(" -> ".join([*path[path.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def crossings(root: Path) -> list[str]:
    """Imports across the walls: library -> bench, tools <-> harness, soak -> tools, harness or
    tools -> soak, shared -> any group, names ->."""
    modules, imports = all_imports(root)
    harness, tools, soak = f"{BENCH}.harness", f"{BENCH}.tools", f"{BENCH}.soak"
    groups = (harness, tools, soak)
    found: list[str] = []
    for imp in imports:
        src, to = imp.source, target(imp, modules)
        where = f"{src}:{imp.line} imports {to}"
        if in_package(src, LIBRARY) and in_package(to, BENCH):
            found.append(f"{where}: the library never imports the bench package")
        elif in_package(src, tools) and in_package(to, harness):
            found.append(f"{where}: the tools start the harness as a program, never import it")
        elif in_package(src, harness) and in_package(to, tools):
            found.append(f"{where}: the harness never imports the tools")
        elif in_package(src, soak) and in_package(to, tools):
            found.append(f"{where}: the soak never imports the tools")
        elif (in_package(src, harness) or in_package(src, tools)) and in_package(to, soak):
            found.append(f"{where}: only the soak imports the soak (it runs as a program)")
        elif src == f"{BENCH}.names" and (in_package(to, BENCH) or in_package(to, LIBRARY)):
            found.append(f"{where}: names imports nothing from the project")
        elif (
            in_package(src, BENCH)
            and not any(in_package(src, group) for group in groups)
            and src != f"{BENCH}.__main__"
            and any(in_package(to, group) for group in groups)
        ):
            found.append(
                f"{where}: the shared modules import neither the harness, the tools nor the soak"
            )
    return found


def private_uses(root: Path) -> list[str]:
    """Uses of the library by the bench package beyond its public API."""
    _modules, imports = all_imports(root)
    found: list[str] = []
    for imp in imports:
        if not in_package(imp.source, BENCH) or not in_package(imp.module, LIBRARY):
            continue
        where = f"{imp.source}:{imp.line}: {imp.module}" + (f".{imp.name}" if imp.name else "")
        if any(part.startswith("_") for part in imp.module.split(".")):
            found.append(f"{where}: a private module")
            continue
        if imp.name is None or imp.name == "*":
            continue
        if imp.name.startswith("_") and not (imp.name.startswith("__") and imp.name.endswith("__")):
            found.append(f"{where}: a private name")
            continue
        public = getattr(importlib.import_module(imp.module), "__all__", ())
        if imp.name not in public and imp.name != "__version__":
            found.append(f"{where}: not in {imp.module}.__all__")
    for name, path in modules_of(root, (BENCH,)).items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == LIBRARY
                and node.attr.startswith("_")
                and not node.attr.endswith("__")
            ):
                found.append(f"{name}:{node.lineno}: {LIBRARY}.{node.attr}: a private name")
    return found


# -- the source tree keeps them ---------------------------------------------------------------


def test_bench_modules_import_each_other_without_a_cycle() -> None:
    assert cycles(SRC) == []


def test_no_import_crosses_a_wall() -> None:
    assert crossings(SRC) == []


def test_the_bench_package_uses_only_the_public_api_of_the_library() -> None:
    assert private_uses(SRC) == []


def test_the_checks_see_every_module() -> None:
    modules = modules_of(SRC)
    for name in (
        f"{BENCH}.names",
        f"{BENCH}.cli_common",
        f"{BENCH}.harness.config",
        f"{BENCH}.harness.cli",
        f"{BENCH}.tools.wrapper",
        f"{BENCH}.soak.cli",
        f"{BENCH}.soak.__main__",
        f"{LIBRARY}.adapters",
    ):
        assert name in modules, name


def test_the_registry_is_keyed_by_the_names_in_run_order() -> None:
    from bytes_handoff_bench.harness.implementations import IMPLEMENTATIONS
    from bytes_handoff_bench.names import Implementation

    assert list(IMPLEMENTATIONS)[: len(Implementation)] == list(Implementation)


# -- and each rule finds what breaks it -------------------------------------------------------


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for relative, text in {
        f"{LIBRARY}/__init__.py": "",
        f"{BENCH}/__init__.py": "",
        f"{BENCH}/harness/__init__.py": "",
        f"{BENCH}/tools/__init__.py": "",
        f"{BENCH}/soak/__init__.py": "",
        **files,
    }.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.mark.parametrize(
    ("files", "needle"),
    [
        (
            {
                f"{BENCH}/harness/config.py": "def f():\n    from .implementations import X\n",
                f"{BENCH}/harness/implementations.py": "from .config import C\n",
            },
            "harness.config -> bytes_handoff_bench.harness.implementations -> ",
        ),
        (
            {
                f"{BENCH}/a.py": "from bytes_handoff_bench import b\n",
                f"{BENCH}/b.py": "import bytes_handoff_bench.a\n",
            },
            "bytes_handoff_bench.a -> bytes_handoff_bench.b -> bytes_handoff_bench.a",
        ),
    ],
    ids=["function-level", "module-level"],
)
def test_a_cycle_is_found(tmp_path: Path, files: dict[str, str], needle: str) -> None:
    found = cycles(write_tree(tmp_path, files))
    assert any(needle in line for line in found), found


@pytest.mark.parametrize(
    ("files", "needle"),
    [
        ({f"{LIBRARY}/core.py": "import bytes_handoff_bench.names\n"}, "the library never"),
        (
            {
                f"{BENCH}/tools/t.py": "def f():\n    from ..harness import config\n",
                f"{BENCH}/harness/config.py": "",
            },
            "never import it",
        ),
        (
            {
                f"{BENCH}/harness/h.py": "from bytes_handoff_bench.tools.t import x\n",
                f"{BENCH}/tools/t.py": "",
            },
            "the harness never imports the tools",
        ),
        ({f"{BENCH}/names.py": "from .errors import E\n"}, "names imports nothing"),
        ({f"{BENCH}/names.py": "import bytes_handoff\n"}, "names imports nothing"),
        (
            {
                f"{BENCH}/extras.py": "from .harness.config import C\n",
                f"{BENCH}/harness/config.py": "",
            },
            "the shared modules import neither",
        ),
        (
            {
                f"{BENCH}/soak/cli.py": "from ..tools.report import x\n",
                f"{BENCH}/tools/report.py": "",
            },
            "the soak never imports the tools",
        ),
        (
            {
                f"{BENCH}/harness/cli.py": "def f():\n    from ..soak import config\n",
                f"{BENCH}/soak/config.py": "",
            },
            "only the soak imports the soak",
        ),
        (
            {
                f"{BENCH}/tools/t.py": "import bytes_handoff_bench.soak.cli\n",
                f"{BENCH}/soak/cli.py": "",
            },
            "only the soak imports the soak",
        ),
        (
            {f"{BENCH}/extras.py": "from .soak import cli\n", f"{BENCH}/soak/cli.py": ""},
            "the shared modules import neither",
        ),
    ],
    ids=[
        "library",
        "tools-harness",
        "harness-tools",
        "names-bench",
        "names-library",
        "shared",
        "soak-tools",
        "harness-soak",
        "tools-soak",
        "shared-soak",
    ],
)
def test_a_crossing_is_found(tmp_path: Path, files: dict[str, str], needle: str) -> None:
    found = crossings(write_tree(tmp_path, files))
    assert any(needle in line for line in found), found


@pytest.mark.parametrize(
    ("source", "needle"),
    [
        ("from bytes_handoff._types import BytesLike\n", "a private module"),
        (
            "import bytes_handoff.read_buffer as rb\nfrom bytes_handoff import _x\n",
            "a private name",
        ),
        ("from bytes_handoff.adapters import _wait_ready\n", "a private name"),
        (
            "from bytes_handoff.adapters import MAX_IOVECS\n",
            "not in bytes_handoff.adapters.__all__",
        ),
        ("import bytes_handoff\nx = bytes_handoff._types\n", "a private name"),
    ],
)
def test_a_private_use_is_found(tmp_path: Path, source: str, needle: str) -> None:
    found = private_uses(write_tree(tmp_path, {f"{BENCH}/harness/h.py": source}))
    assert any(needle in line for line in found), found
