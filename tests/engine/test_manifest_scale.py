"""Manifest format 2 under the cases that broke format 1: write costs that must not grow
with the archive, many writers renewing at once, interrupted() at fleet size, paged
listings while runs finish, legacy format 1 shards, takeovers of live writers."""

from __future__ import annotations

import json
import random
import re
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import zstandard
from support.backends import abandon, s3_store_for
from support.servers import S3Server
from test_manifest import entry, plant_live

from runarchive import Archive, Reader
from runarchive.cli.main import main
from runarchive.engine.manifest import core as manifest
from runarchive.engine.manifest import live as manifest_live
from runarchive.engine.manifest.core import Manifest, RunEntry, shard_key, shard_of
from runarchive.engine.manifest.listing import PageToken
from runarchive.errors import InvalidInputError, PageExpiredError
from runarchive.format.model import format_ts, utcnow
from runarchive.store import CountingStore, FileStore, MemoryStore

T = datetime(2026, 3, 4, 10, 0, tzinfo=UTC)


def fixed(run_id: str, **fields: Any) -> RunEntry:
    """An entry with fixed times, so that two setups write the very same bytes."""
    base: dict[str, Any] = {
        "run_id": run_id,
        "agent": "a",
        "created_at": T,
        "updated_at": T,
        "owner_host": "measured",
        "owner_pid": 7,
    }
    return RunEntry(**{**base, **fields})


def finish_cost(
    finished_before: int, monkeypatch: pytest.MonkeyPatch
) -> tuple[dict[str, int], int]:
    """Requests and bytes written by one writer finishing 5 runs, in an archive where
    8 other processes finished ``finished_before`` runs in the same hour."""
    store = CountingStore(MemoryStore())
    others = [Manifest(store, host=f"other{i}", pid=100 + i, seed=i) for i in range(8)]
    for n in range(finished_before):
        ended = T + timedelta(seconds=n % 3000)
        others[n % 8].finish(fixed(f"old-{n:06d}", status="completed", ended_at=ended))
    # The same clock and writer key in both setups, so that the bytes can be equal.
    clock = lambda: T + timedelta(minutes=1)  # noqa: E731
    monkeypatch.setattr(manifest_live, "utcnow", clock)
    monkeypatch.setattr(manifest, "utcnow", clock)
    monkeypatch.setattr(manifest, "new_writer_key", lambda *a: "measured.7.0000abcd.60")
    m = Manifest(store, host="measured", pid=7, seed=99)
    for i in range(5):
        m.upsert_active(fixed(f"new-{i}"))
    store.reset()
    for i in range(5):
        m.finish(fixed(f"new-{i}", status="completed", ended_at=T))
    monkeypatch.undo()
    return dict(store.counts), store.bytes_out


@pytest.mark.slow
def test_finish_writes_the_same_whatever_the_number_of_finished_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    small_counts, small_bytes = finish_cost(10, monkeypatch)
    big_counts, big_bytes = finish_cost(2000, monkeypatch)
    assert small_counts == big_counts == {"put": 10}  # done object + live object, each
    assert small_bytes == big_bytes


def test_a_writer_rolls_its_done_object_so_no_put_grows_past_256_runs() -> None:
    store = CountingStore(MemoryStore())
    m = Manifest(store, host="busy", pid=1)
    sizes: list[int] = []
    for n in range(600):
        before = store.bytes_out
        m._writers()[2].add(fixed(f"r{n:04d}", status="completed").model_dump(mode="json"), T)
        sizes.append(store.bytes_out - before)
    keys = sorted(meta.key for meta in store.list("manifest/done/"))
    assert len(keys) == 3
    assert all("/20260304/10-busy.1." in k for k in keys)
    assert max(sizes) <= 1.05 * max(sizes[:256])
    assert len(Manifest(store).read_all(("done",))) == 600


