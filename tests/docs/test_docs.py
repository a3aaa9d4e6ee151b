"""The docs name every setting and command the code has."""

from __future__ import annotations

import re
from pathlib import Path

from runarchive.cli.main import build_parser
from runarchive.compat.eventstore import ArchiveCheckpointer
from runarchive.compat.manager import CheckpointManager
from runarchive.compat.runstore import ArchiveRunStore, RunHandle
from runarchive.config import ArchiveConfig
from runarchive.policy import Policy

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_every_setting_is_documented() -> None:
    text = (DOCS / "config.md").read_text()
    missing = [
        f for f in [*ArchiveConfig.model_fields, *Policy.model_fields] if f"`{f}`" not in text
    ]
    assert missing == []


def test_every_command_is_documented() -> None:
    text = (DOCS / "cli.md").read_text()
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert sub.choices is not None
    assert [c for c in sub.choices if f"runarchive [--url URL] {c}" not in text] == []


def test_every_public_adapter_method_is_documented() -> None:
    text = (DOCS / "adapters.md").read_text()
    classes = [
        CheckpointManager,
        ArchiveCheckpointer,
        ArchiveRunStore,
        RunHandle,
    ]
    missing = [
        f"{cls.__name__}.{name}"
        for cls in classes
        for name in vars(cls)
        if not name.startswith("_") and callable(getattr(cls, name)) and f"`{name}" not in text
    ]
    assert missing == []


def test_every_test_named_in_the_errors_catalogue_exists() -> None:
    text = (DOCS / "errors.md").read_text()
    named = set(re.findall(r"`(test_[a-z0-9_]+)`", text))
    defined: set[str] = set()
    for path in (DOCS.parent / "tests").rglob("test_*.py"):
        defined |= set(re.findall(r"^(?:async )?def (test_[a-z0-9_]+)\(", path.read_text(), re.M))
    assert len(named) > 25
    assert sorted(named - defined) == []
