"""Backpressure: while the bucket is unreachable appends fill the cache up to
``cache_max_unflushed_bytes``, then raise ``BackpressureError`` and write nothing;
once the bucket is back and a flush drains the backlog, appends succeed again."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.backends import s3_settings
from support.faultproxy import FaultProxy
from support.servers import S3Server

from runarchive import Archive, BackpressureError, Reader, RunArchiveError
from runarchive.cache.status import read_status
from runarchive.run import Run

pytestmark = pytest.mark.real_server

LIMIT = 40_000


@pytest.fixture
def proxy(seaweed: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweed.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweed.secret_key)
    with FaultProxy(seaweed.endpoint_url, seed=7) as p:
        yield p


def _fill(run: Run, acked: dict[int, dict[str, object]]) -> None:
    for i in range(1, 1000):
        state: dict[str, object] = {"i": i, "pad": "x" * 1000}
        acked[run.checkpoint("step", state).seq] = state


def test_appends_fill_the_cache_up_to_the_limit_then_backpressure(
    proxy: FaultProxy, seaweed: S3Server, tmp_path: Path
) -> None:
    url = seaweed.url(seaweed.make_bucket(), "agents")
    archive = Archive.open(
        url,
        **{**s3_settings(seaweed), "endpoint_url": proxy.endpoint_url},
        cache_dir=tmp_path / "host",
        max_attempts=1,
        connect_timeout=1.0,
        read_timeout=1.0,
        flush_age=0.1,
        cache_max_unflushed_bytes=LIMIT,
        policy={"keep_all": True},
    )
    run = archive.start_run(agent="a")
    run.checkpoint("first", {"i": 0})
    run.flush()  # the run is in the bucket; now the bucket goes away
    proxy.set_rate(1.0, ("reset",))
    acked: dict[int, dict[str, object]] = {}
    began = time.monotonic()
    with pytest.raises(BackpressureError) as caught:
        _fill(run, acked)
    err = caught.value
    assert isinstance(err, RunArchiveError)
    assert "cache_max_unflushed_bytes" in str(err)
    assert "RUNARCHIVE_CACHE_MAX_UNFLUSHED_BYTES" in str(err)
    assert err.limit == LIMIT
    assert err.unflushed + err.size > LIMIT >= err.unflushed
    assert 30 <= len(acked) <= 40, len(acked)  # ≈ 1,070 bytes each
    assert archive.cache.unflushed_bytes() == err.unflushed
    last = run.last_seq
    with pytest.raises(BackpressureError):
        run.event("more", {"pad": "y" * 2000})
    assert run.last_seq == last  # nothing written
    assert archive.cache.records(run.run_id, min_seq=last + 1) == []
    # The flusher has failed meanwhile; the status shows it, also to another process
    deadline = time.monotonic() + 10
    while run.run_id not in archive.flush_errors and time.monotonic() < deadline:
        time.sleep(0.05)
    status = archive.status()
    (row,) = status.runs
    assert row.unflushed_records == len(acked)
    assert row.unflushed_bytes == err.unflushed
    assert row.last_flush_error is not None
    assert "StoreUnavailableError" in row.last_flush_error
    offline = read_status(archive.cache.directory)  # what `runarchive status` reads
    assert offline.runs[0].last_flush_error is not None
    assert offline.unflushed_bytes == err.unflushed
    print(
        f"\nbackpressure after {len(acked)} records, {err.unflushed:,} unflushed bytes of "
        f"{LIMIT:,} ({time.monotonic() - began:.2f} s)"
    )

    # The bucket comes back: a flush drains the backlog, appends work again.
    proxy.set_rate(0.0)
    archive.flush()
    assert archive.cache.unflushed_bytes() == 0
    assert archive.status().runs[0].last_flush_error is None
    for i in range(5):
        state = {"after": i}
        acked[run.checkpoint("after", state).seq] = state
    run.complete()
    archive.close()
    assert proxy.counts["reset"] > 0

    with Reader.open(url, **s3_settings(seaweed)) as reader:
        restored = reader.restore(run.run_id)
    got = {r.seq: r.state for r in restored.checkpoints}
    assert got == {1: {"i": 0}, **acked}


def test_the_limit_is_a_setting(tmp_path: Path) -> None:
    archive = Archive.open((tmp_path / "b").as_uri(), cache_dir=tmp_path / "c")
    try:
        assert archive.config.cache_max_unflushed_bytes == 1024**3
    finally:
        archive.close()
    small = Archive.open(
        (tmp_path / "b").as_uri(),
        cache_dir=tmp_path / "c",
        cache_max_unflushed_bytes=500,
        flush_age=3600,
    )
    try:
        run = small.start_run(agent="a")
        run.checkpoint("a", {"pad": "x" * 300})
        with pytest.raises(BackpressureError):
            run.checkpoint("b", {"pad": "x" * 300})
        run.flush()
        run.checkpoint("b", {"pad": "x" * 300})  # room again after the flush
    finally:
        small.close()
