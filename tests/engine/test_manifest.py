"""The manifest: per-writer live objects, done partitions, leases, interrupted runs,
resume and fencing (adversarial scale cases: test_manifest_scale.py)."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import zstandard
from support.backends import Backend, StoreFactory, abandon, s3_settings
from support.servers import S3Server, unique_bucket_name

from runarchive import Archive, Policy, Reader
from runarchive.cli.main import main
from runarchive.engine.manifest.core import Manifest, RunEntry
from runarchive.errors import (
    CorruptObjectError,
    FencedError,
    FormatVersionError,
    InvalidInputError,
    ObjectLockedError,
    ResumeConflictError,
    RunNotFoundError,
    RunStateError,
)
from runarchive.format.model import utcnow
from runarchive.store import CountingStore, FileStore


def entry(run_id: str, **fields: Any) -> RunEntry:
    now = utcnow()
    base: dict[str, Any] = {"run_id": run_id, "agent": "a", "created_at": now, "updated_at": now}
    return RunEntry(**{**base, **fields})


def test_concurrent_writers_lose_nothing_and_never_conflict(
    make_race_store: StoreFactory,
) -> None:
    """Six processes ("hosts") list, renew and finish runs at once: each writes only its
    own objects, so nothing is lost and no write of one ever fails another's CAS."""
    store = make_race_store()
    managers = [Manifest(store, seed=i, host=f"h{i}") for i in range(6)]
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    def host(i: int) -> None:
        try:
            barrier.wait()
            mine = [entry(f"run-{i}-{j}", owner_host=f"h{i}") for j in range(4)]
            for e in mine:
                managers[i].upsert_active(e)
            assert managers[i].renew(mine) == set()
            for e in mine[:2]:
                managers[i].finish(e.model_copy(update={"status": "completed"}))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=host, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    listed = Manifest(store).read_all()
    assert sorted(listed) == sorted(f"run-{i}-{j}" for i in range(6) for j in range(4))
    assert sum(d["status"] == "completed" for d in listed.values()) == 12
    assert sum(m.conflicts for m in managers) == 0


def test_finish_moves_a_run_from_active_to_done(make_store: StoreFactory) -> None:
    store = make_store()
    m = Manifest(store)
    m.upsert_active(entry("r1"))
    m.upsert_active(entry("r2"))
    m.finish(entry("r1", status="completed", ended_at=utcnow()))
    active = Manifest(store).read_all(("active",))
    done = Manifest(store).read_all(("done",))
    assert (sorted(active), sorted(done)) == (["r2"], ["r1"])
    assert Manifest(store).read_all()["r1"]["status"] == "completed"


def test_done_wins_when_a_run_is_in_both(tmp_path: Path) -> None:
    """A crash between the two writes of finish() leaves the run in both places."""
    m = Manifest(FileStore(tmp_path))
    m.upsert_active(entry("r1"))
    failed = entry("r1", status="failed", ended_at=utcnow())
    m._writers()[2].add(failed.model_dump(mode="json"), utcnow())  # the first write only
    assert Manifest(FileStore(tmp_path)).read_all()["r1"]["status"] == "failed"
    assert [e.run_id for e in m.entries(status="running")] == ["r1"]  # still live there
    assert [e.status for e in m.entries()] == ["failed"]


