"""Is a cache file healthy, and what to do when it is not (used by :mod:`runarchive.cache`).

Checks at open are cheap: the header (magic, page size, whole pages) in O(1), then
``PRAGMA quick_check`` for files up to :data:`QUICK_CHECK_MAX_BYTES`. A damaged file
is moved aside with its ``-wal``/``-shm`` (never deleted) and the operator is told
what was kept where (docs/design.md, "Corrupt cache").
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from runarchive.errors import CacheError

log = logging.getLogger(__name__)

SQLITE_MAGIC = b"SQLite format 3\x00"
# PRAGMA quick_check reads every page: ≈ 0.3 ms per MB with the file in the page
# cache, ≈ 2.8 ms per MB cold (measured on a 100 MB cache: 30 ms / 280 ms). Above
# this size only the O(1) header checks run at open.
QUICK_CHECK_MAX_BYTES = 256 * 1024 * 1024


class CorruptCache(Exception):
    """The cache file is damaged (not a permission or I/O problem): move it aside."""


def check_file(path: Path) -> int:
    """O(1) checks of the database file's header; returns its size (0: absent).

    A file this process may not read is a ``CacheError``, never "corrupt": it is
    not moved.
    """
    try:
        with open(path, "rb") as fh:
            header = fh.read(100)
            size = os.fstat(fh.fileno()).st_size
    except FileNotFoundError:
        return 0
    except OSError as exc:  # permissions, I/O: not the file's content
        raise CacheError(
            f"cannot read the cache {path} ({exc.strerror}); nothing was moved. "
            "Fix its permissions (the process needs read and write access to the "
            "directory and its files) or use another cache_dir."
        ) from exc
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists() and not os.access(side, os.R_OK | os.W_OK):
            raise CacheError(
                f"cannot read and write {side}; nothing was moved. Fix its permissions "
                "or use another cache_dir."
            )
    if size == 0:
        return 0  # SQLite treats an empty file as a new database
    if len(header) < 100 or not header.startswith(SQLITE_MAGIC):
        raise CorruptCache("not a SQLite database (bad header)")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    if page_size < 512 or page_size & (page_size - 1):
        raise CorruptCache(f"bad page size {page_size} in the header")
    if size % page_size:
        raise CorruptCache(f"truncated: {size} bytes is not a whole number of pages")
    return size


def move_aside(path: Path, reason: str) -> tuple[Path, str]:
    """Move the damaged database and its -wal/-shm aside (never delete); log and return
    where it went and the message for the operator."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    moved = []
    # The WAL first: a stale WAL left next to a fresh database would be replayed
    # into it. The aside names keep SQLite's pairing (<db>-wal), so
    # `sqlite3 <aside>` still reads what the WAL held.
    for suffix in ("-wal", "-shm", ""):
        src = path.with_name(path.name + suffix)
        if src.exists():
            dst = aside.with_name(aside.name + suffix)
            try:
                os.rename(src, dst)
            except OSError as exc:
                raise CacheError(
                    f"the cache {path} is corrupt ({reason}) and moving it aside "
                    f"to {dst} failed ({exc.strerror}); nothing was deleted. Move it "
                    "yourself, or use another cache_dir."
                ) from exc
            moved.append(dst.name)
    with contextlib.suppress(OSError):  # make the renames durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    message = (
        f"the cache {path} was corrupt ({reason}). It was moved aside, not "
        f"deleted: {', '.join(moved)} in {path.parent}; a fresh cache was created. "
        "Records that were in it but had not reached the bucket are lost to this host "
        f"(`sqlite3 {aside}` may still read some of them). Everything flushed before "
        "is in the bucket: continue a run with archive.resume(run_id) or read it with "
        "`runarchive restore RUN`."
    )
    log.warning("%s", message)
    return aside, message


def is_corruption(exc: sqlite3.DatabaseError) -> bool:
    """SQLite's own verdict that the file is damaged (not busy, not read-only, not I/O)."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    return code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


def write_error(path: Path, exc: sqlite3.Error) -> CacheError:
    """The error to raise for a failed cache write: "disk full" when it is one."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    if code == sqlite3.SQLITE_FULL or (code == sqlite3.SQLITE_IOERR and no_room(path)):
        return CacheError(
            f"the cache disk is full: {path} could not grow ({exc}); nothing was "
            f"recorded. Free space on the disk holding {path.parent} or move cache_dir "
            "(RUNARCHIVE_CACHE_DIR); the next append succeeds once there is room."
        )
    return CacheError(
        f"writing to the cache {path} failed ({exc}); nothing was recorded. Check "
        "the disk holding it, or move cache_dir."
    )


def no_room(path: Path) -> bool:
    """After an I/O error: is the disk (almost) full, or a file at the size limit
    (``RLIMIT_FSIZE``: the write fails with EFBIG, which SQLite reports as I/O)?"""
    try:
        st = os.statvfs(path.parent)
        if st.f_bavail * st.f_frsize < 1024 * 1024:
            return True
        soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
        if soft == resource.RLIM_INFINITY:
            return False
        sizes = [p.stat().st_size for p in (path, path.with_name(path.name + "-wal")) if p.exists()]
        return any(size + 1024 * 1024 > soft for size in sizes)
    except OSError:
        return False
