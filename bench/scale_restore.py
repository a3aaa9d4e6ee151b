"""Peak memory of reading a long run back (issue 13, last row of the targets table).

Writes runs of small records (≈ 170 bytes of JSON each, nine events for one
checkpoint; ≈ 9 times smaller compressed) into a ``file://`` archive in a temporary
directory, segment by segment with the writer's own encoding (``segment_header``,
``encode_segment``, the hash chain, the index as the writer dumps it; a test checks
that ``verify`` finds nothing wrong with it), then measures, each in a fresh child
process (peak RSS = ``VmHWM`` of ``/proc/self/status``; ``ru_maxrss`` would carry the
parent's peak across ``exec``):

* **baseline**: a child that imports runarchive, opens the ``Reader`` and reads the
  run's index (everything a restore needs before its first segment);
* ``Reader.iter_records`` consuming 1,000,000 records, with the writer's default
  segments (4,096 records, ≈ 0.7 MB of JSON: decoded once, held while yielded) and
  with large ones (65,536 records, ≈ 11 MB: checked in a first pass, parsed again
  while yielded);
* ``Reader.restore`` of a 200,000-record run and of the 1,000,000-record one;
* with ``--compare-src DIR``: the same restores with another checkout's
  ``src`` (e.g. ``/work/main/src`` before this change), for a before/after in one run.

Target: iter_records of 1,000,000 records peaks at ≤ 256 MB RSS. Each child also
checks what it read (count, strictly increasing seqs, the last seq). About 1.5 minutes
on 2 idle cores (``--quick``: 100,000 records, ≈ 20 s). Run:
``.venv/bin/python bench/scale_restore.py [--quick] [--json PATH] [--compare-src DIR]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
sys.path.insert(0, str(SRC))

from runarchive.format.codec import (  # noqa: E402
    encode_segment,
    index_key,
    segment_header,
    segment_key,
)
from runarchive.format.model import RunIndex, SegmentRef, format_ts  # noqa: E402

MB = 1_000_000
TARGET_MB = 256
BIG, SMALL = 1_000_000, 200_000
DEFAULT_SEGMENT, LARGE_SEGMENT = 4096, 65_536

CHILD = r"""
import json, sys, time
doc = json.loads(sys.argv[1])
from runarchive import Reader
out = {}
t0 = time.perf_counter()
with Reader.open(doc["url"]) as reader:
    if doc["op"] == "baseline":
        out["segments"] = len(reader.index(doc["run"]).segments)
    else:
        if doc["op"] == "iter":
            records = reader.iter_records(doc["run"])
        else:
            records = iter(reader.restore(doc["run"]).records)
        count, last = 0, 0
        for rec in records:
            if rec.seq <= last:
                raise SystemExit(f"seq {rec.seq} after {last}")
            count, last = count + 1, rec.seq
        out.update(records=count, last_seq=last)
out["seconds"] = time.perf_counter() - t0
with open("/proc/self/status") as status:
    fields = dict(line.split(":", 1) for line in status)
out["peak_rss_mb"] = int(fields["VmHWM"].split()[0]) * 1024 / 1e6
print(json.dumps(out))
"""


def _call_id(seq: int) -> str:
    return hashlib.blake2b(seq.to_bytes(8, "big"), digest_size=8).hexdigest()


def _records(run_id: str, first: int, last: int, t0: datetime) -> list[bytes]:
    """Small records ``first..last``: a checkpoint every 10th seq, events otherwise."""
    lines = []
    for seq in range(first, last + 1):
        ts = format_ts(t0 + timedelta(milliseconds=seq))
        if seq % 10 == 1:
            doc: dict[str, Any] = {
                "run": run_id,
                "seq": seq,
                "ts": ts,
                "type": "checkpoint",
                "name": "plan",
                "metadata": {},
                "state": {"step": seq // 10, "done": seq % 7 == 0},
            }
        else:
            doc = {
                "run": run_id,
                "seq": seq,
                "ts": ts,
                "type": "event",
                "kind": "llm_call" if seq % 3 else "tool_call",
                "lane": "main",
                # A call id as agents log them: 16 hex digits that do not compress.
                "data": {"step": seq // 10, "tokens": 600 + seq % 97, "call": _call_id(seq)},
            }
        lines.append(orjson.dumps(doc))
    return lines


def write_run(root: Path, run_id: str, records: int, per_segment: int) -> RunIndex:
    """A completed run of ``records`` small records in segments of ``per_segment``,
    encoded as the writer encodes them, and its index."""
    t0 = datetime(2026, 12, 1, tzinfo=UTC)
    refs: list[SegmentRef] = []
    prev: str | None = None
    for first in range(1, records + 1, per_segment):
        last = min(first + per_segment - 1, records)
        lines = _records(run_id, first, last, t0)
        enc = encode_segment(lines, 3, segment_header(run_id, first, last, len(lines), prev))
        key = segment_key(run_id, first, last, enc.sha256)
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(enc.body)
        checkpoints = sum(1 for seq in range(first, last + 1) if seq % 10 == 1)
        refs.append(
            SegmentRef(
                key=key,
                first_seq=first,
                last_seq=last,
                records=len(lines),
                checkpoints=checkpoints,
                events=len(lines) - checkpoints,
                stored_bytes=len(enc.body),
                raw_bytes=enc.raw_bytes,
                sha256=enc.sha256,
                first_ts=t0 + timedelta(milliseconds=first),
                last_ts=t0 + timedelta(milliseconds=last),
                prev_sha256=prev,
            )
        )
        prev = enc.sha256
    now = datetime.now(UTC)
    index = RunIndex(
        run_id=run_id,
        agent="bench",
        status="completed",
        created_at=t0,
        updated_at=now,
        ended_at=now,
        last_seq=records,
        segments=tuple(refs),
        chain_head=prev,
        epoch=1,
    )
    (root / index_key(run_id)).write_text(index.model_dump_json())
    return index


def child(url: str, op: str, run_id: str, src: Path = SRC) -> dict[str, Any]:
    """Run ``op`` (``baseline``, ``iter``, ``restore``) in a fresh interpreter with
    ``src`` first on its path; its figures."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNARCHIVE_")}
    env["PYTHONPATH"] = str(src)
    doc = {"url": url, "op": op, "run": run_id}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(doc)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{op} {run_id} failed: {proc.stderr.strip()[-2000:]}")
    got: dict[str, Any] = json.loads(proc.stdout)
    return got