def test_entries_filters_and_order(tmp_path: Path) -> None:
    m = Manifest(FileStore(tmp_path))
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    for i in range(10):
        e = entry(f"r{i}", agent=("x", "y")[i % 2], created_at=t0 + timedelta(days=i))
        if i < 6:
            m.finish(e.model_copy(update={"status": ("completed", "failed")[i % 3 == 0]}))
        else:
            m.upsert_active(e)
    assert [e.run_id for e in m.entries()] == [f"r{i}" for i in range(9, -1, -1)]
    assert [e.run_id for e in m.entries(status="running")] == ["r9", "r8", "r7", "r6"]
    assert [e.run_id for e in m.entries(status="failed")] == ["r3", "r0"]
    assert [e.run_id for e in m.entries(agent="y", since=t0 + timedelta(days=4))] == [
        "r9",
        "r7",
        "r5",
    ]
    assert [e.run_id for e in m.entries(until=t0 + timedelta(days=1))] == ["r1", "r0"]
    assert len(m.entries(limit=3)) == 3
    # One page holding everything gives the same answers.
    assert [e.run_id for e in m.page()] == [f"r{i}" for i in range(9, -1, -1)]
    assert [e.run_id for e in m.page(status="failed")] == ["r3", "r0"]
    assert [e.run_id for e in m.page(agent="y", since=t0 + timedelta(days=4))] == [
        "r9",
        "r7",
        "r5",
    ]


