"""Benchmark of the compliance tools: compaction on the demo workload, verify and export.

Starts its own SeaweedFS (``tests/support/servers.py``) and measures in one process:

1. the ``runarchive demo`` workload (4 runs x 300 steps, growing transcripts, default
   policy and flush triggers): objects and bytes in the bucket before compaction,
   after ``compact --all`` (what the indexes reference), and after ``gc`` removed the
   retired segments; restore still returns every event;
2. ``verify`` of a 10,000-record run, against ``Reader.restore`` of the same run
   (the baseline: it GETs and checks the same segments);
3. ``export`` of that run to a ``.tar`` and ``verify_export`` of the bundle, against
   the same restore.
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import S3Server, kib, run_bench, warm_bucket

from runarchive import Archive, Reader
from runarchive.cli.demo import _simulate
from runarchive.compliance.export import verify_export

TARGET_VERIFY = 2.0  # verify / restore of the same run
TARGET_COMPACT_OBJECTS = 0.5  # live segment objects after / before compaction


def open_archive(server: S3Server, bucket: str, cache: Path, **extra: Any) -> Archive:
    return Archive.open(
        server.url(bucket, "a"),
        cache_dir=cache,
        endpoint_url=server.endpoint_url,
        addressing_style="path",
        **extra,
    )


def bucket_totals(archive: Archive) -> tuple[int, int]:
    metas = [m for m in archive.store.list("runs/") if "/seg/" in m.key]
    return len(metas), sum(m.size for m in metas)


def bench_compaction(server: S3Server, tmp: Path, runs: int, steps: int) -> dict[str, Any]:
    bucket = server.make_bucket("cmp-demo")
    warm_bucket(server, bucket)
    archive = open_archive(server, bucket, tmp / "demo")
    rng = random.Random(7)
    ids = [_simulate(archive, rng, f"agent-{i}", steps, crash=i == runs - 1) for i in range(runs)]
    archive.flush()
    events_before = {r: len(archive.restore(r).events) for r in ids}
    before = bucket_totals(archive)
    checkpoints_before = sum(len(archive.restore(r).checkpoints) for r in ids)
    t = time.perf_counter()
    results = archive.compact()
    compact_s = time.perf_counter() - t
    indexes = [archive.index(r) for r in ids]
    referenced = (sum(len(i.segments) for i in indexes), sum(i.stored_bytes for i in indexes))
    t = time.perf_counter()
    gc = archive.gc(grace=0)
    gc_s = time.perf_counter() - t
    after = bucket_totals(archive)
    events_after = {r: len(archive.restore(r).events) for r in ids}
    checkpoints_after = sum(len(archive.restore(r).checkpoints) for r in ids)
    ok = archive.verify().ok
    archive.close()
    return {
        "runs": runs,
        "steps": steps,
        "compacted": sum(r.done for r in results),
        "objects_before": before[0],
        "bytes_before": before[1],
        "objects_referenced_after": referenced[0],
        "bytes_referenced_after": referenced[1],
        "objects_after_gc": after[0],
        "bytes_after_gc": after[1],
        "gc_deleted": len(gc.deleted),
        "checkpoints_before": checkpoints_before,
        "checkpoints_after": checkpoints_after,
        "events_unchanged": events_before == events_after,
        "verify_ok": ok,
        "compact_s": compact_s,
        "gc_s": gc_s,
    }


def bench_verify_export(server: S3Server, tmp: Path, records: int, repeats: int) -> dict[str, Any]:
    bucket = server.make_bucket("cmp-verify")
    warm_bucket(server, bucket)
    archive = open_archive(server, bucket, tmp / "verify")
    run = archive.start_run(agent="big", run_id="big")
    messages: list[dict[str, str]] = []
    for i in range(records):
        if i % 4 == 3:
            run.event("tool", {"i": i, "out": "result " * 10})
        else:
            messages = [*messages[-30:], {"role": "assistant", "content": f"step {i} " * 12}]
            run.checkpoint(("plan", "act", "observe")[i % 3], {"messages": messages, "i": i})
    run.complete()
    index = archive.index("big")
    archive.close()
    url = server.url(bucket, "a")
    settings = {"endpoint_url": server.endpoint_url, "addressing_style": "path"}
    verify_s, restore_s, export_s, vexp_s, size = [], [], [], [], 0
    for r in range(repeats):
        with Reader.open(url, **settings) as reader:  # type: ignore[arg-type]
            t = time.perf_counter()
            report = reader.verify("big")
            verify_s.append(time.perf_counter() - t)
            assert report.ok
            assert report.records == sum(s.records for s in index.segments)
            t = time.perf_counter()
            restored = reader.restore("big")
            restore_s.append(time.perf_counter() - t)
            assert restored.index.last_seq == records
            dest = Path(tempfile.mkdtemp(dir=tmp)) / f"audit{r}.tar"
            t = time.perf_counter()
            reader.export(["big"], dest=dest)
            export_s.append(time.perf_counter() - t)
            size = dest.stat().st_size
            t = time.perf_counter()
            problems = verify_export(str(dest))
            vexp_s.append(time.perf_counter() - t)
            assert problems == []
    med = statistics.median
    return {
        "records": records,
        "segments": len(index.segments),
        "stored_bytes": index.stored_bytes,
        "raw_bytes": index.raw_bytes,
        "verify_s": med(verify_s),
        "restore_s": med(restore_s),
        "verify_ratio": med(verify_s) / med(restore_s),
        "export_s": med(export_s),
        "export_ratio": med(export_s) / med(restore_s),
        "verify_export_s": med(vexp_s),
        "bundle_bytes": size,
    }


def measure(server: S3Server, tmp: Path, quick: bool) -> tuple[str, dict[str, Any]]:
    t0 = time.perf_counter()
    comp = bench_compaction(server, tmp, 4, 100 if quick else 300)
    ver = bench_verify_export(server, tmp, 2000 if quick else 10_000, 3)
    total = time.perf_counter() - t0
    out: list[str] = ["runarchive compliance benchmark", "=" * 80, ""]
    w = out.append
    w(f"1. demo workload: {comp['runs']} runs x {comp['steps']} steps, default policy")
    w(f"   {'':28} {'segment objects':>16} {'bytes':>14}")
    w(f"   {'before compaction':28} {comp['objects_before']:>16} {comp['bytes_before']:>14,}")
    w(
        f"   {'referenced after compact':28} {comp['objects_referenced_after']:>16} "
        f"{comp['bytes_referenced_after']:>14,}"
    )
    w(
        f"   {'in the bucket after gc':28} {comp['objects_after_gc']:>16} "
        f"{comp['bytes_after_gc']:>14,}"
    )
    w(
        f"   checkpoints archived {comp['checkpoints_before']} -> {comp['checkpoints_after']}; "
        f"events unchanged: {comp['events_unchanged']}; verify after: "
        f"{'ok' if comp['verify_ok'] else 'FAILED'}; compact {comp['compact_s']:.2f} s, "
        f"gc {comp['gc_s']:.2f} s ({comp['gc_deleted']} objects deleted)"
    )
    w("")
    w(
        f"2./3. a {ver['records']:,}-record run: {ver['segments']} segments, "
        f"{kib(ver['stored_bytes'])} stored, {kib(ver['raw_bytes'])} JSON; median of 3"
    )
    w(f"   verify          {ver['verify_s']:.3f} s   = {ver['verify_ratio']:.2f}x restore")
    w(f"   restore         {ver['restore_s']:.3f} s   (baseline)")
    w(
        f"   export (.tar)   {ver['export_s']:.3f} s   = {ver['export_ratio']:.2f}x restore; "
        f"bundle {kib(ver['bundle_bytes'])}"
    )
    w(f"   verify-export   {ver['verify_export_s']:.3f} s")
    w("")
    ratio = comp["objects_after_gc"] / max(comp["objects_before"], 1)
    targets = {
        f"verify <= {TARGET_VERIFY:.1f}x restore": ver["verify_ratio"] <= TARGET_VERIFY,
        f"segment objects after gc <= {TARGET_COMPACT_OBJECTS:.0%} of before": (
            ratio <= TARGET_COMPACT_OBJECTS
        ),
        "events unchanged and verify ok after compaction": (
            comp["events_unchanged"] and comp["verify_ok"]
        ),
    }
    w("targets")
    for label, ok in targets.items():
        w(f"  {'PASS' if ok else 'MISS'}  {label}")
    w(f"total {total:.1f} s")
    return "\n".join(out), {"compaction": comp, "verify_export": ver, "targets": targets}


if __name__ == "__main__":
    sys.exit(run_bench(__doc__.splitlines()[0] if __doc__ else "", measure))
