"""Child process for test_manifest_procs.py: one "host" writing runs into a shared archive.

Usage: python manifest_child.py JSON

``JSON`` is one object: ``{"mode": ..., "url": ..., "settings": {...}, ...}``;
``settings`` go to ``Archive.open`` (cache_dir, host_id, lease_seconds, endpoint...).
S3 credentials come from the environment. Every line printed is one write(2), so
the flusher thread and the main thread never interleave inside a line:

``many``   (``proc``, ``runs``): start ``runs`` runs of agent ``agent-<proc>``, each
           with a few checkpoints/events, a flush, then ``complete()`` (``fail("x")``
           for every 5th); prints ``RUN <run_id> <status> <records>`` per run and
           ``DONE`` once the archive is closed.
``writer`` (``run_id``, ``interval``, ``flush_every``): start run ``run_id`` and append
           checkpoints ``{"writer": host_id, "n": seq}`` forever, one per ``interval``
           seconds, printing ``ACK <seq>``; every ``flush_every`` records calls
           ``run.flush()`` and prints ``FLUSHED <seq>`` (every seq up to it is in the
           bucket). On ``FencedError`` (from an append or a flush) prints ``FENCED <seq>
           <where>`` and exits 0.
``idle``   (``run_id``, ``records``): start run ``run_id``, append ``records``
           checkpoints, flush, print ``FLUSHED <seq>``, then stay alive without
           appending (the background flusher keeps renewing the lease) until a line
           ``append`` arrives on stdin: then append one checkpoint and flush it, printing
           ``ACK``/``FLUSHED`` as ``writer`` does, or ``FENCED <seq> <where>`` and exit 0.

The first line is always ``READY <pid>`` once the archive is open.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from runarchive import Archive, FencedError, Run


def say(line: str) -> None:
    # One write(2) per line: the flusher thread and the writer thread both print.
    os.write(1, (line + "\n").encode())


def many(archive: Archive, proc: int, runs: int) -> None:
    for i in range(runs):
        run = archive.start_run(agent=f"agent-{proc}", metadata={"proc": proc, "i": i})
        records = 2 + i % 3
        for k in range(records):
            if k % 2 == 0:
                run.checkpoint("step", {"proc": proc, "i": i, "k": k})
            else:
                run.event("tool_call", {"k": k})
        run.flush()
        if i % 5 == 4:
            run.fail("x")
        else:
            run.complete({"i": i})
        say(f"RUN {run.run_id} {run.status} {run.last_seq}")


def writer(archive: Archive, run_id: str, interval: float, flush_every: int) -> None:
    host = archive.config.host_id
    run: Run = archive.start_run(agent="writer", run_id=run_id)
    where = "checkpoint"
    try:
        while True:
            where = "checkpoint"
            cp = run.checkpoint("step", {"writer": host, "n": run.last_seq + 1})
            say(f"ACK {cp.seq}")
            if cp.seq % flush_every == 0:
                where = "flush"
                run.flush()
                say(f"FLUSHED {cp.seq}")
            time.sleep(interval)
    except FencedError as exc:
        say(f"FENCED {run.last_seq} {where}")
        print(f"fenced: {exc}", file=sys.stderr)


def idle(archive: Archive, run_id: str, records: int) -> None:
    host = archive.config.host_id
    run = archive.start_run(agent="idle", run_id=run_id)
    for _ in range(records):
        run.checkpoint("step", {"writer": host, "n": run.last_seq + 1})
    run.flush()
    say(f"FLUSHED {run.last_seq}")
    # Alive and renewing its lease in the background (a slow tool call, say).
    while sys.stdin.readline().strip() == "append":
        where = "checkpoint"
        try:
            cp = run.checkpoint("step", {"writer": host, "n": run.last_seq + 1})
            say(f"ACK {cp.seq}")
            where = "flush"
            run.flush()
            say(f"FLUSHED {cp.seq}")
        except FencedError as exc:
            say(f"FENCED {run.last_seq} {where}")
            print(f"fenced: {exc}", file=sys.stderr)
            return


def main() -> None:
    spec: dict[str, Any] = json.loads(sys.argv[1])
    archive = Archive.open(spec["url"], **spec["settings"])
    say(f"READY {os.getpid()}")
    mode = spec["mode"]
    if mode == "many":
        many(archive, int(spec["proc"]), int(spec["runs"]))
    elif mode == "writer":
        writer(archive, spec["run_id"], float(spec["interval"]), int(spec["flush_every"]))
    elif mode == "idle":
        idle(archive, spec["run_id"], int(spec["records"]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    archive.close()
    say("DONE")


if __name__ == "__main__":
    main()
