"""gc: retired and orphan segments after the grace period, runs past their retention."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import orjson
import pytest
from support.backends import Backend, abandon

from runarchive import Archive
from runarchive.format.codec import index_key
from runarchive.store import MemoryStore


def seg_keys(archive: Archive, run_id: str) -> list[str]:
    return sorted(m.key for m in archive.store.list(f"runs/{run_id}/seg/"))


def finished(archive: Archive, run_id: str, n: int = 40) -> None:
    run = archive.start_run(agent="g", run_id=run_id)
    for i in range(n):
        run.checkpoint(("a", "b")[i % 2], {"i": i})
    run.complete()


def test_retired_segments_go_after_the_grace_period(backend: Backend) -> None:
    archive = backend.open(flush_records=5)
    finished(archive, "r")
    archive.compact("r")
    index = archive.index("r")
    assert len(index.retired) > 1
    kept = archive.gc()  # default grace (1 hour): everything is too young
    assert kept.plan.objects == []
    assert len(seg_keys(archive, "r")) == len(index.retired) + len(index.segments)

    dry = archive.gc(grace=0, dry_run=True)
    assert sorted(d.key for d in dry.plan.objects) == sorted(r.key for r in index.retired)
    assert dry.deleted == []
    report = archive.gc(grace=0)
    assert sorted(report.deleted) == sorted(r.key for r in index.retired)
    assert {d.why for d in report.plan.objects} == {"retired"}
    assert seg_keys(archive, "r") == [s.key for s in index.segments]
    assert archive.index("r").retired == ()  # the index forgot them
    assert archive.verify().problems == []
    assert [c.state["i"] for c in archive.restore("r").checkpoints] == [0, *range(20, 40)]


def test_orphans_runs_without_index_and_probes(backend: Backend) -> None:
    archive = backend.open(flush_records=8)
    run = archive.start_run(agent="g", run_id="live")
    for i in range(20):
        run.checkpoint("a", {"i": i})
    run.flush()
    # From here the background flusher must not run: a flush it started for the earlier
    # records (flush_records) or the age trigger (flush_age) would archive the "late"
    # record on a slow machine, and the segment planted below would not be an orphan.
    archive.flusher.stop()
    # A flush that crashed between its segment PUT and its index PUT.
    run.checkpoint("a", {"late": True})
    row = archive.cache.run("live")
    assert row is not None
    batch = archive.cache.pending("live", 100, row.last_seq)
    orphan, body = archive.engine._encode(row, batch, archive.index("live").chain_head)
    archive.store.put(orphan.key, body, mode="create")
    # A run whose first flush never reached its index, and a probe left by a crash.
    archive.store.put("runs/ghost/seg/000000000001-000000000001-0123456789abcdef.jsonl.zst", b"x")
    archive.store.put("_runarchive/probe/0123456789abcdef0123456789abcdef", b"probe-1")
    abandon(archive)

    other = backend.open()
    assert [(p.kind, p.key) for p in other.verify("live").problems] == [("orphan", orphan.key)]
    report = other.gc(grace=0)
    # The run is still running: a young object its index does not name may be a write in
    # flight (gc.IN_FLIGHT), kept whatever the grace; once the run has ended it goes.
    assert sorted((d.why, d.key) for d in report.plan.objects) == [
        ("no-index", "runs/ghost/seg/000000000001-000000000001-0123456789abcdef.jsonl.zst"),
        ("probe", "_runarchive/probe/0123456789abcdef0123456789abcdef"),
    ]
    assert any(orphan.key in why for why in report.plan.skipped), report.plan.skipped
    assert [(p.kind, p.key) for p in other.verify("live").problems] == [("orphan", orphan.key)]
    assert [r.seq for r in other.restore("live").records] == list(range(1, 21))
    ended = other.resume("live")
    ended.complete()
    report = other.gc(grace=0)
    assert [(d.why, d.key) for d in report.plan.objects] == [("orphan", orphan.key)]
    assert other.verify().problems == []


def test_retention_days_expire_ended_runs_but_never_locked_or_running_ones(
    tmp_path: Path,
) -> None:
    store = MemoryStore()
    archive = Archive.open(store=store, cache_dir=tmp_path / "c", retention_days=30)
    for run_id in ("old", "old-held", "recent"):
        finished(archive, run_id, n=5)
    live = archive.start_run(agent="g", run_id="old-running")
    live.checkpoint("a", {})
    live.flush()
    # Age three of them by 40 days (as if they had ended then).
    for run_id in ("old", "old-held", "old-running"):
        raw = orjson.loads(store.get(index_key(run_id)).body)
        raw["ended_at"] = "2020-01-01T00:00:00.000000Z" if run_id != "old-running" else None
        store.put(index_key(run_id), orjson.dumps(raw))
    archive.hold("old-held")
    report = archive.gc()
    assert report.plan.expired_runs == ["old", "old-held"]
    assert report.expired == ["old"]
    assert len(report.kept_locked) == 1
    assert report.kept_locked[0].startswith("old-held: ")
    assert not list(store.list("runs/old/"))
    assert {e.run_id for e in archive.list_runs()} == {"old-held", "recent", "old-running"}
    archive.close()


@pytest.mark.parametrize("grace", [timedelta(minutes=5), 300.0])
def test_grace_accepts_seconds_or_a_timedelta(tmp_path: Path, grace: object) -> None:
    archive = Archive.open((tmp_path / "b").as_uri(), cache_dir=tmp_path / "c")
    finished(archive, "r")
    archive.store.put("runs/r/seg/000000000099-000000000099-0123456789abcdef.jsonl.zst", b"x")
    assert archive.gc(grace=grace).plan.objects == []  # type: ignore[arg-type]
    archive.close()
