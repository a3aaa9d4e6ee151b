"""The local cache under faults: a corrupt or missing cache file at open, an
unreadable one, and a full disk at append (docs/design.md, "Corrupt cache")."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from runarchive import Archive, Policy
from runarchive.cache import health as cache_health
from runarchive.errors import CacheError


def _fill(tmp_path: Path) -> tuple[str, Path, str]:
    """An archive with one run flushed to the bucket and closed (the WAL folded into
    the database file). Returns the URL, the cache dir and the run id."""
    url = (tmp_path / "bucket").as_uri()
    cache_dir = tmp_path / "cache"
    with Archive.open(url, cache_dir=cache_dir, policy=Policy(keep_all=True)) as archive:
        run = archive.start_run(agent="a", run_id="kept")
        for i in range(1, 41):
            run.checkpoint("step", {"i": i, "pad": "p" * 3000})
        run.event("tool", {"n": 1})
        archive.flush()
    return url, cache_dir, "kept"


def _truncate_mid_page(data: bytes) -> bytes:
    return data[: len(data) // 2 + 1000]


def _truncate_whole_pages(data: bytes) -> bytes:
    return data[: (len(data) // 2) // 4096 * 4096]


def _corrupt_header(data: bytes) -> bytes:
    return b"\xde\xad\xbe\xef" * 4 + data[16:]


def _corrupt_pages(data: bytes) -> bytes:
    # Overwrite the b-tree page headers and cell pointers of pages 2..5.
    out = bytearray(data)
    for page in range(1, 5):
        out[page * 4096 : page * 4096 + 64] = b"\xff" * 64
    return bytes(out)


def _garbage(data: bytes) -> bytes:
    return os.urandom(10_000)


DAMAGE: dict[str, Callable[[bytes], bytes]] = {
    "truncated-mid-page": _truncate_mid_page,
    "truncated-whole-pages": _truncate_whole_pages,
    "corrupt-header": _corrupt_header,
    "corrupt-pages": _corrupt_pages,
    "garbage": _garbage,
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_corrupt_cache_is_moved_aside_and_runs_come_back_from_the_bucket(
    damage: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url, cache_dir, run_id = _fill(tmp_path)
    db = cache_dir / "cache.sqlite3"
    assert not db.with_name("cache.sqlite3-wal").exists()  # folded in at close
    damaged = DAMAGE[damage](db.read_bytes())
    db.write_bytes(damaged)

    with caplog.at_level(logging.WARNING, logger="runarchive.cache_health"):
        archive = Archive.open(url, cache_dir=cache_dir, policy=Policy(keep_all=True))
    try:
        aside = archive.cache.recovered_from
        assert aside is not None
        assert aside.parent == cache_dir
        assert aside.name.startswith("cache.sqlite3.corrupt-")
        assert aside.read_bytes() == damaged  # kept, byte for byte
        message = archive.cache.recovery_message
        assert message is not None
        for needed in (str(aside.name), "lost to this host", "archive.resume(run_id)"):
            assert needed in message
        assert message in caplog.text
        assert archive.cache.runs() == []  # a fresh cache

        run = archive.resume(run_id)  # from the bucket
        assert run.last_seq == 41
        latest = run.latest("step")
        assert latest is not None
        assert latest.state["i"] == 40
        assert run.checkpoint("step", {"i": 42}).seq == 42
        run.complete()
    finally:
        archive.close()
    restored = Archive.open(url, cache_dir=tmp_path / "other").restore(run_id)
    assert [r.seq for r in restored.records] == list(range(1, 43))


def test_missing_cache_starts_fresh(tmp_path: Path) -> None:
    url, cache_dir, run_id = _fill(tmp_path)
    (cache_dir / "cache.sqlite3").unlink()
    with Archive.open(url, cache_dir=cache_dir) as archive:
        assert archive.cache.recovered_from is None
        assert archive.cache.runs() == []
        assert archive.resume(run_id).last_seq == 41
    with Archive.open(url, cache_dir=tmp_path / "never" / "made") as archive:
        assert archive.cache.recovered_from is None
        assert archive.restore(run_id).records[-1].seq == 41


def test_healthy_cache_is_not_moved(tmp_path: Path) -> None:
    url, cache_dir, run_id = _fill(tmp_path)
    with Archive.open(url, cache_dir=cache_dir) as archive:
        assert archive.cache.recovered_from is None
        assert archive.cache.run(run_id) is not None
    assert [p.name for p in cache_dir.iterdir() if "corrupt" in p.name] == []


def test_unreadable_cache_is_a_clear_error_and_is_not_moved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, cache_dir, _ = _fill(tmp_path)
    db = cache_dir / "cache.sqlite3"
    original = db.read_bytes()
    if os.geteuid() == 0:
        # root reads whatever the mode bits say: make the open fail as it would.
        real_open = open

        def denying_open(file: object, *args: object, **kwargs: object) -> object:
            if Path(str(file)) == db:
                raise PermissionError(13, "Permission denied", str(file))
            return real_open(file, *args, **kwargs)  # type: ignore[call-overload]

        monkeypatch.setattr(cache_health, "open", denying_open, raising=False)
    else:
        db.chmod(0)
    try:
        with pytest.raises(CacheError, match=r"Permission denied.*nothing was moved"):
            Archive.open(url, cache_dir=cache_dir)
    finally:
        db.chmod(0o644)
    assert sorted(p.name for p in cache_dir.iterdir()) == ["cache.sqlite3", "lock"]
    assert db.read_bytes() == original
    monkeypatch.undo()
    with Archive.open(url, cache_dir=cache_dir) as archive:  # and it is still good
        assert archive.cache.recovered_from is None
        assert archive.cache.run("kept") is not None


def test_disk_full_at_append_sqlite_full(tmp_path: Path) -> None:
    # SQLITE_FULL, made deterministic by capping the database's page count.
    url = (tmp_path / "bucket").as_uri()
    with Archive.open(url, cache_dir=tmp_path / "c", flush_age=3600) as archive:
        run = archive.start_run(agent="a")
        assert run.checkpoint("s", {"i": 1}).seq == 1
        conn = archive.cache._conn()  # this thread's connection: the one appending
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages + 2}")
        with pytest.raises(CacheError, match=r"cache disk is full.*nothing was recorded"):
            run.checkpoint("s", {"i": 2, "blob": os.urandom(200_000).hex()})
        assert run.last_seq == 1
        assert [r.seq for r in archive.cache.records(run.run_id)] == [1]
        assert archive.cache.run(run.run_id).last_seq == 1  # type: ignore[union-attr]
        conn.execute("PRAGMA max_page_count = 1073741823")  # space freed
        assert run.checkpoint("s", {"i": 2}).seq == 2
        run.complete()
    restored = Archive.open(url, cache_dir=tmp_path / "d").restore(run.run_id)
    assert [r.seq for r in restored.records] == [1, 2]


_FSIZE_CHILD = textwrap.dedent(
    """
    import json, os, resource, signal, sys
    from runarchive import Archive
    from runarchive.errors import CacheError

    url, cache_dir = sys.argv[1:3]
    out = {}
    archive = Archive.open(url, cache_dir=cache_dir, flush_age=3600)
    run = archive.start_run(agent="a", run_id="full")
    run.checkpoint("s", {"i": 1})
    # The write fails with EFBIG instead of killing the process.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    # Appends grow the WAL (the flusher has not checkpointed it): cap it where it is.
    wal = archive.cache.path.with_name("cache.sqlite3-wal").stat().st_size
    resource.setrlimit(resource.RLIMIT_FSIZE, (wal, resource.RLIM_INFINITY))
    for size in (8_000, 2_000_000):  # fails at commit (WAL append) / mid-statement (spill)
        try:
            run.checkpoint("s", {"i": 2, "blob": os.urandom(size).hex()})
            out[f"error_{size}"] = None
        except CacheError as exc:
            out[f"error_{size}"] = str(exc)
        out[f"last_seq_{size}"] = run.last_seq
        out[f"cached_{size}"] = [r.seq for r in archive.cache.records("full")]
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    out["next_seq"] = run.checkpoint("s", {"i": 2}).seq
    run.complete()
    archive.close()
    print(json.dumps(out))
    """
)


def test_disk_full_at_append_file_size_limit(tmp_path: Path) -> None:
    # A real failing write(2): RLIMIT_FSIZE makes the cache's files unable to grow.
    url = (tmp_path / "bucket").as_uri()
    proc = subprocess.run(
        [sys.executable, "-c", _FSIZE_CHILD, url, str(tmp_path / "c")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    for size in (8_000, 2_000_000):
        assert out[f"error_{size}"] is not None, f"{size}-byte state was not refused"
        assert "the cache disk is full" in out[f"error_{size}"]
        assert "nothing was recorded" in out[f"error_{size}"]
        assert out[f"last_seq_{size}"] == 1
        assert out[f"cached_{size}"] == [1]
    assert out["next_seq"] == 2
    restored = Archive.open(url, cache_dir=tmp_path / "d").restore("full")
    assert [r.seq for r in restored.records] == [1, 2]
