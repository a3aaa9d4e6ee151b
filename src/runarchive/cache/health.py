"""Is a cache file healthy, and what to do when it is not (used by :mod:`runarchive.cache.core`).

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
import stat
from datetime import UTC, datetime
from pathlib import Path

from runarchive.errors import CacheError

log = logging.getLogger("runarchive.cache_health")

SQLITE_MAGIC = b"SQLite format 3\x00"
# PRAGMA quick_check reads every page: ≈ 0.3 ms per MB with the file in the page
# cache, ≈ 2.8 ms per MB cold (measured on a 100 MB cache: 30 ms / 280 ms). Above
# this size only the O(1) header checks run at open.
QUICK_CHECK_MAX_BYTES = 256 * 1024 * 1024


# The cache holds agent state in plain text: only its owner may read it, whatever
# the process umask (docs/design.md, "The local cache").
DIR_MODE = 0o700
FILE_MODE = 0o600


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


def private_directory(directory: Path) -> None:
    """Create ``directory`` (and missing parents) with mode 0700, whatever the umask;
    tighten an existing one that others may enter, with a warning."""
    try:
        directory.mkdir(mode=DIR_MODE, parents=True)
        created = True
    except FileExistsError:
        if not directory.is_dir():
            raise CacheError(
                f"cache directory {directory} exists and is not a directory; "
                "remove it or give another cache_dir"
            ) from None
        created = False
    except OSError as exc:
        raise CacheError(f"cannot create cache directory {directory}: {exc}") from exc
    _tighten(directory, DIR_MODE, created=created)


def private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 if it is missing (whatever the umask), or
    tighten it if others may read it (with a warning)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    except FileExistsError:
        _tighten(path, FILE_MODE, created=False)
        return
    except OSError as exc:
        raise CacheError(
            f"cannot create {path} ({exc.strerror}); the process needs write access to "
            "the cache directory, or use another cache_dir"
        ) from exc
    try:
        os.fchmod(fd, FILE_MODE)  # the umask may have taken owner bits away
    finally:
        os.close(fd)


def tighten_existing(paths: list[Path]) -> None:
    """Tighten those of ``paths`` that exist as regular files and others may read."""
    for path in paths:
        if path.is_file() and not path.is_symlink():
            _tighten(path, FILE_MODE, created=False)


def _tighten(path: Path, mode: int, *, created: bool) -> None:
    """Give ``path`` exactly ``mode`` if this process just created it; otherwise only
    take group/other bits away, and say so (owner bits are the owner's choice)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise CacheError(f"cannot inspect {path} ({exc.strerror}); check the cache_dir") from exc
    have = stat.S_IMODE(st.st_mode)
    if have == mode or (not created and not have & 0o077):
        return
    if created:
        try:
            os.chmod(path, mode)
        except OSError as exc:
            raise CacheError(f"cannot set mode {mode:o} on {path} ({exc.strerror})") from exc
        return
    if st.st_uid != os.geteuid():
        log.warning(
            "%s has mode %o and belongs to uid %d, not this process (uid %d): other users "
            "may read the cache's plain-text agent state; chmod it to %o or use another "
            "cache_dir",
            path,
            have,
            st.st_uid,
            os.geteuid(),
            mode,
        )
        return
    try:
        os.chmod(path, have & 0o700)
    except OSError as exc:
        log.warning(
            "%s has mode %o (other users may read the cache's plain-text agent state) and "
            "setting %o failed (%s); chmod it yourself or use another cache_dir",
            path,
            have,
            have & 0o700,
            exc.strerror,
        )
        return
    log.warning(
        "%s had mode %o: other users could read the cache's plain-text agent state; it is now %o",
        path,
        have,
        have & 0o700,
    )
