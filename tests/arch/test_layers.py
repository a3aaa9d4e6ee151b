"""The layering rule: no module imports a higher layer, and no imports form a cycle.

Every module under ``src/runarchive`` is parsed with ``ast`` (nothing is imported):
every import counts, at module level, inside a function, or under ``TYPE_CHECKING``.
The layers are ``runarchive._layers.LAYERS``; the package face
(``runarchive/__init__.py``) is exempt as an importer, and no module may import it.

Importing ``a.b.c`` also runs ``a/b/__init__.py``: for a module outside ``a.b`` that is
an edge to the package ``a.b`` too (inside it, the package is already being imported).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

from runarchive._layers import LAYERS

SRC = Path(__file__).resolve().parents[2] / "src"

Layers = Iterable[tuple[str, Iterable[str]]]


def modules(src: Path, package: str) -> dict[str, Path]:
    """Dotted name -> file of every module of ``package`` under ``src``."""
    found = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The modules of ``known`` that ``name`` (at ``path``) imports, by any statement."""

    def resolve(dotted: str) -> str | None:
        while dotted and dotted not in known:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    here = name if _is_package(path) else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets.update(t for a in node.names if (t := resolve(a.name)))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the importer's package up
                up = here.split(".")[: len(here.split(".")) - (node.level - 1)]
                base = ".".join([*up, base] if base else up)
            for alias in node.names:
                full = f"{base}.{alias.name}"  # ``from pkg import module``
                target = full if full in known else resolve(base)
                if target:
                    targets.add(target)
    for target in list(targets):  # the packages a target's import runs on the way
        parts = target.split(".")
        for n in range(2, len(parts)):
            parent = ".".join(parts[:n])
            if parent in known and not (name == parent or name.startswith(parent + ".")):
                targets.add(parent)
    targets.discard(name)
    return targets


def graph(src: Path, package: str) -> dict[str, set[str]]:
    """Module -> the modules it imports, for every module of ``package``."""
    known = modules(src, package)
    return {name: imports_of(name, path, known) for name, path in known.items()}


def layer_violations(edges: dict[str, set[str]], package: str, layers: Layers) -> list[str]:
    """Each import of a higher layer (or of the package face), and each module the
    table does not place, as a sentence."""
    number = {top: n for n, (_, tops) in enumerate(layers) for top in tops}
    names = [layer for layer, _ in layers]

    def layer(module: str) -> int | None:
        parts = module.split(".")
        return number.get(parts[1]) if len(parts) > 1 else None

    problems = []
    for module, targets in sorted(edges.items()):
        if module == package:
            continue  # the face re-exports the public API from every layer
        mine = layer(module)
        if mine is None:
            problems.append(f"{module} is in no layer: add it to runarchive._layers.LAYERS")
            continue
        for target in sorted(targets):
            theirs = len(names) if target == package else layer(target)
            if theirs is not None and theirs > mine:
                where = "the package face" if target == package else names[theirs]
                problems.append(
                    f"{module} ({names[mine]}) imports {target} ({where}), a higher layer"
                )
    return problems


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(found)


def _describe(component: list[str], edges: dict[str, set[str]]) -> str:
    inside = set(component)
    ties = [f"{a} -> {b}" for a in component for b in sorted(edges[a] & inside)]
    return "cycle: " + "; ".join(ties)


def test_no_module_imports_a_higher_layer() -> None:
    problems = layer_violations(graph(SRC, "runarchive"), "runarchive", LAYERS)
    assert not problems, "\n".join(problems)


def test_no_import_cycles() -> None:
    edges = graph(SRC, "runarchive")
    found = cycles(edges)
    assert not found, "\n".join(_describe(c, edges) for c in found)


def test_every_layer_names_something_that_exists() -> None:
    tops = {name.split(".")[1] for name in modules(SRC, "runarchive") if "." in name}
    listed = {top for _, group in LAYERS for top in group}
    assert listed <= tops, f"LAYERS names what is not in src/runarchive: {listed - tops}"


# -- the checker itself, on a synthetic tree -------------------------------------------

TOY_LAYERS = (("ground", {"errors"}), ("engine", {"engine"}), ("facade", {"archive", "run"}))


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in {"toy/__init__.py": "", **files}.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_the_checker_passes_a_clean_tree(tmp_path: Path) -> None:
    src = _tree(
        tmp_path,
        {
            "toy/errors.py": "",
            "toy/engine/__init__.py": "",
            "toy/engine/flush.py": "from toy.errors import E\nfrom . import view\n",
            "toy/engine/view.py": "import toy.errors\n",
            "toy/archive.py": "from toy.engine.flush import F\nfrom toy.run import Run\n",
            "toy/run.py": "from toy.engine import view\n",
        },
    )
    edges = graph(src, "toy")
    assert edges["toy.engine.flush"] == {"toy.errors", "toy.engine.view"}
    assert edges["toy.archive"] == {"toy.engine.flush", "toy.engine", "toy.run"}
    assert layer_violations(edges, "toy", TOY_LAYERS) == []
    assert cycles(edges) == []


@pytest.mark.parametrize(
    "statement",
    [
        "from toy.archive import Archive\n",  # at module level
        "def f():\n    from toy.archive import Archive\n",  # lazily, in a function
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import toy.archive\n",
        "from .. import archive\n",  # relative
    ],
)
def test_the_checker_finds_an_import_of_a_higher_layer(tmp_path: Path, statement: str) -> None:
    src = _tree(
        tmp_path,
        {
            "toy/errors.py": "",
            "toy/engine/__init__.py": "",
            "toy/engine/recovery.py": statement,
            "toy/archive.py": "",
        },
    )
    problems = layer_violations(graph(src, "toy"), "toy", TOY_LAYERS)
    assert problems == ["toy.engine.recovery (engine) imports toy.archive (facade), a higher layer"]


def test_the_checker_finds_a_cycle_within_a_layer_and_the_face_and_strays(
    tmp_path: Path,
) -> None:
    src = _tree(
        tmp_path,
        {
            "toy/errors.py": "from toy import something\n",  # the package face
            "toy/archive.py": "from toy.run import Run\n",
            "toy/run.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from toy.archive import Archive\n"
            ),
            "toy/stray.py": "",
        },
    )
    edges = graph(src, "toy")
    assert cycles(edges) == [["toy.archive", "toy.run"]]
    assert _describe(["toy.archive", "toy.run"], edges) == (
        "cycle: toy.archive -> toy.run; toy.run -> toy.archive"
    )
    assert layer_violations(edges, "toy", TOY_LAYERS) == [
        "toy.errors (ground) imports toy (the package face), a higher layer",
        "toy.stray is in no layer: add it to runarchive._layers.LAYERS",
    ]
