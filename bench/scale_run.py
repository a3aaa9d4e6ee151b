"""Scale in time: one long live run, a flush every 2 records (issue 13, rows 1-5).

A run of ``--flushes`` flushes (one checkpoint and one event each, five checkpoint
names in turn and a rare one every 997 flushes) goes into a ``file://`` archive through
a counting store. Reported, with ratios inside this one process:

* bytes and time of the flush itself (its segment and its head PUT) around flush 20
  and around the last flush (medians of 20 flushes), and the same with live
  compaction's work included (means over the window: merges come every few flushes);
* objects and levels of the live run, and requests per flush amortised;
* restore of the run against the same records written in one flush (median of 3);
* the checkpoints the run stores against what the policy keeps over the whole run;
* the baseline: the same run with ``live_compaction=False`` (format-2 behaviour: the
  whole index rewritten per flush), over ``--baseline-flushes``.

    python bench/scale_run.py [--flushes 20000] [--baseline-flushes 2000] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

sys.path.insert(0, str(ROOT / "bench"))

from common import aws_env  # noqa: E402
from support.servers import SeaweedFS  # noqa: E402

from runarchive import Archive, Reader  # noqa: E402
from runarchive.config import load_config  # noqa: E402
from runarchive.policy import PendingCheckpoint, Policy, select_checkpoints  # noqa: E402
from runarchive.store.counting import CountingStore  # noqa: E402
from runarchive.store.url import make_store  # noqa: E402

NAMES = ["plan", "act", "observe", "reflect", "tool"]
NEVER = {"flush_age": 10**8, "flush_records": 10**9, "flush_bytes": 10**12}


def _name(i: int) -> str:
    return NAMES[i % 5] if i % 997 else f"rare-{i}"


def _window(values: list[float], end: int, size: int = 20) -> list[float]:
    return values[max(0, end - size) : end]


def long_run(
    flushes: int,
    *,
    live: bool = True,
    directory: str,
    url: str | None = None,
    settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write one run of ``flushes`` flushes; per-flush bytes, requests and times."""
    url = url or f"file://{directory}/bucket"
    settings = settings or {}
    store = CountingStore(make_store(load_config(url=url, **settings)))
    archive = Archive.open(
        url,
        cache_dir=f"{directory}/cache",
        store=store,
        live_compaction=live,
        read_back=False,
        **settings,
        **NEVER,
    )
    run = archive.start_run(agent="bench", run_id="long")
    own: list[float] = []  # bytes of the flush's own PUTs (its segment and the head)
    total: list[float] = []  # every byte written during the flush (with live compaction)
    requests: list[float] = []
    seconds: list[float] = []
    names: list[tuple[int, str]] = []
    for i in range(flushes):
        cp = run.checkpoint(_name(i), {"step": i, "notes": "x" * 64})
        names.append((cp.seq, cp.name))
        run.event("tool", {"step": i, "ok": True})
        store.reset()
        t0 = time.perf_counter()
        archive.flush()
        seconds.append(time.perf_counter() - t0)
        seen = list(store.recent)
        requests.append(float(store.total))
        total.append(float(store.bytes_out))
        own.append(float(_own_bytes(store, seen, cp.seq - 0, cp.seq + 1)))
    run.complete({"flushes": flushes})
    archive.close()
    reader = Reader.open(url, **settings)
    index = reader.index("long")
    policy = Policy()
    want = select_checkpoints([PendingCheckpoint(s, n) for s, n in names], policy, names[0][0])
    return {
        "own": own,
        "total": total,
        "requests": requests,
        "seconds": seconds,
        "segments": len(index.segments),
        "levels": sorted({s.level for s in index.segments}),
        "stored_checkpoints": sum(s.checkpoints for s in index.segments),
        "policy_checkpoints": len(want),
        "records": 2 * flushes,
        "url": url,
        "reader": reader,
    }


def _own_bytes(store: CountingStore, seen: list[tuple[str, str]], first: int, last: int) -> int:
    # The counting store keeps (op, key) and totals, not sizes per request: the flush's
    # own bytes are read back from the objects it wrote (segment of first-last, head).
    size = 0
    seg = f"/seg/{first:012d}-{last:012d}-"
    for op, key in seen:
        if op == "put" and (key.endswith("/index.json") or seg in key):
            meta = store.inner.head(key)
            size += meta.size if meta is not None else 0
    return size


