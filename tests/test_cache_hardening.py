"""The local cache keeps agent state private and its WAL bounded (issue 12)."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from runarchive import Archive


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
