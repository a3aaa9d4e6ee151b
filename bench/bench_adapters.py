"""Benchmark of the compat adapters against the archive API they sit on.

Starts its own SeaweedFS (``tests/support/servers.py``), measures in one process, prints a
table and a targets section. Every figure is a ratio against a baseline measured in
the same run on the same bucket:

1. append: ``CheckpointManager.create`` / ``ArchiveCheckpointer.save_event`` vs
   ``run.checkpoint`` / ``run.event`` on the same archive, interleaved per step.
2. requests and stored bytes for 1,000 manager checkpoints (keep-all policy) vs the
   same workload through a run with the default policy.
3. reopening a session of N checkpoints on a fresh host (resume + replay of the
   compression) vs ``Reader.restore`` of the same run; ``list_events`` of N events
   on a fresh host vs ``restore``.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

from common import S3Server, pct, run_bench, warm_bucket

from runarchive import Archive, Reader
from runarchive.compat.eventstore import ArchiveCheckpointer
from runarchive.compat.manager import CheckpointManager

NAMES = ("plan", "act", "observe", "reflect", "tool", "answer", "wait")
TARGET_APPEND = 1.3  # adapter p50 / archive p50
TARGET_REOPEN = 4.0  # reopen (resume + replay) / restore


def state(i: int) -> dict[str, Any]:
    return {"step": i, "messages": [{"role": "user", "content": f"msg {j} " * 8} for j in range(8)]}


def open_archive(server: S3Server, bucket: str, cache: Path, **extra: Any) -> Archive:
    return Archive.open(
        server.url(bucket, "a"),
        cache_dir=cache,
        endpoint_url=server.endpoint_url,
        addressing_style="path",
        **extra,
    )


def timed(fn: Any) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1000


def bench_append(server: S3Server, tmp: Path, samples: int) -> dict[str, Any]:
    bucket = server.make_bucket("ad-append")
    warm_bucket(server, bucket)
    archive = open_archive(server, bucket, tmp / "append")
    mgr = CheckpointManager("bench-session", archive=archive)
    es = ArchiveCheckpointer(archive)
    run = archive.start_run(agent="baseline")
    ms: dict[str, list[float]] = {k: [] for k in ("create", "checkpoint", "save_event", "event")}
    for i in range(samples + 20):
        name, st = NAMES[i % len(NAMES)], state(i)
        ev = {"run_id": "bench-events", "seq": i + 1, "kind": "tool", "data": {"i": i}}
        calls = [
            ("create", lambda n=name, s=st: mgr.create(n, s)),
            ("checkpoint", lambda n=name, s=st: run.checkpoint(n, s)),
            ("save_event", lambda e=ev: es.save_event(e)),
            ("event", lambda e=ev: run.event("tool", e)),
        ]
        for key, fn in calls[i % 2 :] + calls[: i % 2]:  # alternate who goes first
            t = timed(fn)
            if i >= 20:
                ms[key].append(t)
    archive.close()
    p50 = {k: statistics.median(v) for k, v in ms.items()}
    return {
        "samples": samples,
        "p50_ms": p50,
        "p99_ms": {k: pct(v, 99) for k, v in ms.items()},
        "create_ratio": p50["create"] / p50["checkpoint"],
        "save_event_ratio": p50["save_event"] / p50["event"],
    }


def bench_requests(server: S3Server, tmp: Path, n: int) -> dict[str, Any]:
    out: dict[str, Any] = {"checkpoints": n}
    for label in ("manager", "baseline"):
        bucket = server.make_bucket(f"ad-req-{label}")
        warm_bucket(server, bucket)
        archive = open_archive(server, bucket, tmp / f"req-{label}")
        before = archive.store.total
        if label == "manager":
            mgr = CheckpointManager("req-session", archive=archive)
            for i in range(n):
                mgr.create(NAMES[i % len(NAMES)], state(i))
            run_id = mgr.run_id
        else:
            run = archive.start_run(agent="baseline")
            for i in range(n):
                run.checkpoint(NAMES[i % len(NAMES)], state(i))
            run_id = run.run_id
        archive.flush()
        requests = archive.store.total - before
        index = archive.index(run_id)
        out[label] = {
            "requests": requests,
            "stored_bytes": index.stored_bytes,
            "raw_bytes": index.raw_bytes,
            "archived_checkpoints": sum(s.checkpoints for s in index.segments),
        }
        archive.close()
    return out


def bench_reopen(server: S3Server, tmp: Path, n: int, repeats: int) -> dict[str, Any]:
    bucket = server.make_bucket("ad-reopen")
    warm_bucket(server, bucket)
    writer = open_archive(server, bucket, tmp / "reopen-writer")
    mgr = CheckpointManager("big-session", archive=writer)
    es = ArchiveCheckpointer(writer)
    for i in range(n):
        mgr.create(NAMES[i % len(NAMES)], state(i))
        es.save_event({"run_id": "big-events", "seq": i + 1, "kind": "tool", "data": {"i": i}})
    expected = mgr.export()
    writer.close()

    reopen, restore, events, restore_events = [], [], [], []
    for r in range(repeats):
        host = open_archive(server, bucket, tmp / f"reopen-host{r}")
        t = time.perf_counter()
        again = CheckpointManager("big-session", archive=host)
        reopen.append(time.perf_counter() - t)
        assert again.export() == expected, "the reopened manager differs"
        t = time.perf_counter()
        got = ArchiveCheckpointer(host).list_events("big-events")
        events.append(time.perf_counter() - t)
        assert len(got) == n
        host.close()
        reader = Reader.open(
            server.url(bucket, "a"), endpoint_url=server.endpoint_url, addressing_style="path"
        )
        t = time.perf_counter()
        reader.restore("big-session")
        restore.append(time.perf_counter() - t)
        t = time.perf_counter()
        reader.restore("big-events")
        restore_events.append(time.perf_counter() - t)
        reader.close()
    return {
        "checkpoints": n,
        "reopen_s": statistics.median(reopen),
        "restore_s": statistics.median(restore),
        "reopen_ratio": statistics.median(reopen) / statistics.median(restore),
        "list_events_s": statistics.median(events),
        "restore_events_s": statistics.median(restore_events),
        "list_events_ratio": statistics.median(events) / statistics.median(restore_events),
    }


def measure(server: S3Server, tmp: Path, quick: bool) -> tuple[str, dict[str, Any]]:
    t0 = time.perf_counter()
    app = bench_append(server, tmp, 200 if quick else 1000)
    req = bench_requests(server, tmp, 1000)
    rop = bench_reopen(server, tmp, 2000 if quick else 10_000, 3)
    total = time.perf_counter() - t0
    lines = ["runarchive adapters benchmark", "=" * 80, ""]
    w = lines.append
    w(f"1. append latency, {app['samples']} samples each, interleaved (ms)")
    for key, label in (
        ("create", "CheckpointManager.create"),
        ("checkpoint", "  baseline run.checkpoint"),
        ("save_event", "ArchiveCheckpointer.save_event"),
        ("event", "  baseline run.event"),
    ):
        w(f"  {label:<34} p50 {app['p50_ms'][key]:7.3f}   p99 {app['p99_ms'][key]:7.3f}")
    w(f"  ratio create / checkpoint p50: {app['create_ratio']:.2f}x")
    w(f"  ratio save_event / event p50:  {app['save_event_ratio']:.2f}x")
    w("")
    w(f"2. {req['checkpoints']} checkpoints: requests and bytes (flushed, open probe excluded)")
    for label in ("manager", "baseline"):
        r = req[label]
        w(
            f"  {label:<9} {r['requests']:4d} requests  archived {r['archived_checkpoints']:5d}"
            f"  stored {r['stored_bytes']:>9,d} B = {100 * r['stored_bytes'] / r['raw_bytes']:.2f}%"
            f" of {r['raw_bytes']:,d} B raw"
        )
    w("  (manager: every checkpoint kept, keep_all; baseline: the default policy)")
    w("")
    w(f"3. fresh host, {rop['checkpoints']} records, median of 3")
    w(
        f"  CheckpointManager(session) reopen  {rop['reopen_s']:.3f} s   vs Reader.restore "
        f"{rop['restore_s']:.3f} s  = {rop['reopen_ratio']:.2f}x"
    )
    w(
        f"  list_events(run_id)                 {rop['list_events_s']:.3f} s   vs Reader.restore "
        f"{rop['restore_events_s']:.3f} s  = {rop['list_events_ratio']:.2f}x"
    )
    w("")
    targets = [
        (
            f"create p50 <= {TARGET_APPEND:.1f}x run.checkpoint",
            app["create_ratio"] <= TARGET_APPEND,
        ),
        (
            f"save_event p50 <= {TARGET_APPEND:.1f}x run.event",
            app["save_event_ratio"] <= TARGET_APPEND,
        ),
        (f"manager reopen <= {TARGET_REOPEN:.1f}x restore", rop["reopen_ratio"] <= TARGET_REOPEN),
        (f"list_events <= {TARGET_REOPEN:.1f}x restore", rop["list_events_ratio"] <= TARGET_REOPEN),
    ]
    w("targets")
    for label, ok in targets:
        w(f"  {'PASS' if ok else 'MISS'}  {label}")
    w(f"total {total:.1f} s")
    payload = {"append": app, "requests": req, "reopen": rop, "targets": dict(targets)}
    return "\n".join(lines), payload


if __name__ == "__main__":
    sys.exit(run_bench(__doc__.splitlines()[0] if __doc__ else "", measure))
