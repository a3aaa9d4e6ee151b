"""The cache schema's versions: every shape an older runarchive wrote migrates on open
(data kept, ``PRAGMA user_version`` current), a newer one is refused, and a step that
fails leaves the file whole at the previous version (src/runarchive/cache/schema.py).

The DDL below is history, copied from the commits that wrote it: never edit it to match
today's schema; add the new shape instead.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from runarchive import Archive, Reader
from runarchive.cache.core import Cache
from runarchive.cache.migrations import prepare
from runarchive.cache.schema import CACHE_FILE, MIGRATIONS, SCHEMA_VERSION, Migration
from runarchive.cache.status import read_status
from runarchive.errors import CacheError

URL = "file:///tmp/bucket-of-the-history-test"

# 12a344b and 82d61f0 (2026-11-25): a per-record `flushed` flag (0 pending, 1 archived,
# 2 left out by the policy); 82d61f0 added runs.evicted_seq.
_RUNS_V1 = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    agent TEXT NOT NULL,
    metadata TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    ended_at TEXT,
    result TEXT,
    error TEXT,
    last_seq INTEGER NOT NULL DEFAULT 0,
    first_checkpoint_seq INTEGER,
    archived_seq INTEGER NOT NULL DEFAULT 0,
    index_etag TEXT,
    index_json TEXT,
    status_archived INTEGER NOT NULL DEFAULT 0{evicted}
);
"""
_RECORDS_FLUSHED = """
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts TEXT NOT NULL,
    type TEXT NOT NULL,
    name TEXT NOT NULL,
    line BLOB NOT NULL,
    flushed INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS records_run_seq ON records (run_id, seq);
CREATE INDEX IF NOT EXISTS records_pending ON records (run_id, flushed, seq);
"""
# 5580e25 (2026-11-25): the archived_seq watermark; records carry their size.
_RECORDS_SIZED = """
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts TEXT NOT NULL,
    type TEXT NOT NULL,
    name TEXT NOT NULL,
    size INTEGER NOT NULL,
    line BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS records_run_seq ON records (run_id, seq);
CREATE INDEX IF NOT EXISTS records_run_name ON records (run_id, type, name, seq);
"""
_EVICTED = ",\n    evicted_seq INTEGER NOT NULL DEFAULT 0"
V1 = _RUNS_V1.format(evicted="") + _RECORDS_FLUSHED
V2 = _RUNS_V1.format(evicted=_EVICTED) + _RECORDS_FLUSHED
V3 = _RUNS_V1.format(evicted=_EVICTED) + _RECORDS_SIZED
# What each later runarchive added to an older cache at open (`ALTER TABLE` probing).
_ADDED = [
    # 27db759: ownership epochs and the manifest
    "ALTER TABLE runs ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE runs ADD COLUMN fenced INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE runs ADD COLUMN manifest_state INTEGER NOT NULL DEFAULT 0;",
    "ALTER TABLE runs ADD COLUMN policy TEXT;",  # 9f0bf4d
    "ALTER TABLE runs ADD COLUMN flush_error TEXT;"  # 94c8ef4
    "ALTER TABLE runs ADD COLUMN flush_error_at TEXT;",
    "ALTER TABLE runs ADD COLUMN writer TEXT NOT NULL DEFAULT '';",  # 7883711
    "ALTER TABLE runs ADD COLUMN verified_seq INTEGER NOT NULL DEFAULT 0;",  # 394a0c9
]
V4, V5, V6, V7, V8 = (V3 + "".join(_ADDED[:n]) for n in range(1, 6))
# 394a0c9 (the last runarchive before user_version), creating a cache: every column in
# the DDL but the flush error ones, which it always added by ALTER.
V8_FRESH = (
    _RUNS_V1.format(
        evicted=_EVICTED
        + """,
    epoch INTEGER NOT NULL DEFAULT 0,
    fenced INTEGER NOT NULL DEFAULT 0,
    manifest_state INTEGER NOT NULL DEFAULT 0,
    policy TEXT,
    writer TEXT NOT NULL DEFAULT '',
    verified_seq INTEGER NOT NULL DEFAULT 0"""
    )
    + _RECORDS_SIZED
    + "ALTER TABLE runs ADD COLUMN flush_error TEXT;"
    "ALTER TABLE runs ADD COLUMN flush_error_at TEXT;"
)
HISTORY = {
    "v1-12a344b": (1, V1),
    "v2-82d61f0": (2, V2),
    "v3-5580e25": (3, V3),
    "v4-27db759": (4, V4),
    "v5-9f0bf4d": (5, V5),
    "v6-94c8ef4": (6, V6),
    "v7-7883711": (7, V7),
    "v8-394a0c9": (8, V8),
    "v8-394a0c9-created": (8, V8_FRESH),
}

