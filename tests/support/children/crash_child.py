"""Child process for test_crash.py: appends checkpoints forever, printing each acked seq.

Usage: python crash_child.py URL CACHE_DIR RUN_ID (write | drain)

Every line it prints is flushed at once: ``ACK <seq>`` after ``checkpoint()``
returned, ``PUT <key>`` before/after each object write (so the parent can tell
when a kill lands inside a flush). Segment PUTs are slowed by 20 ms to widen the
window between the segment write and the index write.
"""

from __future__ import annotations

import os
import sys
import time

from runarchive import Archive, Policy
from runarchive.errors import RunNotFoundError
from runarchive.store import CountingStore, PutMode


def say(line: str) -> None:
    # One write(2) per line: the flusher thread and the writer thread both print.
    os.write(1, (line + "\n").encode())


def main() -> None:
    url, cache_dir, run_id, mode = sys.argv[1:5]
    settings: dict[str, object] = {
        "cache_dir": cache_dir,
        "flush_records": 15,
        "flush_age": 0.05,
        "policy": Policy(keep_all=True),
    }
    if url.startswith("s3://"):
        settings["addressing_style"] = "path"
    archive = Archive.open(url, **settings)
    inner_put = CountingStore.put

    def traced_put(
        self: CountingStore,
        key: str,
        body: bytes,
        *,
        mode: PutMode = "overwrite",
        immutable: bool = False,
    ) -> str:
        say(f"PUT-BEGIN {key}")
        etag = inner_put(self, key, body, mode=mode, immutable=immutable)
        if "/seg/" in key:
            time.sleep(0.02)
        say(f"PUT-END {key}")
        return etag

    CountingStore.put = traced_put  # type: ignore[method-assign]
    if mode == "drain":
        archive.close()
        say("DRAINED")
        return
    try:
        run = archive.run(run_id)
    except RunNotFoundError:
        run = archive.start_run(agent="crash", run_id=run_id)
    while True:
        n = run.last_seq + 1
        cp = run.checkpoint("step", {"n": n, "pad": "x" * (n % 300)})
        say(f"ACK {cp.seq}")


if __name__ == "__main__":
    main()
