"""Start-up of the command line: ``runarchive --help`` against ``python -c pass``.

``runarchive --help`` imported every subsystem and boto3 (about 1.45 s); it now
imports the parser only, and a command imports what it uses when it runs. This
times, as whole processes and interleaved (so that a drift of the machine's speed
hits both alike), ``python -c pass`` (the floor: the interpreter alone),
``python -m runarchive.cli --help``, ``python -c "import runarchive"`` and what a
command such as ``runarchive runs`` loads (``runarchive.reader``, with boto3), and
prints medians and ratios to the floor.

    .venv/bin/python bench/bench_startup.py [--runs N] [--json]

Targets: ``--help`` ≤ 5x ``python -c pass`` in the same run (the ratio holds on a
busy machine; it was about 35x, 1.45 s), and ≤ 0.3 s (on an idle machine). The exit
status is 0 even when a target is missed: it is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

CASES = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "runarchive --help": [sys.executable, "-m", "runarchive.cli", "--help"],
    "import runarchive": [sys.executable, "-c", "import runarchive"],
    "import runarchive.reader": [sys.executable, "-c", "import runarchive.reader"],
}
FLOOR = "python -c pass"
TARGET_SECONDS = 0.3
TARGET_RATIO = 5.0


def _once(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def measure(runs: int) -> dict[str, list[float]]:
    """Wall seconds of each case, ``runs`` rounds, the cases in turn in each round."""
    for argv in CASES.values():  # warm the file cache and the .pyc files
        _once(argv)
    times: dict[str, list[float]] = {name: [] for name in CASES}
    for _ in range(runs):
        for name, argv in CASES.items():
            times[name].append(_once(argv))
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15, help="rounds (default: 15)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    times = measure(args.runs)
    floor = statistics.median(times[FLOOR])
    rows = {
        name: {"median_s": statistics.median(t), "ratio": statistics.median(t) / floor}
        for name, t in times.items()
    }
    help_ = rows["runarchive --help"]
    checks = {
        f"--help <= {TARGET_SECONDS} s": help_["median_s"] <= TARGET_SECONDS,
        f"--help <= {TARGET_RATIO}x python -c pass": help_["ratio"] <= TARGET_RATIO,
    }
    if args.json:
        print(json.dumps({"runs": args.runs, "cases": rows, "targets": checks}, indent=2))
        return 0
    print(f"{'case':28} {'median':>9} {'x floor':>8}   ({args.runs} rounds, interleaved)")
    for name, row in rows.items():
        print(f"{name:28} {row['median_s'] * 1000:7.0f} ms {row['ratio']:7.2f}x")
    print("targets")
    for what, ok in checks.items():
        print(f"  {'PASS' if ok else 'MISS'}  {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
