"""`make bench-scale`: issue 13's figures in one go (scale in time and in fleet).

Runs, one after the other, each as its own process (so one's memory never weighs on
another's figures):

* ``bench/scale_run.py``: one long live run, a flush every 2 records (bytes and time
  per flush at flush N vs flush 20, objects, restore vs one flush, stored checkpoints
  vs the whole-history policy), and the same run on SeaweedFS;
* ``bench/scale_fleet.py``: the manifest at 1,000,000 runs and a simulated fleet of
  1,000 hosts (finish() cost, CAS conflicts, interrupted(), hot keys, the bill);
* ``bench/scale_restore.py``: peak RSS of a streaming restore of 1,000,000 records.

Every ratio is measured against a baseline taken in the same process. Arguments are
passed to each script as ``SCALE_RUN_ARGS``, ``SCALE_FLEET_ARGS`` and
``SCALE_RESTORE_ARGS`` (environment variables, split on spaces).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
DEFAULTS = {
    "scale_run.py": ("SCALE_RUN_ARGS", "--flushes 20000 --baseline-flushes 2000 --seaweed 2000"),
    "scale_fleet.py": ("SCALE_FLEET_ARGS", "--seaweed"),
    "scale_restore.py": ("SCALE_RESTORE_ARGS", ""),
}


def main() -> int:
    failed = []
    for script, (var, default) in DEFAULTS.items():
        path = BENCH / script
        if not path.exists():
            print(f"## {script}: missing", flush=True)
            failed.append(script)
            continue
        args = os.environ.get(var, default).split()
        print(f"## {script} {' '.join(args)}", flush=True)
        done = subprocess.run([sys.executable, str(path), *args], check=False)
        if done.returncode:
            failed.append(script)
        print(flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
