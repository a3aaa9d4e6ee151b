"""Format 4: the paged run index and live compaction (docs/format.md §12).

The planner alone (pure), then real long runs on file:// and SeaweedFS: what a
restore returns, the chain, the object count, old-format runs continued, pages and
merged segments a hostile bucket tampers with, takeover of a paged run, gc.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from support.backends import Backend

from runarchive import Archive, CorruptObjectError, Policy, Reader
from runarchive.compliance.bundle_verify import verify_export
from runarchive.engine.levels import keep_set, name_token, plan_live, recent_floor
from runarchive.engine.ownership import held_through
from runarchive.format import indexpages
from runarchive.format.model import EpochStart, RunIndex, SegmentRef
from runarchive.policy import PendingCheckpoint, select_checkpoints
from runarchive.store.counting import CountingStore

NEVER = {"flush_age": 3600.0, "flush_records": 10**9, "flush_bytes": 1 << 40}
NAMES = ("plan", "act", "observe", "reflect", "tool")
T = datetime(2026, 12, 3, tzinfo=UTC)


def _ref(first: int, last: int, ckpts: list[tuple[int, str]], level: int = 0) -> SegmentRef:
    n = last - first + 1
    return SegmentRef(
        key=f"runs/r/seg/{first:012d}-{last:012d}-{level:016x}.jsonl.zst",
        first_seq=first,
        last_seq=last,
        records=n,
        checkpoints=len(ckpts),
        events=n - len(ckpts),
        stored_bytes=10,
        raw_bytes=100 * n,
        sha256=f"{first:064x}",
        first_ts=T,
        last_ts=T,
        level=level,
        ckpts=tuple(ckpts),
    )


# -- the planner (pure) -------------------------------------------------------------


def test_keep_set_is_the_whole_history_policy() -> None:
    refs = [_ref(2 * i + 1, 2 * i + 2, [(2 * i + 1, NAMES[i % 5])]) for i in range(100)]
    pending = [PendingCheckpoint(2 * i + 1, NAMES[i % 5]) for i in range(100)]
    want = select_checkpoints(pending, Policy(), 1)
    assert keep_set(refs, Policy()) == want
    assert keep_set(refs, Policy(keep_all=True)) is None
    assert recent_floor(refs, Policy()) == 2 * 80 + 1  # the 20th newest checkpoint


def test_refs_of_unknown_content_keep_everything_they_might_hold() -> None:
    legacy = _ref(1, 10, []).model_copy(update={"ckpts": None, "checkpoints": 5, "events": 5})
    newer = _ref(11, 12, [(11, "plan")])
    kept = keep_set([legacy, newer], Policy(keep_last=0))
    # "plan" at 11 is the latest "plan"; nothing of the legacy ref is known, so the
    # first checkpoint (inside it) is not named: the planner never drops from it.
    assert kept == {11}
    assert plan_live([legacy, newer], Policy(keep_last=0)) is None


def test_plan_merges_the_oldest_fanout_of_the_lowest_level() -> None:
    refs = [_ref(i, i, [], 0) for i in range(1, 10)]
    step = plan_live(refs, Policy(), fanout=8)
    assert step is not None
    assert (step.kind, step.start, step.stop, step.level) == ("merge", 0, 8, 1)
    assert plan_live(refs[:7], Policy(), fanout=8) is None


def test_plan_promotes_a_segment_too_big_to_merge() -> None:
    refs = [_ref(i, i, [], 1) for i in range(1, 9)]
    refs[0] = refs[0].model_copy(update={"raw_bytes": 10**9})
    step = plan_live(refs, Policy(), fanout=8, max_bytes=64 * 1024 * 1024)
    assert step is not None
    assert (step.kind, step.start, step.level) == ("promote", 0, 2)


def test_plan_defers_merges_above_level_0_that_hold_recent_checkpoints() -> None:
    # Eight level-1 segments whose checkpoints are all among the last 20: merged now,
    # they would go stale inside one big segment.
    refs = [_ref(i, i, [(i, NAMES[i % 5])], 1) for i in range(1, 9)]
    assert plan_live(refs, Policy(keep_last=20), fanout=8) is None
    step = plan_live(refs, Policy(keep_last=0), fanout=8)
    assert step is not None
    assert step.kind == "merge"


def test_plan_sweeps_stale_checkpoints_cheapest_first() -> None:
    big = _ref(1, 1000, [(k, "plan") for k in range(1, 11)], 3)
    small = [_ref(1000 + i, 1000 + i, [(1000 + i, "plan")]) for i in range(1, 5)]
    step = plan_live([big, *small], Policy(keep_last=1), fanout=8, min_stale=2)
    assert step is not None
    assert step.kind == "sweep"


def test_name_tokens_hide_names_of_encrypted_runs() -> None:
    key = b"k" * 32
    assert name_token("plan", None) == "plan"
    token = name_token("plan", key)
    assert token.startswith("~")
    assert "plan" not in token
    assert len(token) == 17
    assert token == name_token("plan", key) != name_token("act", key)


def test_pages_split_by_level_and_size() -> None:
    refs = [_ref(i, i, [], 3) for i in range(1, 300)] + [_ref(300, 300, [], 1)]
    refs += [_ref(301, 301, [], 0)]
    pages, tail = indexpages.split_refs(refs)
    assert [len(p) for p in pages] == [256, 43, 1]
    assert [r.first_seq for r in tail] == [301]


# -- real runs ----------------------------------------------------------------------


def _long_run(
    archive: Archive, flushes: int, run_id: str = "long", **start: Any
) -> list[tuple[int, str]]:
    run = archive.start_run(agent="live", run_id=run_id, **start)
    names = []
    for i in range(flushes):
        name = NAMES[i % 5] if i % 97 else f"rare-{i}"
        cp = run.checkpoint(name, {"i": i, "pad": "x" * 40})
        names.append((cp.seq, name))
        run.event("tool", {"i": i})
        archive.flush()
    return names


def _check_restored(reader: Reader, run_id: str, names: list[tuple[int, str]], policy: Policy):
    restored = reader.restore(run_id)
    events = [r.seq for r in restored.events]
    assert events == [seq + 1 for seq, _ in names]  # every event, exactly once
    stored = {c.seq for c in restored.checkpoints}
    want = select_checkpoints([PendingCheckpoint(s, n) for s, n in names], policy, names[0][0])
    assert want <= stored  # the policy's promise holds
    for c in restored.checkpoints:
        assert c.state["i"] == (c.seq - 1) // 2
    return restored, stored, want


@pytest.mark.slow
def test_a_long_live_run_is_compact_complete_and_verifies(shared_backend: Backend) -> None:
    archive = shared_backend.open(**NEVER, compaction_fanout=4)
    names = _long_run(archive, 150)
    archive.close()
    settings = {k: v for k, v in shared_backend.settings.items() if k != "cache_dir"}
    reader = Reader.open(shared_backend.url, **settings)  # type: ignore[arg-type]
    index = reader.index("long")
    assert index.format == 4
    assert len(index.segments) <= 4 * 4 + 8  # O(fanout * levels), not 150
    assert max(s.level for s in index.segments) >= 2
    _, stored, want = _check_restored(reader, "long", names, Policy())
    assert len(stored) <= 1.5 * len(want)
    report = reader.verify("long")
    assert report.problems == [], [str(p) for p in report.problems]
    head = json.loads(reader.store.get("runs/long/index.json").body)
    assert head["pages"], "levels >= 1 live in pages"
    assert all(s["level"] == 0 for s in head["segments"])


@pytest.mark.slow
def test_keep_all_runs_lose_no_checkpoint_to_merges(tmp_path: Path) -> None:
    archive = Archive.open(f"file://{tmp_path}/b", cache_dir=tmp_path / "c", **NEVER)
    names = _long_run(archive, 80, policy=Policy(keep_all=True))
    archive.close()
    reader = Reader.open(f"file://{tmp_path}/b")
    restored = reader.restore("long")
    assert [c.seq for c in restored.checkpoints] == [s for s, _ in names]
    assert len(reader.index("long").segments) < 80


@pytest.mark.slow
def test_a_fresh_host_reads_pages_it_never_saw(tmp_path: Path) -> None:
    archive = Archive.open(f"file://{tmp_path}/b", cache_dir=tmp_path / "c", **NEVER)
    names = _long_run(archive, 120)
    archive.close()
    indexpages._cache.clear()  # a new process knows no page
    reader = Reader.open(f"file://{tmp_path}/b")
    store = reader.store
    index = reader.index("long")
    head = json.loads(store.inner.get("runs/long/index.json").body)
    assert store.counts["get"] == 1 + len(head["pages"])
    assert index.segments[0].first_seq == 1
    assert index.last_seq == 240
    _check_restored(reader, "long", names, Policy())


def test_an_old_format_run_is_continued_and_compacted(tmp_path: Path) -> None:
    url = f"file://{tmp_path}/b"
    old = Archive.open(url, cache_dir=tmp_path / "c", live_compaction=False, **NEVER)
    names = _long_run(old, 40)
    old.close()
    reader = Reader.open(url)
    assert reader.index("long").format == 2
    assert len(reader.index("long").segments) == 40
    # Same cache, new code with live compaction on: the run goes on and its 40
    # format-2 segments (no ckpts) are merged, their names learnt from their bodies.
    new = Archive.open(url, cache_dir=tmp_path / "c", **NEVER)
    run = new.run("long")
    for i in range(40, 60):
        cp = run.checkpoint(NAMES[i % 5], {"i": i, "pad": "x"})
        names.append((cp.seq, NAMES[i % 5]))
        run.event("tool", {"i": i})
        new.flush()
    new.close()
    index = Reader.open(url).index("long")
    assert index.format == 4
    assert len(index.segments) < 30
    _check_restored(Reader.open(url), "long", names, Policy())
    assert Reader.open(url).verify("long").problems == []


@pytest.mark.slow
def test_resume_on_another_host_continues_a_paged_run(tmp_path: Path) -> None:
    url = f"file://{tmp_path}/b"
    a = Archive.open(url, cache_dir=tmp_path / "a", host_id="host-a", **NEVER)
    names = _long_run(a, 100)
    indexpages._cache.clear()
    b = Archive.open(url, cache_dir=tmp_path / "b", host_id="host-b", **NEVER)
    run = b.resume("long")
    for i in range(100, 130):
        cp = run.checkpoint(NAMES[i % 5], {"i": i})
        names.append((cp.seq, NAMES[i % 5]))
        run.event("tool", {"i": i})
        b.flush()
    run.complete()
    b.close()
    a.close()
    reader = Reader.open(url)
    restored = reader.restore("long")
    assert [e.seq for e in restored.events] == [s + 1 for s, _ in names]
    assert reader.verify("long").problems == []


def test_encrypted_runs_are_compacted_without_revealing_names(tmp_path: Path) -> None:
    keys = {"encryption": "local", "encryption_keys": "k1=" + "C" * 43 + "="}
    url = f"file://{tmp_path}/b"
    archive = Archive.open(url, cache_dir=tmp_path / "c", **keys, **NEVER)
    run = archive.start_run(agent="live", run_id="sealed")
    for i in range(60):
        run.checkpoint("secret-name-" + NAMES[i % 5], {"i": i})
        run.event("tool", {"i": i})
        archive.flush()
    archive.close()
    raw = b"".join(p.read_bytes() for p in Path(tmp_path / "b").rglob("*") if p.is_file())
    assert b"secret-name" not in raw
    index = Reader.open(url, **keys).index("sealed")
    assert index.format == 4
    assert len(index.segments) < 60
    restored = Reader.open(url, **keys).restore("sealed")
    assert len(restored.events) == 60
    assert {c.name for c in restored.checkpoints} >= {"secret-name-" + n for n in NAMES}


def test_a_tampered_or_missing_page_is_refused(tmp_path: Path) -> None:
    archive = Archive.open(f"file://{tmp_path}/b", cache_dir=tmp_path / "c", **NEVER)
    _long_run(archive, 80)
    archive.close()
    head = json.loads((tmp_path / "b/runs/long/index.json").read_text())
    page = tmp_path / "b" / head["pages"][0]["key"]
    body = page.read_bytes()
    indexpages._cache.clear()
    page.write_bytes(
        indexpages.compress(b'{"format":4,"kind":"index-page","run_id":"long","segments":[]}')
    )
    with pytest.raises(CorruptObjectError, match="SHA-256"):
        Reader.open(f"file://{tmp_path}/b").index("long")
    page.unlink()
    with pytest.raises(CorruptObjectError, match="missing"):
        Reader.open(f"file://{tmp_path}/b").index("long")
    page.write_bytes(body)
    assert Reader.open(f"file://{tmp_path}/b").index("long").last_seq == 160


@pytest.mark.slow
def test_gc_keeps_what_the_live_index_names(tmp_path: Path) -> None:
    url = f"file://{tmp_path}/b"
    archive = Archive.open(url, cache_dir=tmp_path / "c", check_conditional_writes=False, **NEVER)
    names = _long_run(archive, 90)
    report = archive.gc(grace=0)  # while the run is live
    assert report.plan.objects, "retired and merged-away segments are collected"
    assert not any("/index.json" in d.key for d in report.plan.objects)
    _check_restored(Reader.open(url), "long", names, Policy())
    # The writer goes on after gc deleted its retired objects.
    run = archive.run("long")
    for i in range(90, 110):
        cp = run.checkpoint(NAMES[i % 5], {"i": i})
        names.append((cp.seq, NAMES[i % 5]))
        run.event("tool", {"i": i})
        archive.flush()
    archive.close()
    assert Reader.open(url).verify("long").problems == []
    _check_restored(Reader.open(url), "long", names, Policy())


def test_a_live_compaction_step_costs_its_window(tmp_path: Path) -> None:
    url = f"file://{tmp_path}/b"
    archive = Archive.open(url, cache_dir=tmp_path / "probe")
    archive.close()
    store = CountingStore(Reader.open(url).store.inner)
    archive = Archive.open(
        url, cache_dir=tmp_path / "c", store=store, compaction_fanout=4, read_back=False, **NEVER
    )
    run = archive.start_run(agent="live", run_id="budget", policy=Policy(keep_all=True))
    for i in range(3):
        run.checkpoint("a", {"i": i})
        archive.flush()
    store.reset()
    run.checkpoint("a", {"i": 3})
    archive.flush()  # the 4th level-0 segment: one merge of 4
    ops = [(op, key.rsplit("/", 2)[-2]) for op, key in store.recent]
    assert ops.count(("get", "seg")) == 4  # the window, read back and checked
    assert ops.count(("head", "seg")) == 1  # the merged segment is really there
    assert ops.count(("put", "seg")) == 2  # the flush's segment, the merged one
    assert ops.count(("put", "budget")) == 2  # two head writes: flush, merge
    archive.close()


def test_a_fenced_writer_counts_as_held_only_what_its_own_index_held() -> None:
    def index(epoch: int, writer: str, refs: list[SegmentRef], **extra: Any) -> RunIndex:
        return RunIndex(
            run_id="r",
            agent="a",
            created_at=T,
            updated_at=T,
            epoch=epoch,
            writer=writer,
            segments=tuple(refs),
            last_seq=refs[-1].last_seq if refs else 0,
            **extra,
        )

    mine = [_ref(1, 4, []), _ref(5, 8, [])]
    ours = index(1, "w1", mine)
    merged = _ref(1, 12, [], level=1)
    # The new owner took the run from this writer's index at seq 8, then merged.
    taken = index(2, "w3", [merged], epoch_starts={"2": EpochStart(seq=8, writer="w1")})
    assert held_through(ours, taken) == 8
    # The index it took over was another writer's of the same epoch (this writer's
    # claim was answered and never stored): nothing of this writer's is held.
    other = index(2, "w3", [merged], epoch_starts={"2": EpochStart(seq=8, writer="w2")})
    assert held_through(ours, other) == 0
    # Without a record of the takeover, only identical segments count.
    plain = index(2, "w3", [mine[0], _ref(5, 12, [])])
    assert held_through(ours, plain) == 4


@pytest.mark.slow
def test_a_compacted_run_exports_and_the_bundle_verifies(tmp_path: Path) -> None:
    url = f"file://{tmp_path}/b"
    archive = Archive.open(url, cache_dir=tmp_path / "c", compaction_fanout=3, **NEVER)
    names = _long_run(archive, 60)
    archive.run("long").complete()
    archive.close()
    reader = Reader.open(url)
    assert any(s.link for s in reader.index("long").segments), "merged segments to export"
    result = reader.export("long", dest=tmp_path / "bundle")
    assert [r.run_id for r in result.runs] == ["long"]
    problems = verify_export(tmp_path / "bundle")
    assert problems == [], problems
    run_dir = tmp_path / "bundle" / "runs" / "long"
    bundled = json.loads((run_dir / "index.json").read_text())  # the head, as stored
    assert bundled["pages"]
    assert sorted(p.name for p in (run_dir / "pages").iterdir()) == sorted(
        p["key"].rsplit("/", 1)[-1] for p in bundled["pages"]
    )
    lines = (tmp_path / "bundle" / "runs" / "long" / "records.jsonl").read_text().splitlines()
    assert sum(1 for ln in lines if json.loads(ln)["type"] == "event") == len(names)
    # A page altered in the bundle is found.
    page = next((run_dir / "pages").iterdir())
    page.write_bytes(indexpages.compress(b'{"format":4,"kind":"index-page","run_id":"long"}'))
    assert any(
        "pages" in p.path or "SHA-256" in p.problem for p in verify_export(tmp_path / "bundle")
    )
