"""No import cycles in the package, read from the source (nothing is imported to check).

Two graphs, both drawn from every module's AST, must be acyclic:

- what runs at import time: the imports at module level (``if TYPE_CHECKING:`` blocks left
  out, they never run), each with the packages Python initialises on the way (importing
  ``a.b.c`` runs ``a/__init__.py`` and ``a/b/__init__.py`` first). A cycle here is the one
  that breaks with "partially initialised module" depending on which module is imported first.
- what depends on what: every import statement, wherever it stands (inside functions and
  under ``TYPE_CHECKING`` too). An import moved into a function or behind ``TYPE_CHECKING``
  only hides a cycle from the interpreter; the modules still need each other, so it counts.
  Parent packages are not implied here: that is an import-time effect, and the package root's
  lazy ``__getattr__`` (Dagster's entry point) would otherwise tie every module to
  ``definitions``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

import medallion_platform

PACKAGE_DIR = Path(medallion_platform.__file__).resolve().parent
PACKAGE = PACKAGE_DIR.name

Graph = dict[str, set[str]]


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules(root: Path = PACKAGE_DIR) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(
    body: list[ast.stmt], at_import_time: bool
) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement under ``body``, with whether it runs when the module is
    imported (module level, class bodies, ``if``/``try`` blocks; not functions or
    ``if TYPE_CHECKING``)."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, at_import_time
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            yield from _imports(node.body, False)
        elif isinstance(node, ast.If) and _is_type_checking(node):
            yield from _imports(node.body, False)
            yield from _imports(node.orelse, at_import_time)
        else:
            for field in ("body", "orelse", "finalbody", "handlers", "cases"):
                children = getattr(node, field, None)
                if isinstance(children, list):
                    yield from _imports(
                        [c for c in children if isinstance(c, ast.AST)], at_import_time
                    )


def _targets(
    node: ast.Import | ast.ImportFrom, importer: str, is_package: bool, modules: dict[str, Path]
) -> Iterator[str]:
    """The package modules an import statement loads (the most specific one that exists)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        if node.level:
            base = importer.split(".")
            base = base[: len(base) - node.level + (1 if is_package else 0)]
            prefix = ".".join([*base, *([node.module] if node.module else [])])
        else:
            prefix = node.module or ""
        names = [f"{prefix}.{alias.name}" for alias in node.names]
        names = [n if n in modules else prefix for n in names]
    for name in names:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        if name.split(".")[0] == PACKAGE and name:
            yield name


def import_graphs(modules: dict[str, Path]) -> tuple[Graph, Graph]:
    """(what runs at import time, what depends on what): module -> the modules it imports."""
    runtime: Graph = {name: set() for name in modules}
    design: Graph = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node, at_import_time in _imports(tree.body, True):
            for target in _targets(node, name, path.name == "__init__.py", modules):
                if target != name:
                    design[name].add(target)
                if at_import_time:
                    parts = target.split(".")
                    for i in range(1, len(parts) + 1):  # the packages on the way, then it
                        runtime[name].add(".".join(parts[:i]))
                    runtime[name].discard(name)
    # A module's own packages run before it, and are not an import of it.
    for name in runtime:
        parts = name.split(".")
        runtime[name] -= {".".join(parts[:i]) for i in range(1, len(parts))}
    return runtime, design


def cycle(graph: Graph) -> list[str] | None:
    """One import cycle of ``graph`` (``a -> b -> a``), or None."""
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as exc:
        return list(reversed(exc.args[1]))  # graphlib lists it dependent-last
    return None


@pytest.mark.parametrize("kind", ["at import time", "between modules"])
def test_the_package_has_no_import_cycle(kind: str) -> None:
    runtime, design = import_graphs(package_modules())
    found = cycle(runtime if kind == "at import time" else design)
    assert found is None, f"import cycle {kind}: {' -> '.join(found or [])}"


def test_the_reader_finds_a_cycle_hidden_in_a_function_or_behind_a_package(
    tmp_path: Path,
) -> None:
    """The check itself: it sees an import inside a function, a ``TYPE_CHECKING`` one, and
    the ``__init__`` that a leaf import drags in (the shape this package once had)."""
    root = tmp_path / PACKAGE
    (root / "config").mkdir(parents=True)
    (root / "ml").mkdir()
    (root / "__init__.py").write_text("")
    (root / "ml" / "__init__.py").write_text("")
    (root / "config" / "errors.py").write_text("class ConfigError(ValueError): ...\n")
    (root / "config" / "__init__.py").write_text(f"from {PACKAGE}.ml.spec import load\n")
    spec = root / "ml" / "spec.py"

    spec.write_text(f"def load():\n    from {PACKAGE}.config import ConfigError\n")
    runtime, design = import_graphs(package_modules(root))
    assert cycle(runtime) is None
    assert cycle(design) == [f"{PACKAGE}.config", f"{PACKAGE}.ml.spec", f"{PACKAGE}.config"]

    spec.write_text(
        "from typing import TYPE_CHECKING\n"
        f"if TYPE_CHECKING:\n    from {PACKAGE}.config import ConfigError\n"
    )
    runtime, design = import_graphs(package_modules(root))
    assert cycle(runtime) is None and cycle(design) is not None

    # A leaf inside the package that imports everything still runs that package first.
    spec.write_text(f"from {PACKAGE}.config.errors import ConfigError\n")
    runtime, design = import_graphs(package_modules(root))
    assert cycle(design) is None
    assert cycle(runtime) == [f"{PACKAGE}.config", f"{PACKAGE}.ml.spec", f"{PACKAGE}.config"]

    (root / "config" / "__init__.py").write_text("")
    assert cycle(import_graphs(package_modules(root))[0]) is None


def test_config_loading_is_a_leaf() -> None:
    """Every spec module reads its YAML and raises ``ConfigError`` through ``config_files``;
    it imports nothing of the package, so none of them can close a cycle through it."""
    design = import_graphs(package_modules())[1]
    assert design[f"{PACKAGE}.config_files"] == set()
    readers = {name for name, targets in design.items() if f"{PACKAGE}.config_files" in targets}
    assert {f"{PACKAGE}.config", f"{PACKAGE}.ml.spec", f"{PACKAGE}.reverse_etl.spec"} <= readers
