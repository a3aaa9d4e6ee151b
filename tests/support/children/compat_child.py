"""Child process for the adapters' restart tests: writes through one adapter, then exits.

Usage: python compat_child.py '<json>' with keys ``url``, ``settings`` (Archive
settings, incl. ``cache_dir``), ``adapter`` (manager | eventstore | runstore),
``key`` (session / run id) and ``exit`` (``close``: a clean exit that flushes at
interpreter exit; ``kill``: flush, then SIGKILL itself, as a host that dies).
Prints one JSON line: what it wrote, for the parent to compare.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any

from runarchive import Archive
from runarchive.compat.eventstore import ArchiveCheckpointer, ArchivedEvent
from runarchive.compat.manager import CheckpointManager
from runarchive.compat.runstore import ArchiveRunStore, RunCheckpointMeta, RunHandle


def write_manager(archive: Archive, key: str) -> dict[str, Any]:
    mgr = CheckpointManager(key, compress_after=30, archive=archive)
    for i in range(45):
        mgr.create(("plan", "act", "observe")[i % 3], {"i": i}, {"step": i})
    return {"export": mgr.export()}


def write_eventstore(archive: Archive, key: str) -> dict[str, Any]:
    store = ArchiveCheckpointer(archive)
    for seq in range(1, 31):
        store.save_event(ArchivedEvent(key, seq, 1000.0 + seq, "tool", {"n": seq}, "main"))
        if seq % 10 == 0:
            store.save_snapshot(key, {"upto": seq})
    return {"events": 30, "snapshot": {"upto": 30}}


def write_runstore(archive: Archive, key: str) -> dict[str, Any]:
    store = ArchiveRunStore(archive)
    handle = RunHandle(store, RunCheckpointMeta(run_id=key, agent_id="a1", prompt="go"), 0.0)
    for i in range(1, 6):
        handle.save([{"role": "user", "content": f"m{i}"}], iteration=i, active_phase="work")
    return {"iteration": 5}


def main() -> None:
    doc = json.loads(sys.argv[1])
    archive = Archive.open(doc["url"], **doc["settings"])
    writer = {
        "manager": write_manager,
        "eventstore": write_eventstore,
        "runstore": write_runstore,
    }[doc["adapter"]]
    wrote = writer(archive, doc["key"])
    archive.flush()
    print(json.dumps(wrote), flush=True)
    if doc["exit"] == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    archive.close()


if __name__ == "__main__":
    main()