def plant_live(
    store: FileStore, host: str, runs: list[RunEntry], *, age: float, lease: int = 3
) -> str:
    """A live object as a process that stopped ``age`` seconds ago left it."""
    key = f"manifest/live/{host}.4242.{abs(hash(host)) % 16**8:08x}.{lease}.json.zst"
    doc = {
        "format": 2,
        "kind": "live",
        "writer": key.rsplit("/", maxsplit=1)[-1].removesuffix(".json.zst"),
        "host": host,
        "pid": 4242,
        "lease_seconds": lease,
        "updated_at": (utcnow() - timedelta(seconds=age)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "runs": {e.run_id: e.model_dump(mode="json") for e in runs},
    }
    store.put(key, zstandard.ZstdCompressor().compress(json.dumps(doc).encode()))
    when = time.time() - age
    os.utime(store.root / key, (when, when))
    return key


def test_interrupted_means_running_with_an_expired_lease(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    m = Manifest(store, host="alive-host")
    now = utcnow()
    m.upsert_active(entry("alive", lease_expires_at=now + timedelta(seconds=60)))
    plant_live(store, "h1", [entry("dead", lease_expires_at=now - timedelta(seconds=5))], age=8)
    plant_live(
        store, "h2", [entry("long-dead", lease_expires_at=now - timedelta(hours=2))], age=7300
    )
    m.finish(entry("done", status="completed", lease_expires_at=now - timedelta(hours=9)))
    counting = CountingStore(store)
    reader = Manifest(counting)
    assert [e.run_id for e in reader.interrupted()] == ["dead", "long-dead"]
    # 1 LIST of the writers, 1 of the legacy shards, a GET of each stale object only.
    assert dict(counting.counts) == {"list": 2, "get": 2}
    assert [e.run_id for e in reader.interrupted(timedelta(hours=1))] == ["long-dead"]


def test_an_older_epoch_never_overwrites_a_newer_owner(tmp_path: Path) -> None:
    m = Manifest(FileStore(tmp_path))
    m.upsert_active(entry("r", epoch=2, owner_host="new"))
    m.upsert_active(entry("r", epoch=1, owner_host="old"))
    assert m.renew([entry("r", epoch=1, owner_host="old")]) == {"r"}
    assert m.read_all()["r"]["owner_host"] == "new"


def test_objects_are_zstd_json_and_versioned(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    m = Manifest(store)
    m.upsert_active(entry("r"))
    key = f"manifest/live/{m.writer}.json.zst"
    doc = json.loads(zstandard.ZstdDecompressor().decompress(store.get(key).body))
    assert (doc["format"], doc["kind"], doc["writer"]) == (2, "live", m.writer)
    assert doc["runs"]["r"]["agent"] == "a"
    doc["format"] = 3
    store.put(key, zstandard.ZstdCompressor().compress(json.dumps(doc).encode()))
    with pytest.raises(FormatVersionError, match="format version 3"):
        Manifest(store).read_all()
    store.put(key, b"not zstd")
    with pytest.raises(CorruptObjectError, match="manifest/live"):
        Manifest(store).read_all()


def test_request_budgets(tmp_path: Path) -> None:
    with Archive.open((tmp_path / "b").as_uri(), cache_dir=tmp_path / "c") as archive:
        for i in range(12):
            with archive.start_run(agent=f"a{i % 3}") as run:
                run.event("e", i)
        live = [archive.start_run(agent="live") for _ in range(3)]
        for run in live:
            run.event("e")
            run.flush()  # indexed and listed as running
        reader = Reader.open((tmp_path / "b").as_uri())
        reader.store.reset()
        assert len(reader.list_runs()) == 15
        # 1 LIST of writers + their object, the day's LIST + its objects, the legacy
        # LISTs: whatever the number of runs (test_manifest_scale grows it).
        assert reader.store.counts["get"] <= 4
        assert reader.store.counts["list"] <= 6
        reader.store.reset()
        assert len(reader.list_runs(status="running")) == 3
        assert dict(reader.store.counts) == {"list": 2, "get": 1}
        reader.store.reset()
        assert reader.interrupted() == []
        assert dict(reader.store.counts) == {"list": 2}  # nothing stale: no GET at all
        # A lease renewal: one PUT of this process's own object (the first of a
        # process also sweeps what its host's exited processes left: 1 LIST).
        assert archive.engine.renew_leases() == 3
        archive.store.reset()
        assert archive.engine.renew_leases() == 3
        assert dict(archive.store.counts) == {"put": 1}


def test_resume_after_a_crash_continues_the_seq(backend: Backend) -> None:
    first = backend.open(lease_seconds=3, host_id="host-a", policy=Policy(keep_all=True))
    run = first.start_run(agent="resumable", run_id="job-1", metadata={"k": 1})
    for i in range(30):
        run.checkpoint(("plan", "act")[i % 2], {"i": i})
    run.flush()
    abandon(first)  # host A dies

    second = backend.open(host_id="host-b")
    listed = second.list_runs(status="running")
    assert [(e.run_id, e.owner_host, e.epoch) for e in listed] == [("job-1", "host-a", 1)]
    again = second.resume("job-1")
    assert again.last_seq == 30
    latest = again.latest("plan")
    assert latest is not None
    assert latest.state == {"i": 28}
    assert again.checkpoint("plan", {"i": 30}).seq == 31
    again.complete()
    restored = backend.open().restore("job-1")
    assert [c.state["i"] for c in restored.checkpoints] == list(range(31))
    assert (restored.index.epoch, restored.index.owner_host) == (2, "host-b")
    (done,) = second.list_runs()
    assert (done.status, done.owner_host, done.epoch, done.last_seq) == (
        "completed",
        "host-b",
        2,
        31,
    )


def test_a_run_keeps_its_own_policy_across_a_resume(backend: Backend) -> None:
    # The archives keep only the last checkpoint; the run asked to keep them all.
    first = backend.open(host_id="host-a", policy=Policy(keep_last=1, keep_latest_per_name=False))
    run = first.start_run(agent="a", run_id="own-policy", policy=Policy(keep_all=True))
    other = first.start_run(agent="a", run_id="default-policy")
    for i in range(10):
        run.checkpoint("step", {"i": i})
        other.checkpoint("step", {"i": i})
    run.flush()
    other.flush()
    abandon(first)

    second = backend.open(host_id="host-b", policy=Policy(keep_last=1, keep_latest_per_name=False))
    again = second.resume("own-policy")
    for i in range(10, 15):
        again.checkpoint("step", {"i": i})
    again.complete()
    restored = second.restore("own-policy")
    assert [c.state["i"] for c in restored.checkpoints] == list(range(15))
    assert restored.index.policy == Policy(keep_all=True).model_dump()
    # the first checkpoint, and the last one
    assert [c.state["i"] for c in second.restore("default-policy").checkpoints] == [0, 9]
    with pytest.raises(InvalidInputError, match="policy must be a Policy"):
        second.start_run(agent="a", policy={"keep_all": True})  # type: ignore[arg-type]


def test_a_live_owner_is_fenced_by_a_resume(backend: Backend) -> None:
    host_a = backend.open(host_id="host-a", flush_age=3600)
    run_a = host_a.start_run(agent="zombie", run_id="job-z")
    run_a.checkpoint("c", {"by": "a", "i": 0})
    run_a.flush()
    host_b = backend.open(host_id="host-b")
    run_b = host_b.resume("job-z")
    run_a.checkpoint("c", {"by": "a", "i": 1})  # still only local
    with pytest.raises(FencedError, match="taken over by host-b"):
        run_a.flush()
    with pytest.raises(FencedError):
        run_a.checkpoint("c", {"by": "a", "i": 2})
    run_b.checkpoint("c", {"by": "b", "i": 1})
    run_b.complete()
    restored = backend.open().restore("job-z")
    assert [c.state for c in restored.checkpoints] == [{"by": "a", "i": 0}, {"by": "b", "i": 1}]
    # A's fenced record is still in A's cache for an operator: the query in
    # docs/design.md ("Getting a fenced writer's records out") finds it.
    with contextlib.closing(sqlite3.connect(host_a.cache.path)) as db:
        lines = db.execute(
            "SELECT line FROM records WHERE run_id = 'job-z' AND seq > "
            "(SELECT archived_seq FROM runs WHERE run_id = 'job-z') ORDER BY seq"
        ).fetchall()
    assert [json.loads(line)["state"] for (line,) in lines] == [{"by": "a", "i": 1}]


def test_resume_refuses_finished_and_unknown_runs(backend: Backend) -> None:
    archive = backend.open()
    with archive.start_run(agent="x", run_id="fin") as run:
        run.event("e")
    other = backend.open()
    with pytest.raises(RunStateError, match="completed; only running runs resume"):
        other.resume("fin")
    with pytest.raises(RunNotFoundError):
        other.resume("nope")


def test_delete_run(backend: Backend) -> None:
    archive = backend.open(flush_records=3)
    with archive.start_run(agent="x", run_id="gone") as run:
        for i in range(7):
            run.event("e", i)
            if i == 2:
                run.flush()  # at least two segments, whatever the background flusher does
    segments = len(archive.index("gone").segments)
    assert segments >= 2
    assert archive.delete_run("gone") == segments + 1  # the segments and the index
    assert list(archive.store.list("runs/gone/")) == []
    assert archive.list_runs() == []
    with pytest.raises(RunNotFoundError):
        archive.restore("gone")
    with pytest.raises(RunNotFoundError):
        archive.delete_run("gone")


@pytest.mark.slow
def test_cli_runs_interrupted_and_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = (tmp_path / "b").as_uri()
    crashed = Archive.open(url, cache_dir=tmp_path / "c1", lease_seconds=3, host_id="h1")
    run = crashed.start_run(agent="cli", run_id="cli-run")
    run.checkpoint("c", {"step": 1})
    run.flush()
    abandon(crashed)
    assert main(["--url", url, "runs", "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert (listed["run_id"], listed["status"], listed["owner_host"]) == (
        "cli-run",
        "running",
        "h1",
    )
    deadline = time.monotonic() + 10
    while True:
        assert main(["--url", url, "interrupted", "--json"]) == 0
        found = json.loads(capsys.readouterr().out)
        if found or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert [e["run_id"] for e in found] == ["cli-run"]
    assert main(["--url", url, "resume", "cli-run", "--cache-dir", str(tmp_path / "c2")]) == 0
    out = capsys.readouterr().out
    assert "resumed   cli-run" in out
    assert "next seq  2" in out
    assert main(["--url", url, "runs", "--status", "running"]) == 0
    assert "1 runs" in capsys.readouterr().out


def test_delete_run_refuses_a_locked_run_and_deletes_nothing(
    seaweed: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweed.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweed.secret_key)
    client = seaweed.client()
    bucket = unique_bucket_name("locked")
    client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    url = seaweed.url(bucket, "agents")
    with Archive.open(url, cache_dir=tmp_path / "c", **s3_settings(seaweed)) as archive:
        with archive.start_run(agent="audited", run_id="held") as run:
            run.event("e", 1)
        seg = archive.index("held").segments[0].key
        client.put_object_legal_hold(Bucket=bucket, Key=f"agents/{seg}", LegalHold={"Status": "ON"})
        with pytest.raises(ObjectLockedError, match=r"under a legal hold\. Nothing was deleted"):
            archive.delete_run("held")
        assert [e.run_id for e in archive.list_runs()] == ["held"]
        assert archive.restore("held").events[0].data == 1
        client.put_object_legal_hold(
            Bucket=bucket, Key=f"agents/{seg}", LegalHold={"Status": "OFF"}
        )
        assert archive.delete_run("held") == 2


@pytest.mark.slow
def test_a_run_recovered_from_a_dead_process_is_not_kept_alive(tmp_path: Path) -> None:
    """Reopening a cache flushes what a dead process left, but renews no lease for it:
    only a run this process writes is vouched for."""
    url = (tmp_path / "b").as_uri()
    first = Archive.open(url, cache_dir=tmp_path / "c", lease_seconds=3, host_id="h")
    run = first.start_run(agent="x", run_id="orphaned")
    run.event("e")
    run.flush()
    abandon(first)
    reopened = Archive.open(url, cache_dir=tmp_path / "c", lease_seconds=3, host_id="h")
    assert reopened.engine.renew_leases() == 0
    deadline = time.monotonic() + 10
    while not reopened.interrupted() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [e.run_id for e in reopened.interrupted()] == ["orphaned"]
    again = reopened.resume("orphaned")  # this host's cache holds it: no takeover
    assert again.event("e").seq == 2
    assert reopened.engine.renew_leases() == 1
    assert reopened.interrupted() == []
    again.complete()
    (entry_,) = reopened.list_runs()
    assert (entry_.status, entry_.epoch) == ("completed", 1)
    reopened.close()


def test_resume_with_expected_epoch_does_not_take_a_run_from_its_new_owner(
    tmp_path: Path,
) -> None:
    url = (tmp_path / "b").as_uri()
    dead = Archive.open(url, cache_dir=tmp_path / "a", host_id="a")
    dead.start_run(agent="x", run_id="contested").event("e")
    dead.flush()
    abandon(dead)
    b = Archive.open(url, cache_dir=tmp_path / "b", host_id="b")
    c = Archive.open(url, cache_dir=tmp_path / "c", host_id="c")
    (seen,) = c.list_runs(status="running")  # c saw epoch 1, then b got there first
    b.resume("contested", expected_epoch=seen.epoch)
    with pytest.raises(ResumeConflictError, match="at epoch 2, not 1: b took it over"):
        c.resume("contested", expected_epoch=seen.epoch)
    assert Reader.open(url).index("contested").owner_host == "b"
    b.close()
    c.close()


def test_newest_first_is_time_order_and_naive_bounds_are_refused(tmp_path: Path) -> None:
    m = Manifest(FileStore(tmp_path))
    t = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
    plus2 = timezone(timedelta(hours=2))
    m.upsert_active(entry("a", created_at=t))  # .000000 microseconds
    m.upsert_active(entry("b", created_at=t + timedelta(milliseconds=500)))
    m.upsert_active(entry("c", created_at=datetime(2026, 5, 1, 13, 30, tzinfo=plus2)))  # 11:30Z
    assert [e.run_id for e in m.entries()] == ["b", "a", "c"]
    assert [e.run_id for e in m.entries(since=t)] == ["b", "a"]
    with pytest.raises(InvalidInputError, match="timezone-aware"):
        m.entries(since=datetime(2026, 1, 1))
