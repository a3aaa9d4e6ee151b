"""The local cache keeps agent state private and its WAL bounded (issue 12)."""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from runarchive import Archive
from runarchive.cache import wal as cache_wal


def _modes(directory: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.lstat().st_mode) for p in directory.iterdir()}


@pytest.mark.parametrize("umask", [0o000, 0o022])
def test_cache_files_are_private_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    cache_dir = tmp_path / "home" / "cache"
    old = os.umask(umask)
    try:
        with Archive.open(
            (tmp_path / "bucket").as_uri(), cache_dir=cache_dir, flush_records=4
        ) as archive:
            run = archive.start_run(agent="perms")
            for i in range(10):
                run.event("tick", {"i": i})
            run.checkpoint("state", {"secret": "plain text"})
            archive.flush()
            modes = _modes(cache_dir)
            assert {"cache.sqlite3", "cache.sqlite3-wal", "cache.sqlite3-shm", "lock"} <= set(modes)
            assert modes == dict.fromkeys(modes, 0o600)
            assert stat.S_IMODE(cache_dir.stat().st_mode) == 0o700
    finally:
        os.umask(old)


def _wide_cache(tmp_path: Path) -> tuple[str, Path]:
    url, cache_dir = (tmp_path / "bucket").as_uri(), tmp_path / "c"
    with Archive.open(url, cache_dir=cache_dir) as archive:
        archive.start_run(agent="perms").event("tick", {"i": 0})
    (cache_dir / "cache.sqlite3-wal").write_bytes(b"")  # as a crash would leave them
    (cache_dir / "cache.sqlite3-shm").write_bytes(b"")
    for path in cache_dir.iterdir():
        path.chmod(0o644)
    cache_dir.chmod(0o755)
    return url, cache_dir


def test_an_existing_cache_open_to_others_is_tightened_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url, cache_dir = _wide_cache(tmp_path)
    with (
        caplog.at_level(logging.WARNING, logger="runarchive.cache_health"),
        Archive.open(url, cache_dir=cache_dir),
    ):
        assert stat.S_IMODE(cache_dir.stat().st_mode) == 0o700
        modes = _modes(cache_dir)
        assert modes == dict.fromkeys(modes, 0o600)
    assert f"{cache_dir} had mode 755: other users could read" in caplog.text
    for name in ("cache.sqlite3", "cache.sqlite3-wal", "cache.sqlite3-shm", "lock"):
        assert f"{cache_dir / name} had mode 644: other users could read" in caplog.text


def test_a_cache_directory_of_another_user_is_left_alone_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, cache_dir = _wide_cache(tmp_path)
    cache_dir.chmod(0o777)
    real_uid = os.geteuid()
    monkeypatch.setattr(os, "geteuid", lambda: real_uid + 1)  # as if another user's
    with (
        caplog.at_level(logging.WARNING, logger="runarchive.cache_health"),
        Archive.open(url, cache_dir=cache_dir),
    ):
        pass
    assert stat.S_IMODE(cache_dir.stat().st_mode) == 0o777
    assert f"{cache_dir} has mode 777 and belongs to uid {real_uid}" in caplog.text
    assert "chmod it to 700 or use another cache_dir" in caplog.text


@pytest.fixture
def memory_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory in memory where there is one (/dev/shm), else ``tmp_path``: there
    the appends' fsyncs cost nothing (20,000 appends: 7 s, not 20-60 s on a loaded
    disk); checkpoints and the WAL's growth work the same."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    directory = Path(tempfile.mkdtemp(prefix="runarchive-test-", dir=shm))
    try:
        yield directory
    finally:
        shutil.rmtree(directory)


@pytest.mark.slow
def test_the_wal_stays_bounded_during_a_long_append_stream(
    tmp_path: Path, memory_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Measured before the fix: 1.5 GB of WAL beside a 0.8 MB database after 190,000
    # events (~20 KB of WAL each): the flusher's PASSIVE checkpoints seldom let SQLite
    # start the WAL over while appends kept adding to it. Here 20,000 events write
    # 400 MB of WAL; the old code passed this bound after 1,266 events and ended with
    # 25-32 MiB in memory (where checkpoints are fast; on disk it kept growing). The
    # limit is scaled down 8x so that the bound (the 64 MiB for 16 MiB) is
    # tight and the WAL restarts ~150 times.
    monkeypatch.setattr(cache_wal, "WAL_LIMIT_BYTES", 2 * 1024 * 1024)
    events, bound = 20_000, 8 * 1024 * 1024
    cache_dir = memory_dir / "c"
    wal = cache_dir / "cache.sqlite3-wal"
    with Archive.open(
        (tmp_path / "bucket").as_uri(),
        cache_dir=cache_dir,
        flush_records=256,
        flush_age=0.2,
    ) as archive:
        run = archive.start_run(agent="wal")
        peak = restarts = previous = 0
        for i in range(events):
            run.event("tick", {"i": i})
            size = wal.stat().st_size
            assert size < bound, f"WAL at {size:,} bytes after {i + 1} events"
            peak, restarts, previous = max(peak, size), restarts + (size < previous), size
        archive.flush()
        assert len(archive.restore(run.run_id).records) == events
    assert restarts > 50  # the WAL did reach its limit and was truncated, many times
    assert peak > cache_wal.WAL_LIMIT_BYTES, peak


def test_a_reader_holding_the_wal_delays_its_reset_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cache_wal, "WAL_LIMIT_BYTES", 256 * 1024)
    cache_dir = tmp_path / "c"
    wal = cache_dir / "cache.sqlite3-wal"
    with (
        caplog.at_level(logging.WARNING, logger="runarchive.cache"),
        Archive.open((tmp_path / "bucket").as_uri(), cache_dir=cache_dir) as archive,
    ):
        run = archive.start_run(agent="wal")
        run.event("tick", {"i": 0})
        # Another process reading the cache (a sqlite3 shell) with a transaction open.
        reader = sqlite3.connect(f"file:{cache_dir / 'cache.sqlite3'}?mode=ro", uri=True)
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM records").fetchone()
        run.event("tick", {"i": 1})
        assert archive.cache.reset_wal() is False  # appends were held 25 ms at most
        deadline = time.monotonic() + 20
        while "could not start the cache's WAL" not in caplog.text:
            assert time.monotonic() < deadline, "no warning while a reader held the WAL"
            run.event("tick", {"i": 2})
        assert "a reader kept it" in caplog.text
        assert wal.stat().st_size > 2 * cache_wal.WAL_LIMIT_BYTES
        reader.rollback()
        reader.close()
        assert archive.cache.reset_wal() is True
        run.event("tick", {"i": 3})  # the first commit after a reset truncates the file
        assert wal.stat().st_size <= cache_wal.WAL_LIMIT_BYTES
