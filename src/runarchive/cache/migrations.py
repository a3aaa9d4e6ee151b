"""Create the cache's schema, or bring an older cache file to the current version.

Each step of :data:`~runarchive.cache.schema.MIGRATIONS` runs in its own
``BEGIN IMMEDIATE`` transaction together with the ``PRAGMA user_version`` it leads
to (SQLite keeps that number in the database header, under the same journal): a
crash or an error mid-step leaves the file at the previous version, whole, and the
next open runs the step again. A cache from a newer runarchive is refused, never
downgraded.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path

from runarchive.cache.schema import (
    MIGRATIONS,
    RECORDS,
    RUNS,
    SCHEMA_VERSION,
    TABLES,
    Migration,
    legacy_version,
)
from runarchive.errors import CacheError

log = logging.getLogger("runarchive.cache")


def schema_version(db: sqlite3.Connection) -> int:
    """The cache's ``PRAGMA user_version`` (0: never set)."""
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def refuse_newer(version: int, path: Path, known: int = SCHEMA_VERSION) -> None:
    """``CacheError`` if ``version`` is past what this runarchive knows."""
    if version > known:
        raise CacheError(
            f"the cache {path} has schema version {version}, written by a newer runarchive "
            f"(this one knows up to {known}); upgrade runarchive, or give this "
            "process another cache_dir (the newer version's cache is left as it is)"
        )


def _columns(db: sqlite3.Connection) -> set[str]:
    return {
        f"{table}.{row[1]}"
        for table in (RUNS, RECORDS)
        for row in db.execute(f"PRAGMA table_info({table})")
    }


def _in_transaction(db: sqlite3.Connection, statements: Iterable[str], version: int) -> None:
    db.execute("BEGIN IMMEDIATE")
    try:
        for sql in statements:
            db.execute(sql)
        db.execute(f"PRAGMA user_version = {int(version)}")
        db.execute("COMMIT")
    except BaseException:
        # SQLite may have rolled back already (disk full): the error raised is the one
        # that says why.
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        raise


def prepare(
    db: sqlite3.Connection,
    path: Path,
    migrations: Sequence[Migration] = MIGRATIONS,
) -> int | None:
    """Create the schema in a new cache, or migrate an older one to the last version of
    ``migrations``. Returns the version found (``None``: a new cache). ``db`` must be
    in autocommit mode (``isolation_level=None``); the caller holds the directory lock.
    """
    target = 1 + len(migrations)
    version = schema_version(db)
    refuse_newer(version, path, target)
    if version == 0:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if RUNS not in tables:
            _in_transaction(db, TABLES, target)
            return None
        # Written before user_version: placed by its columns, then stamped, so the
        # steps below run exactly as for a versioned file.
        version = legacy_version(_columns(db), migrations)
        _in_transaction(db, (), version)
    found = version
    for step in migrations[version - 1 :]:
        _in_transaction(db, step.statements, step.to)
        log.info("cache %s: schema %d -> %d (%s)", path, step.to - 1, step.to, step.what)
    return found
