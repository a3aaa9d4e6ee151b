"""``docs/design.md``'s "Module map" lists every module of ``src/runarchive``, nothing
that does not exist, and each under the heading of its layer (``runarchive._layers``)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from runarchive._layers import LAYERS

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "runarchive"
FACE = "the package face"
ENTRY = re.compile(r"^- `([^`]+)` — \S")


def tree(package: Path) -> set[str]:
    """Every module as the map names it: ``x/y.py``, a package as ``x/`` (its
    ``__init__.py``), the package face as ``__init__.py``."""
    names = set()
    for path in package.rglob("*.py"):
        rel = path.relative_to(package).as_posix()
        if path.name == "__init__.py" and path.parent != package:
            rel = rel.removesuffix("__init__.py")
        names.add(rel)
    return names


def module_map(text: str) -> dict[str, str]:
    """Entry -> the ``###`` heading it is listed under, from the "Module map" section."""
    section = text.split("\n## Module map\n", 1)[1].split("\n## ", 1)[0]
    heading, entries = "", {}
    for line in section.splitlines():
        if line.startswith("### "):
            heading = line[4:].strip().lower()
        elif line.startswith("- "):
            match = ENTRY.match(line)
            assert match, f"not an entry of the form '- `path` — what it is': {line!r}"
            assert match[1] not in entries, f"{match[1]} is listed twice"
            entries[match[1]] = heading
    return entries


def layer_heading(entry: str) -> str:
    if entry == "__init__.py":
        return FACE
    top = entry.split("/", maxsplit=1)[0].removesuffix(".py")
    return next(name for name, tops in LAYERS if top in tops)


@pytest.fixture(scope="module")
def listed() -> dict[str, str]:
    return module_map((ROOT / "docs" / "design.md").read_text())


def test_every_module_is_listed_and_nothing_else(listed: dict[str, str]) -> None:
    actual = tree(PACKAGE)
    assert not actual - listed.keys(), f"add to docs/design.md: {sorted(actual - listed.keys())}"
    assert not listed.keys() - actual, f"not in the tree: {sorted(listed.keys() - actual)}"


def test_each_module_is_under_its_layer_and_the_layers_are_in_order(
    listed: dict[str, str],
) -> None:
    wrong = {e: h for e, h in listed.items() if h != layer_heading(e)}
    assert not wrong, f"listed under another layer than runarchive._layers says: {wrong}"
    headings = list(dict.fromkeys(listed.values()))
    assert headings == [name for name, _ in LAYERS] + [FACE]


def test_the_checks_fail_on_a_stale_map(tmp_path: Path) -> None:
    package = tmp_path / "runarchive"
    (package / "store").mkdir(parents=True)
    for rel in ("__init__.py", "errors.py", "store/__init__.py", "store/new.py"):
        (package / rel).write_text("")
    stale = (
        "intro\n\n## Module map\n\n### Ground\n\n- `errors.py` — errors.\n"
        "- `gone.py` — a module that was removed.\n\n### Store and cache\n\n"
        "- `store/` — stores.\n\n## Next section\n\n- `not/in/the/map.py` — ignored.\n"
    )
    entries = module_map(stale)
    assert entries == {"errors.py": "ground", "gone.py": "ground", "store/": "store and cache"}
    assert tree(package) - entries.keys() == {"__init__.py", "store/new.py"}
    assert entries.keys() - tree(package) == {"gone.py"}
    assert layer_heading("store/new.py") == "store and cache"
    with pytest.raises(AssertionError, match="not an entry"):
        module_map("\n## Module map\n\n### Ground\n\n- errors.py, without backticks\n")
