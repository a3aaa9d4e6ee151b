"""Child process for test_cluster.py: one agent host writing runs through one S3 gateway.

Usage: python cluster_child.py JSON  (``{"url", "settings", "proc", "run_records",
"interval"}``; S3 credentials from the environment).

Writes runs one after another, each of ``run_records`` records (checkpoints and
events alternating, one per ``interval`` seconds), ending each with ``complete()``
(``fail("...")`` for every 4th run). Every line is one write(2):

``READY <pid>``                   the archive is open
``ACK <run_id> <seq> <kind>``     the record is durable in the local cache
``END <run_id> <status> <seq> <how>``  the run ended; ``flushed`` if complete()/fail()
                                  archived it, ``deferred:<error>`` if their flush failed
                                  (the status is in the cache; the flusher retries)
``STATUS <unflushed> <failing>``  twice a second: records not yet in the bucket, runs
                                  whose last background flush failed
``CLOSED``/``CLOSE-FAILED <e>``   after ``stop`` arrived on stdin: the current run ended,
                                  then ``archive.close()`` (the final flush)
"""

from __future__ import annotations

import json
import os
import sys
import threading
from typing import Any

from runarchive import Archive, Run


def say(line: str) -> None:
    os.write(1, (line + "\n").encode())  # one write(2): threads never interleave a line


def end(run: Run, failed: bool) -> None:
    try:
        if failed:
            run.fail("every 4th run fails")
        else:
            run.complete({"records": run.last_seq})
        say(f"END {run.run_id} {run.status} {run.last_seq} flushed")
    except Exception as exc:
        say(f"END {run.run_id} {run.status} {run.last_seq} deferred:{type(exc).__name__}")


def main() -> None:
    spec: dict[str, Any] = json.loads(sys.argv[1])
    proc, run_records, interval = int(spec["proc"]), int(spec["run_records"]), spec["interval"]
    archive = Archive.open(spec["url"], **spec["settings"])
    say(f"READY {os.getpid()}")
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()

    def report() -> None:
        while not stop.wait(0.5):
            status = archive.status()
            say(f"STATUS {status.unflushed_records} {len(status.failing)}")

    threading.Thread(target=report, daemon=True).start()
    enders: list[threading.Thread] = []
    i = 0
    while not stop.is_set():
        run = archive.start_run(agent=f"agent-{proc}", metadata={"proc": proc, "i": i})
        for k in range(run_records):
            if k % 2 == 0:
                rec = run.checkpoint(f"step-{k % 3}", {"proc": proc, "run": run.run_id, "k": k})
                say(f"ACK {run.run_id} {rec.seq} checkpoint")
            else:
                ev = run.event("tool_call", {"proc": proc, "run": run.run_id, "k": k})
                say(f"ACK {run.run_id} {ev.seq} event")
            stop.wait(interval)  # (the last run finishes even after "stop")
        # complete()/fail() flush synchronously and raise if the bucket cannot take
        # it; the status is already committed to the cache then, and the background
        # flusher ships it later. An agent would not wait for that: end off the loop.
        ender = threading.Thread(target=end, args=(run, i % 4 == 3))
        ender.start()
        enders.append(ender)
        i += 1
    for ender in enders:
        ender.join()
    try:
        archive.close()
    except Exception as exc:
        say(f"CLOSE-FAILED {type(exc).__name__}: {exc}".replace("\n", " "))
        raise
    say("CLOSED")


if __name__ == "__main__":
    main()
