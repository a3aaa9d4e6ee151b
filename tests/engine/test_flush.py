"""The flush protocol under failures between its steps (in-process, deterministic)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from support.backends import abandon

from runarchive import Archive, Policy
from runarchive.errors import IndexConflictError, StoreUnavailableError
from runarchive.format.codec import index_key
from runarchive.store import FileStore, PutMode


class FaultyStore(FileStore):
    """A file store whose next index PUT can fail before or after it lands."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.fail_index: str | None = None  # "before" | "after"
        self.block_segment: threading.Event | None = None
        self.segment_started = threading.Event()

    def put(
        self, key: str, body: bytes, *, mode: PutMode = "overwrite", immutable: bool = False
    ) -> str:
        if "/seg/" in key and self.block_segment is not None:
            self.segment_started.set()
            self.block_segment.wait(10)
        if key.endswith("index.json") and self.fail_index:
            when, self.fail_index = self.fail_index, None
            if when == "after":
                super().put(key, body, mode=mode)  # it landed, the answer is lost
            raise StoreUnavailableError(f"injected failure {when} PUT {key}", key=key)
        return super().put(key, body, mode=mode, immutable=immutable)


def open_archive(tmp_path: Path, store: FaultyStore, **settings: object) -> Archive:
    return Archive.open(
        cache_dir=tmp_path / "cache",
        store=store,
        flush_age=3600,
        policy=Policy(keep_all=True),
        **settings,
    )


@pytest.mark.parametrize("when", ["before", "after"])
def test_index_put_failure_then_retry_has_no_loss_and_no_duplicate(
    tmp_path: Path, when: str
) -> None:
    store = FaultyStore(tmp_path / "bucket")
    archive = open_archive(tmp_path, store)
    run = archive.start_run(agent="x")
    for i in range(5):
        run.checkpoint("c", {"i": i})
    run.flush()
    for i in range(5, 9):
        run.checkpoint("c", {"i": i})
    store.fail_index = when
    with pytest.raises(StoreUnavailableError, match=f"injected failure {when}"):
        run.flush()
    run.checkpoint("c", {"i": 9})
    run.complete()
    restored = archive.restore(run.run_id)
    assert [c.state["i"] for c in restored.checkpoints] == list(range(10))
    assert restored.index.status == "completed"
    segs = {p.name for p in (tmp_path / "bucket" / "runs" / run.run_id / "seg").iterdir()}
    named = {s.key.rsplit("/", 1)[1] for s in restored.index.segments}
    assert named <= segs
    # "before": the retry covers 6..10, so the segment 6..9 is an orphan nobody names.
    # "after": the index already named 6..9; the retry adopts it and writes only 10.
    assert len(segs - named) == (1 if when == "before" else 0)
    archive.close()


def test_a_new_process_adopts_an_index_written_after_its_last_commit(tmp_path: Path) -> None:
    store = FaultyStore(tmp_path / "bucket")
    archive = open_archive(tmp_path, store)
    run = archive.start_run(agent="x")
    for i in range(4):
        run.checkpoint("c", {"i": i})
    store.fail_index = "after"
    with pytest.raises(StoreUnavailableError):
        run.flush()
    # The process dies here: its cache still says nothing is archived.
    abandon(archive)

    store2 = FaultyStore(tmp_path / "bucket")
    again = open_archive(tmp_path, store2)
    again.close()  # flushes: first reads the index, sees 1..4 archived, writes nothing twice
    index = Archive.open(
        cache_dir=tmp_path / "fresh", store=FileStore(tmp_path / "bucket")
    ).restore(run.run_id)
    assert [c.state["i"] for c in index.checkpoints] == [0, 1, 2, 3]
    assert len(index.index.segments) == 1


def test_complete_during_a_background_flush_does_not_spin(tmp_path: Path) -> None:
    """Regression: a flush that started before the last appends and the end of the run
    must finish, and the next flush must carry both the records and the status."""
    store = FaultyStore(tmp_path / "bucket")
    archive = open_archive(tmp_path, store, flush_records=5)
    run = archive.start_run(agent="x")
    store.block_segment = threading.Event()
    for i in range(5):  # triggers the background flush, which blocks in the segment PUT
        run.checkpoint("c", {"i": i})
    assert store.segment_started.wait(10)
    for i in range(5, 8):
        run.checkpoint("c", {"i": i})
    finisher = threading.Thread(target=run.complete)
    finisher.start()  # waits for the run's flush lock
    store.block_segment.set()
    finisher.join(20)
    assert not finisher.is_alive(), "complete() did not return: the flush loop spun"
    restored = archive.restore(run.run_id)
    assert [c.state["i"] for c in restored.checkpoints] == list(range(8))
    assert restored.index.status == "completed"
    archive.close()


def test_foreign_index_ahead_of_the_cache_is_refused(tmp_path: Path) -> None:
    store = FaultyStore(tmp_path / "bucket")
    archive = open_archive(tmp_path, store)
    run = archive.start_run(agent="x")
    run.checkpoint("c", 1)
    run.flush()
    key = index_key(run.run_id)
    body = store.get(key).body.replace(b'"last_seq":1', b'"last_seq":99')
    store.put(key, body)
    run.checkpoint("c", 2)
    with pytest.raises(IndexConflictError, match="beyond this host's last seq"):
        run.flush()
    abandon(archive)
