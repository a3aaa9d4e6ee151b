"""SIGKILL a writer at each named fault point (``runarchive.faults``), restart, prove
nothing acknowledged is lost or duplicated, the archive verifies, and ``gc`` collects
what the crash left behind (docs/design.md, "Crash points")."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from support import CHILDREN
from support.backends import Backend, open_backend

from runarchive import Archive, Policy, Reader
from runarchive.faults import POINTS

CHILD = CHILDREN / "crash_points_child.py"
S3 = pytest.mark.real_server
pytestmark = pytest.mark.slow  # a child process SIGKILLed and restarted per case

# (fault point spec, child mode, the child's last STEP line before the kill)
CASES = [
    pytest.param("flush.after_segment_put:2", "write", "STEP flush", marks=S3),
    pytest.param("flush.after_index_put:2", "write", "STEP flush", marks=S3),
    pytest.param("flush.after_cache_mark:2", "write", "STEP flush", marks=S3),
    # 1st manifest write: listing the run at its first flush.
    pytest.param("manifest.before_put:1", "write", "STEP flush", marks=S3),
    pytest.param("manifest.after_put:1", "write", "STEP flush", marks=S3),
    # 2nd: finish() has added the run to `done`, not yet removed it from `active`.
    pytest.param("manifest.after_put:2", "write", "STEP complete", marks=S3),
    pytest.param("multipart.after_part", "multipart", "STEP multipart", marks=S3),
    pytest.param("compact.after_segments", "compact", "STEP compact"),
    pytest.param("compact.after_index", "compact", "STEP compact"),
    pytest.param("gc.after_delete", "gc", "STEP gc"),
    # Encrypted: a retried sealed flush must re-create the same bytes (same key), and
    # a re-encrypting compaction must be repeatable.
    pytest.param("flush.after_segment_put:2", "sealed", "STEP flush", marks=S3),
    pytest.param("compact.after_segments", "sealed-compact", "STEP compact"),
    # Live compaction (a flush every 2 records, fanout 2): killed after the merged
    # segment's PUT (the index does not name it yet), or after the head that names it.
    pytest.param("live.after_segment_put:3", "live", "STEP flush", marks=S3),
    pytest.param("live.after_index_put:3", "live", "STEP flush", marks=S3),
]
BACKEND = {
    "write": "seaweedfs",
    "multipart": "seaweedfs",
    "compact": "file",
    "gc": "file",
    "sealed": "seaweedfs",
    "sealed-compact": "file",
    "live": "seaweedfs",
}
KEYS = {"encryption_keys": "k1=" + "B" * 43 + "="}
RECORDS = 30
MiB = 1024 * 1024


def test_every_fault_point_is_exercised() -> None:
    specs = {str(c.values[0]).split(":")[0] for c in CASES}
    assert specs == POINTS


def _settings(backend: Backend, mode: str, cache_dir: Path) -> dict[str, Any]:
    settings: dict[str, Any] = {**backend.settings, "cache_dir": str(cache_dir)}
    if mode == "multipart":
        settings |= {"multipart_threshold": 5 * MiB, "multipart_part_size": 5 * MiB}
    if mode == "gc":
        settings["check_conditional_writes"] = False  # no probe objects: gc deletes segments
    if mode.startswith("sealed"):
        settings |= {"encryption": "local", **KEYS}
    if mode == "live":
        settings["compaction_fanout"] = 2
    return settings


def _reader(backend: Backend, mode: str) -> Reader:
    keys = KEYS if mode.startswith("sealed") else {}
    return Reader.open(backend.url, **backend.settings, **keys)  # type: ignore[arg-type]


@pytest.mark.parametrize(("spec", "mode", "last_step"), CASES)
def test_sigkill_at_fault_point(
    spec: str, mode: str, last_step: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    gen = open_backend(BACKEND[mode], request, tmp_path)
    backend = next(gen)
    try:
        _crash_and_recover(backend, spec, mode, last_step)
        if mode == "multipart":
            # The killed upload's parts: invisible to LIST and to gc (docs/design.md).
            bucket = backend.url.removeprefix("s3://").split("/")[0]
            ups = request.getfixturevalue("seaweed").client().list_multipart_uploads(Bucket=bucket)
            print(f"incomplete multipart uploads left: {len(ups.get('Uploads', []))}")
    finally:
        next(gen, None)


def _crash_and_recover(backend: Backend, spec: str, mode: str, last_step: str) -> None:
    run_id = "crash-" + spec.replace(".", "-").replace(":", "-").replace("_", "-")
    cache_dir = backend.tmp / "child-cache"
    doc = {
        "url": backend.url,
        "settings": _settings(backend, mode, cache_dir),
        "run_id": run_id,
        "mode": mode,
        "records": RECORDS,
    }
    env = {**os.environ, "RUNARCHIVE_FAULT_POINT": spec}
    proc = subprocess.run(
        [sys.executable, str(CHILD), json.dumps(doc)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    lines = proc.stdout.splitlines()
    # Died by SIGKILL, and only the fault point sends one: it died there.
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr[-3000:])
    assert "DONE" not in lines
    steps = [ln for ln in lines if ln.startswith("STEP ")]
    assert steps[-1] == last_step, steps
    acked = [int(ln.split()[1]) for ln in lines if ln.startswith("ACK ")]
    assert acked == list(range(1, len(acked) + 1))

    # What the crash left in the bucket is sound: warnings (orphans, a lagging
    # manifest) at most, never an error.
    reader = _reader(backend, mode)
    try:
        before = reader.verify()
    finally:
        reader.close()
    assert before.ok, [str(p) for p in before.problems]

    # Restart on the same cache: the backlog drains; the run is ended if it was not.
    keep_all: dict[str, Any] = {"policy": Policy(keep_all=True)}
    archive = Archive.open(backend.url, **_settings(backend, mode, cache_dir), **keep_all)
    try:
        row = archive.cache.run(run_id)
        assert row is not None
        if row.status == "running":
            archive.run(run_id).complete({"records": RECORDS})
        archive.flush()
        assert archive.cache.runs_needing_flush() == []
        after_restart = archive.verify()
        assert after_restart.ok, [str(p) for p in after_restart.problems]
        gc_objects = archive.gc(grace=0).plan.objects
        clean = archive.verify()
        assert clean.problems == [], [str(p) for p in clean.problems]
        if mode in ("compact", "gc", "sealed-compact"):
            # The interrupted compaction / gc can be run again to its end.
            archive.compact(run_id)
            gc_objects += archive.gc(grace=0).plan.objects
            again = archive.verify()
            assert again.problems == [], [str(p) for p in again.problems]
    finally:
        archive.close()

    reader = _reader(backend, mode)
    try:
        restored = reader.restore(run_id)
        entry = reader.manifest.lookup([run_id]).get(run_id)
    finally:
        reader.close()
    seqs = [r.seq for r in restored.records]
    lost = sorted(set(acked) - set(seqs))
    duplicated = len(seqs) - len(set(seqs))
    assert lost == []
    assert duplicated == 0
    assert seqs == list(range(1, len(seqs) + 1))
    for rec in restored.records:
        body: Any = getattr(rec, "state", None) or getattr(rec, "data", None)
        if mode == "multipart" and rec.seq == seqs[-1]:
            assert len(body["blob"]) == 8 * MiB
        else:
            assert body["i"] == rec.seq
    assert restored.index.status == "completed"
    if mode.startswith("sealed"):
        assert restored.index.keys
        assert all(s.dek for s in restored.index.segments)
    # gc forgot every retired segment it deleted, even those a killed gc deleted.
    assert restored.index.retired == ()
    # Each orphan the crash left was either adopted by the retried flush (same range,
    # same bytes, same key: the retry's create-only PUT got 412) or collected by gc.
    left = {p.key for p in before.problems if p.kind == "orphan"}
    adopted = left & {s.key for s in restored.index.segments}
    swept = {d.key for d in gc_objects if d.why in ("orphan", "no-index")}
    assert left <= adopted | swept
    collected = Counter(d.why for d in gc_objects)
    assert entry is not None
    assert entry.status == "completed"
    orphans = {k: v for k, v in collected.items() if k != "probe"}
    print(
        f"\nPOINT {spec}: acked {len(acked)} restored {len(seqs)} lost {len(lost)} "
        f"duplicated {duplicated} warnings-before-restart "
        f"{Counter(p.kind for p in before.problems)} adopted {len(adopted)} gc {dict(orphans)}"
    )


def test_gc_forgets_retired_segments_a_killed_gc_already_deleted(tmp_path: Path) -> None:
    # Found by gc.after_delete: a gc killed between its DELETEs and the index update
    # left retired entries naming deleted objects; the next gc never listed them, so
    # the index kept them forever.
    url = (tmp_path / "bucket").as_uri()
    with Archive.open(url, cache_dir=tmp_path / "c", policy=Policy(keep_all=True)) as archive:
        run = archive.start_run(agent="a", run_id="r")
        for i in range(3):
            run.checkpoint("s", {"i": i})
            archive.flush()
        run.complete()
        archive.flush()
        archive.compact("r")
        retired = archive.index("r").retired
        assert len(retired) == 3
        archive.store.delete(retired[0].key)  # what the killed gc managed to do
        assert archive.gc(grace=0, dry_run=True).plan.forget == [retired[0].key]
        archive.gc(grace=0)
        assert archive.index("r").retired == ()
        assert archive.verify().problems == []
