"""Child process for test_langgraph.py: writes a LangGraph thread, flushes, dies.

Usage: python langgraph_child.py URL CACHE_DIR THREAD_ID SETTINGS_JSON

Writes three checkpoints (root namespace, parent chain) with pending writes on the
last, one checkpoint in a child namespace, flushes, prints ``FLUSHED`` and SIGKILLs
itself: no close(), no atexit.
"""

from __future__ import annotations

import json
import os
import signal
import sys

from langgraph.checkpoint.conformance.test_utils import generate_checkpoint, generate_metadata

from runarchive import Archive
from runarchive.langgraph import ArchiveSaver


def main() -> None:
    url, cache_dir, thread_id, settings = sys.argv[1:5]
    archive = Archive.open(url, cache_dir=cache_dir, **json.loads(settings))
    saver = ArchiveSaver(archive)
    config = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
    for step in range(3):
        cp = generate_checkpoint(channel_values={"step": step, "blob": b"\x00\xff"})
        cp["channel_versions"] = {"step": step + 1, "blob": 1}
        meta = generate_metadata(step=step, run_id="r1")
        config = saver.put(config, cp, meta, {"step": step + 1})
    saver.put_writes(config, [("ch", {"n": 1}), ("other", [1, 2])], "task-1", "p:0")
    child = {"configurable": {"thread_id": thread_id, "checkpoint_ns": "sub:1"}}
    saver.put(child, generate_checkpoint(), generate_metadata(step=0), {})
    archive.flush()
    print("FLUSHED", config["configurable"]["checkpoint_id"], flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    main()