def test_renewals_of_many_writers_never_conflict() -> None:
    store = CountingStore(MemoryStore())
    writers = [Manifest(store, host=f"h{i:03d}", seed=i) for i in range(40)]
    runs = {i: [entry(f"r-{i}-{j}") for j in range(5)] for i in range(40)}
    for i, m in enumerate(writers):
        for e in runs[i]:
            m.upsert_active(e)
    barrier = threading.Barrier(40)
    lost: list[set[str]] = []

    def renew(i: int) -> None:
        barrier.wait()
        for _ in range(25):
            lost.append(writers[i].renew(runs[i]))

    threads = [threading.Thread(target=renew, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(lost) == 1000
    assert not any(lost)
    assert sum(m.conflicts for m in writers) == 0  # 1,000 renewals, no 412


def test_interrupted_gets_only_the_stale_writers(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    for i in range(300):  # healthy writers, two runs each
        m = Manifest(store, host=f"h{i:03d}", lease_seconds=60)
        m.upsert_active(entry(f"ok-{i}-0"))
        m.upsert_active(entry(f"ok-{i}-1"))
    past = utcnow() - timedelta(seconds=30)
    for i in range(4):
        plant_live(store, f"dead{i}", [entry(f"dead-{i}", lease_expires_at=past)], age=40)
    counting = CountingStore(store)
    found = Manifest(counting).interrupted()
    assert sorted(e.run_id for e in found) == [f"dead-{i}" for i in range(4)]
    assert dict(counting.counts) == {"list": 2, "get": 4}


def test_paged_listing_lists_every_run_once_while_runs_finish(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    writers = [Manifest(store, host=f"w{i}", seed=i) for i in range(3)]
    rng = random.Random(5)
    running: list[tuple[Manifest, RunEntry]] = []
    expected: set[str] = set()
    for n in range(240):
        m = writers[n % 3]
        e = entry(f"run-{n:03d}", created_at=utcnow() - timedelta(days=3))
        expected.add(e.run_id)
        if n % 4 == 0:  # finished days ago: in older day partitions
            ended = utcnow() - timedelta(days=n % 3, hours=1)
            old = e.model_copy(
                update={"status": "completed", "ended_at": ended, "updated_at": ended}
            )
            m._writers()[2].add(old.model_dump(mode="json"), ended)
        elif n % 4 == 1:
            m.finish(e.model_copy(update={"status": "failed", "ended_at": utcnow()}))
        else:
            m.upsert_active(e)
            running.append((m, e))
    reader = Manifest(CountingStore(store))
    seen: list[str] = []
    page: str | None = None
    pages = 0
    while True:
        got = reader.page(limit=17, page=page)
        assert len(got) <= 17
        seen += [e.run_id for e in got]
        pages += 1
        # Between pages, runs finish (and new ones start: they are not listed).
        for _ in range(6):
            if running:
                m, e = running.pop(rng.randrange(len(running)))
                m.finish(e.model_copy(update={"status": "completed", "ended_at": utcnow()}))
        writers[0].upsert_active(entry(f"late-{pages}"))
        if got.next_page is None:
            break
        page = got.next_page
    assert len(seen) == len(set(seen)), "a run was listed twice"
    assert expected <= set(seen), "a run was not listed"
    # Runs started during the walk may be listed (created within the skew margin of
    # the first page) or not, never twice.
    assert set(seen) - expected <= {f"late-{n}" for n in range(pages + 1)}
    assert pages >= 240 // 17


@pytest.mark.slow
def test_page_requests_are_bounded_by_the_page(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    m = Manifest(store, host="w")
    for n in range(3000):  # 12 done objects of one hour
        ended = T + timedelta(seconds=n)
        done = fixed(f"r{n:05d}", status="completed", ended_at=ended, updated_at=ended)
        m._writers()[2].add(done.model_dump(mode="json"), ended)
    counting = CountingStore(store)
    got = Manifest(counting).page(limit=100)
    assert len(got) == 100
    assert got.next_page is not None
    # LIST writers, LIST days, LIST the day, 1 batch of GETs (16 objects at most).
    assert counting.counts["list"] == 3
    assert counting.counts["get"] <= 16
    total = len(got)
    page = got.next_page
    while page is not None:
        more = Manifest(store).page(limit=1000, page=page)
        total += len(more)
        page = more.next_page
    assert total == 3000


def test_page_token_errors(tmp_path: Path) -> None:
    m = Manifest(FileStore(tmp_path))
    m.upsert_active(entry("r"))
    with pytest.raises(InvalidInputError, match="invalid page token"):
        m.page(page="garbage!")
    old = PageToken(t0=format_ts(utcnow() - timedelta(hours=1)), phase="live").text()
    with pytest.raises(PageExpiredError, match="list again from the first page"):
        m.page(page=old)


def _legacy(store: FileStore, kind: str, entries: list[dict[str, Any]]) -> None:
    """Write format 1 shards the way runarchive ≤ manifest format 1 did."""
    by_shard: dict[int, dict[str, Any]] = {}
    for d in entries:
        by_shard.setdefault(shard_of(d["run_id"]), {})[d["run_id"]] = d
    for shard, runs in by_shard.items():
        doc = {"format": 1, "kind": kind, "shard": shard, "runs": runs}
        store.put(
            shard_key(kind, shard),  # type: ignore[arg-type]
            zstandard.ZstdCompressor().compress(json.dumps(doc).encode()),
        )


def test_a_legacy_format_1_manifest_lists_resumes_and_finishes(tmp_path: Path) -> None:
    url = (tmp_path / "b").as_uri()
    store = FileStore(tmp_path / "b")
    old = Archive.open(url, cache_dir=tmp_path / "c0", host_id="old", lease_seconds=3)
    with old.start_run(agent="x", run_id="old-done") as run:
        run.event("e")
    live = old.start_run(agent="x", run_id="old-live")
    live.event("e")
    live.flush()
    listed = Manifest(store).read_all()
    abandon(old)
    # Turn this archive's manifest into what a format 1 writer left.
    for meta in list(store.list("manifest/")):
        store.delete(meta.key)
    running = dict(listed["old-live"], lease_expires_at=format_ts(utcnow() - timedelta(seconds=9)))
    _legacy(store, "active", [running])
    _legacy(store, "done", [listed["old-done"]])

    reader = Reader.open(url)
    assert sorted((e.run_id, e.status) for e in reader.list_runs()) == [
        ("old-done", "completed"),
        ("old-live", "running"),
    ]
    assert [e.run_id for e in reader.interrupted()] == ["old-live"]
    assert set(reader.manifest.lookup(["old-done", "old-live"])) == {"old-done", "old-live"}

    new = Archive.open(url, cache_dir=tmp_path / "c1", host_id="new")
    again = new.resume("old-live", expected_epoch=1)
    assert reader.interrupted() == []
    assert "old-live" not in Manifest(store).read_all(("active",)) or (
        Manifest(store).read_all(("active",))["old-live"]["owner_host"] == "new"
    )
    again.event("e2")
    again.complete()
    new.close()
    final = {e.run_id: e for e in Reader.open(url).list_runs(limit=None)}
    assert (final["old-live"].status, final["old-live"].epoch) == ("completed", 2)
    assert final["old-done"].status == "completed"
    legacy_active = json.loads(
        zstandard.ZstdDecompressor().decompress(
            store.get(shard_key("active", shard_of("old-live"))).body
        )
    )
    assert legacy_active["runs"] == {}  # format 1 shards are only ever emptied


def test_a_takeover_fences_a_live_writer_at_its_next_renewal(tmp_path: Path) -> None:
    url = (tmp_path / "b").as_uri()
    a = Archive.open(url, cache_dir=tmp_path / "a", host_id="a", flush_age=3600)
    run = a.start_run(agent="x", run_id="contested")
    run.event("e")
    run.flush()
    b = Archive.open(url, cache_dir=tmp_path / "b", host_id="b")
    b.resume("contested")
    assert a.engine.renew_leases() == 0  # its object no longer lists the run
    assert "contested" in a.engine.fenced
    assert [(e.owner_host, e.epoch) for e in Reader.open(url).list_runs()] == [("b", 2)]
    a.close()
    b.close()


def test_cli_runs_pages(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = (tmp_path / "b").as_uri()
    with Archive.open(url, cache_dir=tmp_path / "c") as archive:
        for i in range(5):
            with archive.start_run(agent="p", run_id=f"p{i}") as run:
                run.event("e")
    seen: list[str] = []
    args = ["--url", url, "runs", "--json", "--limit", "2"]
    while True:
        assert main(args) == 0
        captured = capsys.readouterr()
        seen += [e["run_id"] for e in json.loads(captured.out)]
        if "--page" not in captured.err:
            break
        args = ["--url", url, "runs", "--json", "--limit", "2", "--page", captured.err.split()[-1]]
    assert sorted(seen) == [f"p{i}" for i in range(5)]
    assert main(["--url", url, "runs", "--limit", "0"]) == 0
    assert "5 runs" in capsys.readouterr().out


@pytest.mark.real_server
def test_takeover_and_renewal_cas_on_seaweedfs(seaweed: S3Server) -> None:
    """The conditional writes the design relies on, against a real S3 server: a
    takeover edits the owner's object by If-Match; the owner's next renewal gets its
    412, re-reads, and reports the run lost without putting it back."""
    store = s3_store_for(seaweed, seaweed.make_bucket("mf2"))
    owner = Manifest(store, host="owner", pid=11, lease_seconds=3)
    owner.upsert_active(entry("r1", epoch=1))
    owner.upsert_active(entry("r2", epoch=1))
    taker = Manifest(store, host="taker", pid=12)
    taker.moved("r1", "owner", 11)
    taker.upsert_active(entry("r1", epoch=2, owner_host="taker"))
    assert owner.renew([entry("r1", epoch=1), entry("r2", epoch=1)]) == {"r1"}
    assert owner.conflicts == 1
    listed = Manifest(store).read_all(("active",))
    assert {r: (d["owner_host"], d["epoch"]) for r, d in listed.items()} == {
        "r1": ("taker", 2),
        "r2": ("", 1),
    }
    # Two processes finishing into their own done objects at once: no 412 either.
    owner.finish(entry("r2", status="completed", ended_at=utcnow()))
    taker.finish(entry("r1", epoch=2, status="completed", ended_at=utcnow()))
    assert sorted(Manifest(store).read_all(("done",))) == ["r1", "r2"]
    assert owner.conflicts + taker.conflicts == 1


@pytest.mark.slow
def test_a_dead_process_backlog_listed_by_its_successor_still_looks_interrupted(
    tmp_path: Path,
) -> None:
    """The successor flushes a run the dead process never listed: it lists it in its
    lease-0 object, which nothing renews, so the run still becomes interrupted."""
    url = (tmp_path / "b").as_uri()
    first = Archive.open(url, cache_dir=tmp_path / "c", host_id="h", flush_age=3600)
    first.start_run(agent="x", run_id="never-listed").event("e")
    abandon(first)  # died before the first flush: not in the manifest
    second = Archive.open(url, cache_dir=tmp_path / "c", host_id="h", lease_seconds=3)
    second.flush()
    keys = [m.key for m in second.store.list("manifest/live/")]
    assert len(keys) == 1
    assert keys[0].endswith(".0.json.zst")  # the object no renewal vouches for
    assert second.engine.renew_leases() == 0
    deadline = time.monotonic() + 10
    while not second.interrupted() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [e.run_id for e in second.interrupted()] == ["never-listed"]
    again = second.run("never-listed")  # taken up by this process: vouched for again
    assert second.engine.renew_leases() == 1
    assert second.interrupted() == []
    again.complete()
    second.close()
    assert [m.key for m in FileStore(tmp_path / "b").list("manifest/live/")] != keys


def test_every_manifest_key_matches_the_regexes_of_format_md(tmp_path: Path) -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "format.md").read_text()
    patterns = [
        re.compile(line.split(None, 1)[1].strip())
        for line in text.splitlines()
        if line.startswith(("live:  ^manifest/", "done:  ^manifest/"))
    ]
    assert len(patterns) == 2
    url = (tmp_path / "b").as_uri()
    with Archive.open(url, cache_dir=tmp_path / "c", host_id="ip-10-0-0-1.ec2.internal") as a:
        with a.start_run(agent="x") as run:
            run.event("e")
        a.start_run(agent="x").event("e")
        a.flush()
        keys = [m.key for m in a.store.list("manifest/")]
    assert {k.split("/")[1] for k in keys} == {"live", "done"}
    for key in keys:
        assert any(p.fullmatch(key) for p in patterns), key


def test_a_first_page_right_after_a_burst_of_finishes_lists_every_run() -> None:
    store = MemoryStore()
    m = Manifest(store, host="burst", pid=1)
    now = utcnow()
    ids = [f"b{n:04d}" for n in range(300)]
    for rid in ids:
        e = RunEntry(run_id=rid, agent="a", created_at=now, updated_at=now)
        m.upsert_active(e)
        m.finish(e.model_copy(update={"status": "completed", "ended_at": utcnow()}))
    reader, seen, token = Manifest(store), [], None
    while True:
        got = reader.page(limit=100, page=token)
        seen += [e.run_id for e in got]
        token = got.next_page
        if token is None:
            break
    assert sorted(seen) == ids
