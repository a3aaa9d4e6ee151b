"""The cache's WAL during a long append stream: one run, N small events back to back,
the background flusher flushing and evicting throughout (issue 12).

Run with ``make bench-wal`` or ``.venv/bin/python bench/bench_wal.py [EVENTS]
[--dir DIR] [--json [PATH]]`` (default 1,000,000 events: ~12 min on 2 cores with the
cache on local disk; every append fsyncs).

Prints the peak size of ``cache.sqlite3-wal`` (its size is read after every append,
outside the timed call), the database's size, events/s, and the append p50 of the
last ``--window`` appends against the first ones, measured in the same run (a WAL
that keeps growing makes every page lookup search more of its index). Targets: WAL
peak under 64 MiB; last/first p50 ≤ 1.25. Exit status 0 even when a target is
missed: it is a benchmark, not a test. Uses a ``file://`` archive in the same
temporary directory: no S3 server.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

from common import mib

from runarchive import Archive

WAL_TARGET = 64 * 1024 * 1024
RATIO_TARGET = 1.25


def measure(events: int, directory: Path, window: int) -> dict[str, Any]:
    cache_dir = directory / "cache"
    wal, db = cache_dir / "cache.sqlite3-wal", cache_dir / "cache.sqlite3"
    first: list[float] = []
    last: deque[float] = deque(maxlen=window)
    slowest = peak = 0.0
    perf = time.perf_counter
    with Archive.open(
        (directory / "bucket").as_uri(), cache_dir=cache_dir, flush_records=256, flush_age=0.5
    ) as archive:
        run = archive.start_run(agent="bench-wal")
        started = perf()
        for i in range(events):
            t0 = perf()
            run.event("tool_call", {"i": i, "tool": "search", "ok": True})
            took = perf() - t0
            if i < window:
                first.append(took)
            last.append(took)
            slowest = max(slowest, took)
            peak = max(peak, wal.stat().st_size)
            if (i + 1) % 100_000 == 0:
                rate = (i + 1) / (perf() - started)
                print(
                    f"{i + 1:>9,} events  {rate:,.0f}/s  WAL {mib(wal.stat().st_size)} "
                    f"(peak {mib(peak)})  db {mib(db.stat().st_size)}",
                    file=sys.stderr,
                    flush=True,
                )
        elapsed = perf() - started
        wal_end, db_end = wal.stat().st_size, db.stat().st_size
        t0 = perf()
        archive.flush()
        final_flush = perf() - t0
        row = archive.cache.run(run.run_id)
        if row is None or row.archived_seq != events:
            raise SystemExit(f"only {row and row.archived_seq} of {events} events archived")
    p50_first, p50_last = statistics.median(first), statistics.median(last)
    return {
        "events": events,
        "seconds": elapsed,
        "events_per_s": events / elapsed,
        "wal_peak_bytes": peak,
        "wal_end_bytes": wal_end,
        "db_bytes": db_end,
        "window": len(first),
        "append_p50_first_ms": p50_first * 1000,
        "append_p50_last_ms": p50_last * 1000,
        "append_p50_ratio": p50_last / p50_first,
        "append_max_ms": slowest * 1000,
        "final_flush_s": final_flush,
    }


def report(r: dict[str, Any]) -> str:
    wal_ok = "PASS" if r["wal_peak_bytes"] < WAL_TARGET else "MISS"
    ratio_ok = "PASS" if r["append_p50_ratio"] <= RATIO_TARGET else "MISS"
    return "\n".join(
        [
            f"events            {r['events']:,} in {r['seconds']:,.1f} s "
            f"({r['events_per_s']:,.0f} events/s)",
            f"WAL peak          {mib(r['wal_peak_bytes'])} (at the end {mib(r['wal_end_bytes'])})",
            f"database          {mib(r['db_bytes'])}",
            f"append p50        first {r['window']:,}: {r['append_p50_first_ms']:.3f} ms, "
            f"last {r['window']:,}: {r['append_p50_last_ms']:.3f} ms "
            f"(ratio {r['append_p50_ratio']:.2f}); slowest {r['append_max_ms']:.1f} ms",
            f"final flush       {r['final_flush_s']:.2f} s",
            "targets",
            f"  WAL peak < {mib(WAL_TARGET)}: {wal_ok}",
            f"  append p50 last/first <= {RATIO_TARGET}: {ratio_ok}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("events", nargs="?", type=int, default=1_000_000)
    parser.add_argument("--window", type=int, default=10_000, help="appends per p50 sample")
    parser.add_argument(
        "--dir", type=Path, help="where the cache and bucket go (default: a temp directory)"
    )
    default = str(Path(tempfile.gettempdir()) / "runarchive-bench_wal.json")
    parser.add_argument("--json", nargs="?", const=default, metavar="PATH")
    args = parser.parse_args(argv)
    window = min(args.window, max(1, args.events // 2))
    with tempfile.TemporaryDirectory(prefix="rabench-wal-", dir=args.dir) as tmp:
        result = measure(args.events, Path(tmp), window)
    print(report(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