def measure(*, quick: bool = False, compare_src: Path | None = None) -> dict[str, Any]:
    """Write the runs, measure every case; the figures as a dict (MB = 10^6 bytes)."""
    big, small = (BIG // 10, SMALL // 10) if quick else (BIG, SMALL)
    out: dict[str, Any] = {"records": big, "target_mb": TARGET_MB, "cases": {}}
    with tempfile.TemporaryDirectory(prefix="scale-restore-") as tmp:
        root = Path(tmp) / "archive"
        root.mkdir()
        url = root.as_uri()
        started = time.perf_counter()
        runs = {
            "default": write_run(root, "run-default", big, DEFAULT_SEGMENT),
            "large": write_run(root, "run-large", big, LARGE_SEGMENT),
            "small": write_run(root, "run-small", small, DEFAULT_SEGMENT),
        }
        out["write_seconds"] = time.perf_counter() - started
        out["runs"] = {
            name: {
                "run_id": index.run_id,
                "records": index.last_seq,
                "segments": len(index.segments),
                "raw_mb": index.raw_bytes / MB,
                "stored_mb": index.stored_bytes / MB,
            }
            for name, index in runs.items()
        }
        cases = [
            ("baseline", "baseline", "default", SRC),
            (f"iter_records {big:,} (4,096-record segments)", "iter", "default", SRC),
            (f"iter_records {big:,} (65,536-record segments)", "iter", "large", SRC),
            (f"restore {small:,}", "restore", "small", SRC),
            (f"restore {big:,}", "restore", "default", SRC),
        ]
        if compare_src is not None:
            cases += [
                (f"restore {small:,} [{compare_src}]", "restore", "small", compare_src),
                (f"restore {big:,} [{compare_src}]", "restore", "default", compare_src),
            ]
        for name, op, run, src in cases:
            got = child(url, op, runs[run].run_id, src)
            want = runs[run].last_seq
            if op != "baseline" and (got["records"], got["last_seq"]) != (want, want):
                raise RuntimeError(f"{name}: read {got}, expected {want} records")
            out["cases"][name] = got
    base = out["cases"]["baseline"]["peak_rss_mb"]
    for got in out["cases"].values():
        got["over_baseline_mb"] = got["peak_rss_mb"] - base
    iters = [v for k, v in out["cases"].items() if k.startswith("iter_records")]
    out["iter_peak_mb"] = max(v["peak_rss_mb"] for v in iters)
    out["pass"] = out["iter_peak_mb"] <= TARGET_MB
    return out


def report(result: dict[str, Any]) -> str:
    """The figures as a table and the target line."""
    rows = [
        f"run {name}: {run['records']:,} records, {run['segments']} segments, "
        f"{run['raw_mb']:.0f} MB of JSON, {run['stored_mb']:.1f} MB stored"
        for name, run in result["runs"].items()
    ]
    rows += [
        f"written in {result['write_seconds']:.1f} s",
        "",
        f"{'case':<52} {'peak RSS':>10} {'over base':>10} {'time':>8}",
    ]
    for name, got in result["cases"].items():
        rows.append(
            f"{name:<52} {got['peak_rss_mb']:>7.0f} MB {got['over_baseline_mb']:>7.0f} MB "
            f"{got['seconds']:>6.1f} s"
        )
    verdict = "PASS" if result["pass"] else "MISS"
    rows += [
        "",
        f"target: iter_records of {result['records']:,} records peaks at "
        f"{result['iter_peak_mb']:.0f} MB RSS (goal <= {TARGET_MB} MB): {verdict}",
    ]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """Command line: measure, print, optionally write JSON. Exit 0 even on a miss."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="100,000 records")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument(
        "--compare-src", metavar="DIR", type=Path, help="also restore with this src/"
    )
    args = parser.parse_args(argv)
    result = measure(quick=args.quick, compare_src=args.compare_src)
    print(report(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
