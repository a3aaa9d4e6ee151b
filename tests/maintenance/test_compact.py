"""compact: the policy over the whole history, fewer segments, a chain that still verifies."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from support.backends import Backend

from runarchive import Archive, Checkpoint, Event, Policy
from runarchive.engine.restore import execute_restore, plan_restore
from runarchive.errors import RunStateError
from runarchive.format.codec import index_key
from runarchive.policy import PendingCheckpoint, select_checkpoints
from runarchive.store import MemoryStore, Retention


def random_run(archive: Archive, rng: random.Random, run_id: str) -> list[Checkpoint | Event]:
    """A run with random names, events and flush points; returns what was written."""
    names = [f"n{i}" for i in range(rng.randint(1, 6))]
    written: list[Checkpoint | Event] = []
    run = archive.start_run(agent="c", run_id=run_id)
    for _ in range(rng.randint(1, 150)):
        if rng.random() < 0.2:
            written.append(run.event("tool", {"r": rng.random()}))
        else:
            written.append(run.checkpoint(rng.choice(names), {"v": rng.random()}))
        if rng.random() < 0.08:
            run.flush()
    run.complete()
    return written


def expected_checkpoints(written: list[Checkpoint | Event], policy: Policy) -> list[int]:
    cps = [PendingCheckpoint(w.seq, w.name) for w in written if isinstance(w, Checkpoint)]
    return sorted(select_checkpoints(cps, policy, cps[0].seq if cps else None))


@pytest.mark.parametrize("seed", range(12))
def test_random_histories_compact_to_the_policy_over_the_whole_run(
    seed: int, tmp_path: Path
) -> None:
    rng = random.Random(seed)
    policy = Policy(
        keep_all=False,
        keep_first=rng.random() < 0.7,
        keep_latest_per_name=rng.random() < 0.7,
        keep_last=rng.choice([0, 1, 3, 20]),
    )
    archive = Archive.open(
        (tmp_path / "b").as_uri(),
        cache_dir=tmp_path / "c",
        policy=policy,
        flush_records=rng.choice([3, 7, 50]),
        max_segment_records=rng.choice([4, 256]),
        live_compaction=False,  # offline compaction is what is tested here
    )
    written = random_run(archive, rng, f"run-{seed}")
    before = archive.index(f"run-{seed}")
    results = archive.compact(f"run-{seed}")
    after = archive.index(f"run-{seed}")
    restored = archive.restore(f"run-{seed}")

    assert [c.seq for c in restored.checkpoints] == expected_checkpoints(written, policy)
    events = [w for w in written if isinstance(w, Event)]
    assert [e.model_dump() for e in restored.events] == [e.model_dump() for e in events]
    assert after.last_seq == before.last_seq == len(written)
    report = archive.verify(f"run-{seed}")
    assert report.problems == [], [str(p) for p in report.problems]
    if results[0].done:
        assert len(after.segments) <= len(before.segments)
        assert {r.key for r in after.retired} <= {s.key for s in before.segments}
        assert after.compactions[-1].old_chain_head == before.chain_head
    else:  # nothing to gain: one segment already, nothing to drop
        assert after == before
    archive.close()


def test_compaction_on_the_real_server_drops_superseded_and_merges(backend: Backend) -> None:
    # Default policy; a flush every 10 checkpoints, made here rather than left to the
    # background flusher (which batches more under load: the count would vary).
    archive = backend.open(flush_records=10**6, live_compaction=False)
    run = archive.start_run(agent="c", run_id="long")
    for i in range(200):
        run.checkpoint(("plan", "act", "observe")[i % 3], {"i": i, "pad": "x" * 200})
        if i % 10 == 0:
            run.event("tick", {"i": i})
        if i % 10 == 9:
            archive.flush()
    run.complete()
    before = archive.index("long")
    stored_objects = len(list(archive.store.list("runs/long/seg/")))
    (result,) = archive.compact("long")
    after = archive.index("long")
    assert result.done
    # At least one segment per explicit flush.
    assert len(before.segments) >= 20
    assert len(after.segments) == 1
    kept = [c.state["i"] for c in archive.restore("long").checkpoints]
    assert kept == [0, *range(180, 200)]  # the first; the latest of each name are in the last 20
    assert after.stored_bytes < before.stored_bytes
    # Old objects stay until gc: the bucket holds both sets for the grace period.
    assert len(list(archive.store.list("runs/long/seg/"))) == stored_objects + 1
    assert archive.verify().ok
    (entry,) = archive.list_runs()
    assert entry.chain_head == after.chain_head  # the manifest follows the new chain


def test_a_restore_that_read_the_old_index_still_succeeds(backend: Backend) -> None:
    archive = backend.open(flush_records=5, live_compaction=False)
    run = archive.start_run(agent="c", run_id="r")
    for i in range(40):
        run.checkpoint("x", {"i": i})
    run.complete()
    old = archive.index("r")
    plan = plan_restore(old)  # a reader got this far...
    archive.compact("r")  # ...then the run was compacted under it
    records = execute_restore(plan, archive.store)
    assert [r.seq for r in records][-1] == 40


def test_dry_run_writes_nothing_and_running_runs_are_refused(backend: Backend) -> None:
    archive = backend.open(flush_records=5, live_compaction=False)
    run = archive.start_run(agent="c", run_id="done")
    for i in range(30):
        run.checkpoint("x", {"i": i})
    run.complete()
    live = archive.start_run(agent="c", run_id="live")
    live.checkpoint("x", {})
    live.flush()
    archive.store.reset()
    (dry,) = archive.compact("done", dry_run=True)
    assert not dry.done
    assert "put" not in archive.store.counts
    summary = dry.plan.summary()
    assert summary["objects_read"] == len(archive.index("done").segments) > 1
    assert summary["objects_written"] == 1
    # Whatever the flushes kept, the whole-run policy keeps the first and the last 20.
    assert summary["records_after"] == 21
    assert summary["checkpoints_dropped"] == summary["records_before"] - 21
    with pytest.raises(RunStateError, match="still running"):
        archive.compact("live")
    results = archive.compact()  # every ended run; the running one is skipped
    assert [r.plan.run_id for r in results] == ["done"]
    assert archive.compact("done")[0].done is False  # nothing left to gain


def test_compacted_segments_carry_the_object_lock_too(tmp_path: Path) -> None:
    store = MemoryStore(retention=Retention("GOVERNANCE", 1))
    with Archive.open(
        store=store,
        cache_dir=tmp_path / "c",
        flush_records=5,
        object_lock_mode="GOVERNANCE",
        object_lock_days=1,
    ) as archive:
        run = archive.start_run(agent="c", run_id="locked")
        for i in range(30):
            run.checkpoint("x", {"i": i})
        run.complete()
        (result,) = archive.compact("locked")
        assert result.done
        (seg,) = archive.index("locked").segments
        assert store.lock_state(seg.key).mode == "GOVERNANCE"
        assert store.lock_state(index_key("locked")).mode is None  # the index stays rewritable


def test_a_second_compaction_repairs_a_manifest_left_on_the_old_chain(tmp_path: Path) -> None:
    with Archive.open(
        (tmp_path / "b").as_uri(), cache_dir=tmp_path / "c", flush_records=5, live_compaction=False
    ) as a:
        run = a.start_run(agent="c", run_id="r")
        for i in range(30):
            run.checkpoint("x", {"i": i})
        run.complete()
        before = a.index("r")
        a.compact("r")
        # As if the compaction had been killed between its index swap and the manifest.
        a.manifest.patch_done("r", {"chain_head": before.chain_head, "stored_bytes": 1})
        (again,) = a.compact("r")
        assert not again.done  # nothing left to compact...
        (entry,) = a.list_runs()
        after = a.index("r")
        assert entry.chain_head == after.chain_head  # ...but the manifest caught up
        assert entry.stored_bytes == after.stored_bytes