def one_flush_restore(
    records: int, directory: str, url: str | None = None, settings: dict[str, Any] | None = None
) -> float:
    """Seconds to restore the same records written by one flush (median of 3)."""
    url = url or f"file://{directory}/one"
    settings = settings or {}
    archive = Archive.open(
        url,
        cache_dir=f"{directory}/cache-one",
        max_segment_records=10**6,
        **settings,
        **NEVER,
    )
    run = archive.start_run(agent="bench", run_id="one")
    for i in range(records // 2):
        run.checkpoint(_name(i), {"step": i, "notes": "x" * 64})
        run.event("tool", {"step": i, "ok": True})
    run.complete({})
    archive.close()
    return _restore_time(Reader.open(url, **settings), "one")


def _restore_time(reader: Reader, run_id: str) -> float:
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        reader.restore(run_id)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(flushes: int = 20_000, baseline_flushes: int = 2_000) -> dict[str, Any]:
    """All figures of rows 1-5 of issue 13's table, as a dict."""
    with tempfile.TemporaryDirectory() as tmp:
        live = long_run(flushes, live=True, directory=f"{tmp}/live")
        base = long_run(baseline_flushes, live=False, directory=f"{tmp}/base")
        restore_live = _restore_time(live["reader"], "long")
        restore_one = one_flush_restore(live["records"], tmp)

    def at(series: list[float], end: int, f: Any = statistics.median) -> float:
        return float(f(_window(series, end)))

    n, b = flushes, baseline_flushes
    return {
        "flushes": n,
        "own_bytes_20": at(live["own"], 20),
        "own_bytes_n": at(live["own"], n),
        "own_bytes_ratio": at(live["own"], n) / at(live["own"], 20),
        "all_bytes_20_mean": at(live["total"], 20, statistics.mean),
        "all_bytes_n_mean": statistics.mean(live["total"][-1000:]),
        "flush_seconds_20": at(live["seconds"], 20),
        "flush_seconds_n": at(live["seconds"], n),
        "flush_seconds_ratio": at(live["seconds"], n) / at(live["seconds"], 20),
        "flush_seconds_n_mean_1000": statistics.mean(live["seconds"][-1000:]),
        "flush_seconds_max": max(live["seconds"]),
        "requests_per_flush_mean_1000": statistics.mean(live["requests"][-1000:]),
        "objects": live["segments"],
        "levels": live["levels"],
        "stored_checkpoints": live["stored_checkpoints"],
        "policy_checkpoints": live["policy_checkpoints"],
        "checkpoint_ratio": live["stored_checkpoints"] / live["policy_checkpoints"],
        "restore_seconds": restore_live,
        "restore_one_flush_seconds": restore_one,
        "restore_ratio": restore_live / restore_one,
        "baseline_flushes": b,
        "baseline_own_bytes_ratio": at(base["own"], b) / at(base["own"], 20),
        "baseline_flush_seconds_ratio": at(base["seconds"], b) / at(base["seconds"], 20),
        "baseline_objects": base["segments"],
        "baseline_checkpoint_ratio": base["stored_checkpoints"] / base["policy_checkpoints"],
    }


def on_seaweedfs(flushes: int) -> dict[str, Any]:
    """The live run on a real SeaweedFS over loopback (``--seaweed``)."""
    with (
        tempfile.TemporaryDirectory() as tmp,
        SeaweedFS(Path(tmp) / "weed") as server,
        aws_env(server),
    ):
        settings = {"endpoint_url": server.endpoint_url, "addressing_style": "path"}
        live = long_run(
            flushes,
            directory=f"{tmp}/live",
            url=server.url(server.make_bucket(), "scale"),
            settings=settings,
        )
        restore_live = _restore_time(live["reader"], "long")
        one_url = server.url(server.make_bucket(), "scale")
        restore_one = one_flush_restore(live["records"], tmp, one_url, settings)
    n = flushes
    return {
        "flushes": n,
        "own_bytes_ratio": statistics.median(_window(live["own"], n))
        / statistics.median(_window(live["own"], 20)),
        "flush_seconds_20": statistics.median(_window(live["seconds"], 20)),
        "flush_seconds_n": statistics.median(_window(live["seconds"], n)),
        "flush_seconds_n_mean_1000": statistics.mean(live["seconds"][-1000:]),
        "requests_per_flush_mean_1000": statistics.mean(live["requests"][-1000:]),
        "objects": live["segments"],
        "checkpoint_ratio": live["stored_checkpoints"] / live["policy_checkpoints"],
        "restore_seconds": restore_live,
        "restore_one_flush_seconds": restore_one,
        "restore_ratio": restore_live / restore_one,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--flushes", type=int, default=20_000)
    ap.add_argument("--baseline-flushes", type=int, default=2_000)
    ap.add_argument("--seaweed", type=int, metavar="FLUSHES", help="also a run on SeaweedFS")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.seaweed:
        real = on_seaweedfs(args.seaweed)
        print(json.dumps(real, indent=2) if args.json else _seaweed_text(real))
    got = measure(args.flushes, args.baseline_flushes)
    if args.json:
        print(json.dumps(got, indent=2))
        return 0
    n, b = got["flushes"], got["baseline_flushes"]
    print(f"one live run, a flush every 2 records, {n:,} flushes (file://)")
    print(
        f"  flush's own bytes (segment + head): {got['own_bytes_20']:,.0f} B at flush 20, "
        f"{got['own_bytes_n']:,.0f} B at flush {n:,}: {got['own_bytes_ratio']:.2f}x "
        f"(live compaction off, {b:,} flushes: {got['baseline_own_bytes_ratio']:.1f}x)"
    )
    print(
        f"  all bytes written per flush incl. live compaction: "
        f"{got['all_bytes_20_mean']:,.0f} B (flushes 1-20), "
        f"{got['all_bytes_n_mean']:,.0f} B (last 1,000)"
    )
    print(
        f"  flush time: {got['flush_seconds_20'] * 1e3:.2f} ms at 20, "
        f"{got['flush_seconds_n'] * 1e3:.2f} ms at {n:,}: {got['flush_seconds_ratio']:.2f}x "
        f"(off: {got['baseline_flush_seconds_ratio']:.1f}x); mean of the last 1,000 with "
        f"compaction {got['flush_seconds_n_mean_1000'] * 1e3:.2f} ms, "
        f"max {got['flush_seconds_max'] * 1e3:.1f} ms"
    )
    print(
        f"  requests per flush (mean of the last 1,000): {got['requests_per_flush_mean_1000']:.2f}"
    )
    print(
        f"  objects of the run: {got['objects']} (levels {got['levels']}); "
        f"off: {got['baseline_objects']} after {b:,} flushes"
    )
    print(
        f"  stored checkpoints {got['stored_checkpoints']} / whole-history policy "
        f"{got['policy_checkpoints']}: {got['checkpoint_ratio']:.2f}x "
        f"(off: {got['baseline_checkpoint_ratio']:.1f}x)"
    )
    print(
        f"  restore: {got['restore_seconds'] * 1e3:.0f} ms vs "
        f"{got['restore_one_flush_seconds'] * 1e3:.0f} ms for one flush: "
        f"{got['restore_ratio']:.2f}x"
    )
    return 0


def _seaweed_text(got: dict[str, Any]) -> str:
    n = got["flushes"]
    return (
        f"one live run on SeaweedFS (127.0.0.1), {n:,} flushes of 2 records:\n"
        f"  flush's own bytes at {n:,} / at 20: {got['own_bytes_ratio']:.2f}x; flush time "
        f"{got['flush_seconds_20'] * 1e3:.2f} ms at 20, {got['flush_seconds_n'] * 1e3:.2f} ms "
        f"at {n:,} (mean of the last 1,000 with compaction "
        f"{got['flush_seconds_n_mean_1000'] * 1e3:.2f} ms, "
        f"{got['requests_per_flush_mean_1000']:.2f} requests)\n"
        f"  objects {got['objects']}; stored/policy checkpoints {got['checkpoint_ratio']:.2f}x; "
        f"restore {got['restore_seconds'] * 1e3:.0f} ms vs "
        f"{got['restore_one_flush_seconds'] * 1e3:.0f} ms in one flush: {got['restore_ratio']:.2f}x"
    )


if __name__ == "__main__":
    raise SystemExit(main())