TS = "2026-11-25T05:00:00.000000Z"
LINES = [
    b'{"run":"r1","seq":1,"ts":"%s","type":"checkpoint","name":"plan","metadata":{},'
    b'"state":{"i":1}}' % TS.encode(),
    b'{"run":"r1","seq":2,"ts":"%s","type":"event","kind":"tool","lane":"main",'
    b'"data":{"n":2}}' % TS.encode(),
    b'{"run":"r1","seq":3,"ts":"%s","type":"checkpoint","name":"plan","metadata":{},'
    b'"state":{"i":3,"pad":"xxxxxxxx"}}' % TS.encode(),
]


def _columns(db: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}


def _legacy_cache(directory: Path, ddl: str, *, url: str = URL, archived_seq: int = 2) -> Path:
    """A cache file as an older runarchive left it: its DDL, the meta rows it wrote, one
    run with three records of which those above ``archived_seq`` are pending."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / CACHE_FILE
    ts = TS
    with sqlite3.connect(path) as db:
        db.executescript(ddl)
        db.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?)", [("schema", "1"), ("archive_url", url)]
        )
        runs = _columns(db, "runs")
        row = {
            "run_id": "r1",
            "agent": "historian",
            "metadata": '{"k":"v"}',
            "status": "running",
            "created_at": ts,
            "updated_at": ts,
            "last_seq": 3,
            "first_checkpoint_seq": 1,
            "archived_seq": archived_seq,
            "epoch": 1,
            "writer": "w-legacy",
            "policy": '{"keep_all":true}',
        }
        row = {k: v for k, v in row.items() if k in runs}
        db.execute(
            f"INSERT INTO runs ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
            list(row.values()),
        )
        flushed = "flushed" in _columns(db, "records")
        for seq, line in enumerate(LINES, start=1):
            rtype = "event" if seq == 2 else "checkpoint"
            name = "tool" if seq == 2 else "plan"
            if flushed:
                db.execute(
                    "INSERT INTO records (run_id, seq, ts, type, name, line, flushed) "
                    "VALUES ('r1', ?, ?, ?, ?, ?, ?)",
                    (seq, ts, rtype, name, line, int(seq <= archived_seq)),
                )
            else:
                db.execute(
                    "INSERT INTO records (run_id, seq, ts, type, name, size, line) "
                    "VALUES ('r1', ?, ?, ?, ?, ?, ?)",
                    (seq, ts, rtype, name, len(line), line),
                )
    return path


def _shape(path: Path) -> tuple[int, dict[str, set[str]], set[str]]:
    """user_version, the columns of each table, the index names."""
    with sqlite3.connect(path) as db:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        tables = {t: _columns(db, t) for t in ("meta", "runs", "records")}
        indexes = {
            r[0]
            for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
            if not r[0].startswith("sqlite_autoindex")
        }
    db.close()
    return version, tables, indexes


@pytest.fixture(scope="module")
def current_shape(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, dict, set[str]]:
    directory = tmp_path_factory.mktemp("fresh")
    Cache(directory, URL).close()
    return _shape(directory / CACHE_FILE)


def test_migrations_are_ordered_and_end_at_the_schema_version() -> None:
    assert [m.to for m in MIGRATIONS] == list(range(2, SCHEMA_VERSION + 1))
    assert all(m.statements and m.marks and m.what for m in MIGRATIONS)


def test_a_new_cache_starts_at_the_current_version(current_shape: tuple) -> None:
    version, tables, indexes = current_shape
    assert version == SCHEMA_VERSION
    assert {"flush_error", "flush_error_at", "verified_seq", "writer"} <= tables["runs"]
    assert "flushed" not in tables["records"]
    assert indexes == {"records_run_seq", "records_run_name"}


@pytest.mark.parametrize("shape", sorted(HISTORY))
def test_every_historic_cache_migrates_on_open_and_keeps_its_data(
    shape: str, tmp_path: Path, current_shape: tuple
) -> None:
    version, ddl = HISTORY[shape]
    path = _legacy_cache(tmp_path / "c", ddl)
    assert _shape(path)[0] == 0  # written before user_version

    cache = Cache(tmp_path / "c", URL)
    try:
        row = cache.run("r1")
        assert row is not None
        assert (row.agent, row.metadata, row.status) == ("historian", '{"k":"v"}', "running")
        assert (row.last_seq, row.archived_seq, row.first_checkpoint_seq) == (3, 2, 1)
        # Columns the shape had keep their values; the others get their defaults.
        assert row.epoch == (1 if version >= 4 else 0)
        assert row.policy == ('{"keep_all":true}' if version >= 5 else None)
        assert row.writer == ("w-legacy" if version >= 7 else "")
        assert row.verified_seq == 0
        assert [r.line for r in cache.records("r1")] == LINES
        # Pending is what it was: seq 3 only (for v1/v2, the records with flushed = 0).
        pending = cache.pending("r1", 100, 3)
        assert [(r.seq, r.name, r.size) for r in pending] == [(3, "plan", len(LINES[2]))]
        assert cache.unflushed_bytes() == len(LINES[2])
        assert [r.size for r in cache.infos("r1", 1, 3)] == [len(line) for line in LINES]
        cache.append("r1", 4, "2026-12-04T00:00:00.000000Z", "event", "tool", b'{"seq":4}')
        cache.note_flush_error("r1", "StoreUnavailableError: down", "2026-12-04T00:00:01Z")
    finally:
        cache.close()

    assert _shape(path) == current_shape  # same version, columns and indexes as a new one
    (backlog,) = read_status(tmp_path / "c").runs
    assert (backlog.unflushed_records, backlog.last_flush_error) == (
        2,
        "StoreUnavailableError: down",
    )


def test_opening_a_migrated_cache_again_changes_nothing(tmp_path: Path) -> None:
    path = _legacy_cache(tmp_path / "c", V3)
    Cache(tmp_path / "c", URL).close()
    with sqlite3.connect(path) as db:
        before = db.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
        rows = db.execute("SELECT * FROM runs").fetchall()
    db.close()
    cache = Cache(tmp_path / "c", URL)
    try:
        with sqlite3.connect(path) as db:
            assert prepare(db, path) == SCHEMA_VERSION  # found current: no step ran
        db.close()
    finally:
        cache.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall() == (
            before
        )
        assert db.execute("SELECT * FROM runs").fetchall() == rows
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.close()


def test_a_step_that_fails_leaves_the_previous_version_whole(tmp_path: Path) -> None:
    path = _legacy_cache(tmp_path / "c", V3)
    # The step to 5 adds its column, then fails (as a crash or a full disk would):
    # the column must be rolled back with it, and the step to 4 kept.
    broken = [
        *MIGRATIONS[:3],
        Migration(5, "broken", (*MIGRATIONS[3].statements, "INSERT INTO nowhere VALUES (1)"), ()),
        *MIGRATIONS[4:],
    ]
    db = sqlite3.connect(path, isolation_level=None)
    try:
        with pytest.raises(sqlite3.OperationalError, match="nowhere"):
            prepare(db, path, broken)
        assert db.execute("PRAGMA user_version").fetchone()[0] == 4
        assert "epoch" in _columns(db, "runs")
        assert "policy" not in _columns(db, "runs")
        assert not db.in_transaction
    finally:
        db.close()
    # The next open runs the failed step again and the rest.
    cache = Cache(tmp_path / "c", URL)
    try:
        row = cache.run("r1")
        assert row is not None
        assert (row.epoch, row.policy, row.last_seq) == (0, None, 3)
        assert [r.line for r in cache.records("r1")] == LINES
    finally:
        cache.close()
    assert _shape(path)[0] == SCHEMA_VERSION


# Runs the migrations with one step killed (SIGKILL, as a power cut) after its statements
# ran and before its commit; the connection is set up as Cache's is (WAL, synchronous FULL).
KILLED_MIGRATION = textwrap.dedent(
    """
    import os, signal, sqlite3, sys
    from pathlib import Path
    from runarchive.cache.migrations import prepare
    from runarchive.cache.schema import MIGRATIONS, Migration
    path, dies = Path(sys.argv[1]), int(sys.argv[2])
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.create_function("power_cut", 0, lambda: os.kill(os.getpid(), signal.SIGKILL))
    steps = [
        Migration(m.to, m.what, (*m.statements, "SELECT power_cut()"), m.marks)
        if m.to == dies else m
        for m in MIGRATIONS
    ]
    prepare(db, path, steps)
    print("NOT KILLED")
    """
)


@pytest.mark.parametrize("dies", [3, SCHEMA_VERSION])
def test_a_process_killed_mid_step_leaves_a_cache_that_migrates_at_the_next_open(
    dies: int, tmp_path: Path
) -> None:
    path = _legacy_cache(tmp_path / "c", V1)
    child = subprocess.run(
        [sys.executable, "-c", KILLED_MIGRATION, str(path), str(dies)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert child.returncode == -9, child.stderr
    assert "NOT KILLED" not in child.stdout
    with sqlite3.connect(path) as db:  # recovers the WAL as the next opener would
        assert db.execute("PRAGMA user_version").fetchone()[0] == dies - 1
        # The step to 3 rebuilds the records table: none of it is half done.
        assert ("flushed" in _columns(db, "records")) == (dies == 3)
    db.close()
    cache = Cache(tmp_path / "c", URL)
    try:
        assert [r.line for r in cache.records("r1")] == LINES
        assert [r.seq for r in cache.pending("r1", 100, 3)] == [3]
    finally:
        cache.close()
    assert _shape(path)[0] == SCHEMA_VERSION


def test_a_cache_from_a_newer_runarchive_is_refused_and_left_alone(tmp_path: Path) -> None:
    Cache(tmp_path / "c", URL).close()
    path = tmp_path / "c" / CACHE_FILE
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    data = path.read_bytes()
    with pytest.raises(CacheError, match=r"newer runarchive.*upgrade runarchive"):
        Cache(tmp_path / "c", URL)
    with pytest.raises(CacheError, match="upgrade runarchive"):
        read_status(tmp_path / "c")
    assert path.read_bytes() == data
    assert not [p for p in (tmp_path / "c").iterdir() if "corrupt" in p.name]  # not moved
    # The refusal released the directory lock: a second open is refused the same way.
    with pytest.raises(CacheError, match="newer runarchive"):
        Cache(tmp_path / "c", URL)


def test_status_reads_an_older_cache_without_migrating_it(tmp_path: Path) -> None:
    # An agent of an older runarchive may be writing it: status only reads.
    path = _legacy_cache(tmp_path / "c", V5)
    (backlog,) = read_status(tmp_path / "c").runs
    assert (backlog.run_id, backlog.unflushed_records, backlog.last_flush_error) == ("r1", 1, None)
    assert _shape(path)[0] == 0


def test_an_upgraded_host_flushes_the_backlog_an_older_runarchive_left(tmp_path: Path) -> None:
    url = (tmp_path / "bucket").as_uri()
    with Archive.open(url, cache_dir=tmp_path / "probe") as archive:
        cache_url = archive.url  # what the archive keeps in meta.archive_url
    _legacy_cache(tmp_path / "c", V8_FRESH, url=cache_url, archived_seq=0)
    with Archive.open(url, cache_dir=tmp_path / "c") as archive:
        archive.flush()
        assert archive.status().runs[0].unflushed_records == 0
    with Reader.open(url) as reader:
        restored = reader.restore("r1")
    assert [r.seq for r in restored.records] == [1, 2, 3]
    assert restored.checkpoints[-1].state == {"i": 3, "pad": "xxxxxxxx"}
