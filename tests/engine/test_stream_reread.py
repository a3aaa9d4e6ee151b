"""A segment deleted under a reader (issue 13): a concurrent compaction merged it and
``gc`` deleted it after the reader had read the index. The reader reads the index once
more and goes on from where it was; only a segment the new index still names is an error.

Simulated with a store that serves the index as it was before the compaction to the
first GET, and answers "not found" for the segments ``gc`` would have deleted.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runarchive import Archive, Reader
from runarchive.engine.restore import execute_restore, plan_restore
from runarchive.errors import CorruptObjectError, ObjectNotFoundError
from runarchive.format.codec import index_key
from runarchive.format.model import parse_index
from runarchive.store import FileStore, GetResult

RUN = "long"


class CompactedUnderneath(FileStore):
    """The first GET of the run's index returns ``before`` (bytes of an older index),
    later ones ``after`` if given (else the stored index); GETs of ``gone`` keys fail as
    if deleted. Counts index GETs."""

    def __init__(
        self, root: Path, before: bytes, gone: set[str], after: bytes | None = None
    ) -> None:
        super().__init__(root, create=False)
        self.before, self.gone, self.after, self.index_gets = before, gone, after, 0

    def get(self, key: str) -> GetResult:
        if key == index_key(RUN):
            self.index_gets += 1
            if self.index_gets == 1:
                return GetResult(self.before, "old-etag")
            if self.after is not None:
                return GetResult(self.after, "after-etag")
        if key in self.gone:
            raise ObjectNotFoundError(f"no object {key!r} (deleted by gc)", key=key)
        return super().get(key)


@pytest.fixture
def compacted(tmp_path: Path) -> tuple[Path, bytes]:
    """A run of 20 events in 10 segments, then compacted (into 1): the bucket root and
    the index bytes from before the compaction (its segments are retired, not deleted)."""
    root = tmp_path / "bucket"
    with Archive.open(
        root.as_uri(), cache_dir=tmp_path / "c", max_segment_records=2, live_compaction=False
    ) as archive:
        with archive.start_run(agent="a", run_id=RUN) as run:
            for i in range(20):
                run.event("step", {"i": i})
        before = (root / index_key(RUN)).read_bytes()
        (result,) = archive.compact(RUN)
        assert result.done
    assert len(parse_index(before, "k").segments) == 10
    assert len(parse_index((root / index_key(RUN)).read_bytes(), "k").segments) < 10
    return root, before


def _old_keys(before: bytes) -> list[str]:
    return [s.key for s in parse_index(before, "k").segments]


@pytest.mark.parametrize("prefetch", [1, 2, 8])
def test_iteration_goes_on_with_the_new_index(compacted: tuple[Path, bytes], prefetch: int) -> None:
    root, before = compacted
    old = _old_keys(before)
    store = CompactedUnderneath(root, before, gone=set(old[3:]))  # 3 read before gc ran
    with Reader.open(root.as_uri(), store=store) as reader:
        seqs = [r.seq for r in reader.iter_records(RUN, prefetch=prefetch)]
        assert seqs == list(range(1, 21))  # the merged segment's 1-6 skipped, none twice
        assert store.index_gets == 2
        assert [r.seq for r in reader.iter_records(RUN, seq=9, types=["event"])] == list(
            range(1, 10)
        )


def test_restore_goes_on_and_returns_the_index_it_read_last(
    compacted: tuple[Path, bytes],
) -> None:
    root, before = compacted
    store = CompactedUnderneath(root, before, gone=set(_old_keys(before)[5:]))
    with Reader.open(root.as_uri(), store=store) as reader:
        restored = reader.restore(RUN)
        assert [r.seq for r in restored.records] == list(range(1, 21))
        assert restored.index.compactions  # the index after the compaction
        assert store.index_gets == 2


def test_a_segment_still_named_after_the_re_read_is_missing(compacted: tuple[Path, bytes]) -> None:
    root, _ = compacted
    now = (root / index_key(RUN)).read_bytes()
    merged = _old_keys(now)[0]
    store = CompactedUnderneath(root, now, gone={merged})
    with Reader.open(root.as_uri(), store=store) as reader:
        with pytest.raises(CorruptObjectError, match="still named") as err:
            list(reader.iter_records(RUN))
        assert err.value.key == merged
        assert store.index_gets == 2


def test_a_second_missing_segment_without_progress_is_an_error(
    compacted: tuple[Path, bytes],
) -> None:
    # The old segments are gone and so is the merged one: the re-read index names a
    # segment that is missing too, before anything more was read.
    root, before = compacted
    merged = _old_keys((root / index_key(RUN)).read_bytes())
    store = CompactedUnderneath(root, before, gone={*_old_keys(before)[2:], *merged})
    with Reader.open(root.as_uri(), store=store) as reader:
        records = reader.iter_records(RUN)
        got = [next(records).seq for _ in range(4)]
        with pytest.raises(CorruptObjectError, match="missing") as err:
            next(records)
        assert err.value.key in merged
        assert got == [1, 2, 3, 4]
        assert store.index_gets == 2


def test_without_a_re_read_a_missing_segment_is_an_error(compacted: tuple[Path, bytes]) -> None:
    # execute_restore on a plan (RunView, rollback, recovery) has no index to re-read.
    root, before = compacted
    old = _old_keys(before)
    store = CompactedUnderneath(root, before, gone={old[4]})
    with pytest.raises(CorruptObjectError, match="missing") as err:
        execute_restore(plan_restore(parse_index(before, "k"), run_id=RUN), store)
    assert err.value.key == old[4]


def test_an_index_read_again_that_no_longer_covers_the_segment_is_an_error(
    compacted: tuple[Path, bytes],
) -> None:
    # Not what a compaction writes: the run cut short after seq 6 (a rolled-back index).
    root, before = compacted
    doc = json.loads(before)
    doc["segments"], doc["last_seq"] = doc["segments"][:3], 6
    old = _old_keys(before)
    store = CompactedUnderneath(root, before, gone={old[4]}, after=json.dumps(doc).encode())
    with Reader.open(root.as_uri(), store=store) as reader:
        records = reader.iter_records(RUN)
        got = [next(records).seq for _ in range(8)]
        with pytest.raises(CorruptObjectError, match="no longer covers its seqs 9-10") as err:
            next(records)
    assert err.value.key == old[4]
    assert got == list(range(1, 9))


def test_a_live_run_compacted_by_its_writer_while_it_is_read(tmp_path: Path) -> None:
    """The real thing: the writer's live compaction merges the segments a reader has
    not fetched yet and deletes them at once (grace 0); the reader goes on."""
    root = tmp_path / "bucket"
    settings = {
        "cache_dir": tmp_path / "w",
        "flush_records": 10**9,
        "flush_age": 3600.0,
        "compaction_fanout": 2,
        "gc_grace_seconds": 0.0,
    }
    with Archive.open(root.as_uri(), **settings) as archive:
        run = archive.start_run(agent="a", run_id=RUN)
        for i in range(12):
            run.event("step", {"i": i})
            archive.flush()
        with Reader.open(root.as_uri()) as reader:
            first = reader.index(RUN)
            records = reader.iter_records(RUN, prefetch=1)
            seqs = [next(records).seq]
            before = {s.key for s in first.segments}
            for i in range(12, 40):
                run.event("step", {"i": i})
                archive.flush()
            assert not all((root / key).exists() for key in before)  # merged and deleted
            seqs += [r.seq for r in records]
            index_gets = [k for op, k in reader.store.recent if op == "get" and k == index_key(RUN)]
            assert len(index_gets) == 2  # read once more, when a segment was gone
        run.complete()
    assert seqs == list(range(1, len(seqs) + 1))
    assert len(seqs) >= first.last_seq
