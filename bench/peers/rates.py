"""Measure requests per hour of a running run at the default settings (docs/deploy.md).

Starts its own SeaweedFS, opens two archives (one per run, so each has its own
request counter: ``archive.store`` is a CountingStore), starts a run in each, lets
both flush once, resets the counters, then for ``--seconds`` (default 120) one run
appends a checkpoint (growing transcript) and an event every second while the other
stays idle. Prints requests by operation, per hour, and bytes per checkpoint.

    .venv/bin/python bench/peers/rates.py [--seconds 120]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_core import Transcript, open_archive
from common import SeaweedFS, aws_env, warm_bucket


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=120.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rarates-") as tmp_name:
        tmp = Path(tmp_name)
        with SeaweedFS(tmp / "weed") as server, aws_env(server):
            server.client().create_bucket(Bucket="rates")
            warm_bucket(server, "rates")
            busy = open_archive(server, "rates", "a", tmp / "c1")
            idle = open_archive(server, "rates", "a", tmp / "c2")
            transcript = Transcript(1)
            run_b = busy.start_run(agent="busy")
            run_i = idle.start_run(agent="idle")
            name, state = transcript.step(0)
            run_b.checkpoint(name, state)
            run_i.checkpoint("start", {"step": 0})
            busy.flush()
            idle.flush()
            busy.store.reset()
            idle.store.reset()
            t0 = time.monotonic()
            stop = threading.Event()
            steps = 0
            while time.monotonic() - t0 < args.seconds:
                steps += 1
                name, state = transcript.step(steps)
                run_b.checkpoint(name, state)
                run_b.event("tool_call", transcript.event_data(steps))
                time.sleep(max(0.0, t0 + steps - time.monotonic()))
            elapsed = time.monotonic() - t0
            stop.set()
            counts = {"busy": dict(busy.store.counts), "idle": dict(idle.store.counts)}
            run_b.complete()
            busy.flush()
            index = busy.index(run_b.run_id)
            result = {
                "seconds": round(elapsed, 1),
                "checkpoints_appended": steps + 1,
                "busy": counts["busy"],
                "idle": counts["idle"],
                "busy_per_hour": round(sum(counts["busy"].values()) * 3600 / elapsed),
                "idle_per_hour": round(sum(counts["idle"].values()) * 3600 / elapsed),
                "segments": len(index.segments),
                "stored_bytes": index.stored_bytes,
                "raw_bytes": index.raw_bytes,
                "stored_bytes_per_checkpoint": round(index.stored_bytes / (steps + 1)),
                "final_state_bytes": len(json.dumps(state)),
            }
            idle.close()
            busy.close()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
