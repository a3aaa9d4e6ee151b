"""The import paths the docs promise survive the move into subsystem packages."""

from __future__ import annotations

import importlib
import logging
import subprocess
import sys
from importlib.metadata import entry_points

import pytest

import runarchive
from runarchive.adapters.compat import eventstore, manager, runstore
from runarchive.adapters.compat.manager import CheckpointManager
from runarchive.adapters.langgraph import ArchiveSaver
from runarchive.compat.manager import CheckpointManager as Shimmed
from runarchive.langgraph import ArchiveSaver as ShimmedSaver

DOCUMENTED = {
    "runarchive.langgraph": ["ArchiveSaver"],
    "runarchive.compat.manager": ["Checkpoint", "CheckpointManager", "compress"],
    "runarchive.compat.runstore": [
        "ArchiveRunStore",
        "RunCheckpoint",
        "RunCheckpointMeta",
        "RunHandle",
    ],
    "runarchive.compat.eventstore": ["ArchiveCheckpointer", "ArchivedEvent"],
    "runarchive.logs": ["JsonFormatter", "log_run"],
    "runarchive.errors": ["RunArchiveError", "StoreError"],
    "runarchive.store": ["Store", "FileStore", "S3Store", "MemoryStore", "CountingStore"],
}


@pytest.mark.parametrize("module", sorted(DOCUMENTED))
def test_a_documented_module_exports_its_documented_names(module: str) -> None:
    mod = importlib.import_module(module)
    for name in DOCUMENTED[module]:
        assert hasattr(mod, name), f"{module}.{name}"


def test_the_shims_hand_on_the_very_objects_of_the_adapters() -> None:

    assert Shimmed is CheckpointManager
    assert ShimmedSaver is ArchiveSaver


def test_every_name_of_the_package_face_resolves() -> None:
    for name in runarchive.__all__:
        assert getattr(runarchive, name) is not None, name


def test_the_adapters_log_under_their_documented_names() -> None:

    for mod, name in ((manager, "manager"), (runstore, "runstore"), (eventstore, "eventstore")):
        assert mod.log.name == f"runarchive.compat.{name}"
        assert isinstance(mod.log, logging.Logger)


def test_the_console_script_and_python_dash_m_reach_main() -> None:
    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "runarchive"]
    assert script.load() is importlib.import_module("runarchive.cli").main
    out = subprocess.run(
        [sys.executable, "-m", "runarchive.cli", "--help"],
        check=False,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert "usage: runarchive" in out.stdout
