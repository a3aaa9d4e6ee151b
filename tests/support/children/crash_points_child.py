"""Child process for test_crash_points.py: a writer that a fault point kills.

Usage: python crash_points_child.py JSON  with keys url, settings, run_id, mode,
records. ``RUNARCHIVE_FAULT_POINT`` (set by the parent) decides where it dies.

Modes:

* ``write``: append ``records`` records (2 checkpoints, then an event), flushing in
  this thread every 8 records; then complete the run and close (flush + manifest).
* ``multipart``: like ``write``, then one incompressible ~8 MiB checkpoint whose
  segment needs a multipart upload (threshold and part size are 5 MiB).
* ``live``: like ``write``, flushing every 2 records (with ``compaction_fanout`` 2 the
  writer's live compaction merges after every other flush).
* ``compact`` / ``gc``: ``write``, then ``archive.compact(run_id)`` (and for ``gc``
  ``archive.gc(grace=0)``).

It prints ``ACK <seq>`` after each append returned (one write(2) per line, so no
line is torn by the kill), ``STEP <name>`` between phases and ``DONE`` at the end:
a child that prints ``DONE`` was not killed.
"""

from __future__ import annotations

import base64
import json
import os
import sys

from runarchive import Archive, Policy


def say(line: str) -> None:
    os.write(1, (line + "\n").encode())


def main() -> None:
    doc = json.loads(sys.argv[1])
    mode, run_id, records = doc["mode"], doc["run_id"], int(doc["records"])
    settings = {
        **doc["settings"],
        # Flushes happen where this script calls them, not on a timer.
        "flush_records": 1_000_000,
        "flush_bytes": 1 << 40,
        "flush_age": 3600.0,
        "policy": Policy(keep_all=True),
    }
    archive = Archive.open(doc["url"], **settings)
    run = archive.start_run(agent="crash-points", run_id=run_id)
    for i in range(1, records + 1):
        if i % 3:
            seq = run.checkpoint(f"step{i % 2}", {"i": i, "pad": "x" * (i * 37 % 500)}).seq
        else:
            seq = run.event("tool", {"i": i}).seq
        say(f"ACK {seq}")
        if i % (2 if mode == "live" else 8) == 0:
            say("STEP flush")
            archive.flush()
    if mode == "multipart":
        archive.flush()
        blob = base64.b64encode(os.urandom(6 * 1024 * 1024)).decode()  # 8 MiB, incompressible
        say(f"ACK {run.checkpoint('big', {'blob': blob}).seq}")
        say("STEP multipart")
        archive.flush()
    say("STEP complete")
    run.complete({"records": records})
    archive.flush()
    if mode in ("compact", "gc", "sealed-compact"):
        say("STEP compact")
        archive.compact(run_id)
    if mode == "gc":
        say("STEP gc")
        archive.gc(grace=0)
    say("STEP close")
    archive.close()
    say("DONE")


if __name__ == "__main__":
    main()
