"""Trust: what a host acknowledged is in the bucket, or it was told loudly that it is not.

Each test runs on a fresh SeaweedFS bucket, most with a fault proxy in front of it that
injects one fault at a chosen request: a spurious 412 on a segment PUT, a PUT answered
200 but never stored ("unstored") on a segment or an index. Two-host cases open two
archives (two cache directories, two ``host_id``s) on one bucket. What a fresh host
restores is compared, record by record, with what the writers acknowledged.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from support.backends import abandon
from support.faultproxy import FaultProxy
from support.trust import Hosts, cli, content, first, run_exists_error

from runarchive import errors
from runarchive.errors import FencedError, InvalidInputError, RunArchiveError, RunNotFoundError
from runarchive.format.model import Checkpoint, Event
from runarchive.run import Run

pytestmark = pytest.mark.real_server


@pytest.fixture
def proxy(hosts: Hosts) -> Iterator[FaultProxy]:
    with FaultProxy(hosts.server.endpoint_url, seed=7, hold_seconds=2.0) as p:
        yield p


Acked = list[tuple[str, str, Any]]


def write(run: Run, tag: str, n: int, acked: Acked, *, start: int = 0) -> None:
    """Append ``n`` records (checkpoints, every third an event); note each one acknowledged."""
    for i in range(start, start + n):
        rec: Checkpoint | Event
        if i % 3 == 2:
            rec = run.event("tool_call", {"host": tag, "i": i})
        else:
            rec = run.checkpoint("step", {"host": tag, "i": i, "text": f"{tag}-{i} " * 3})
        acked.append(content(rec))


def restored(hosts: Hosts, run_id: str) -> tuple[Acked, Any]:
    """A fresh host's restore of ``run_id``: contents in seq order (gapless from 1), index."""
    got = hosts.reader().restore(run_id)
    assert [r.seq for r in got.records] == list(range(1, len(got.records) + 1))
    return [content(r) for r in got.records], got.index


def listed(hosts: Hosts) -> dict[str, str]:
    return {e.run_id: e.status for e in hosts.reader().list_runs(limit=None)}


def problems(hosts: Hosts, run_id: str) -> list[str]:
    report = hosts.reader().verify(run_id)
    return [str(p) for p in report.problems if p.severity == "error" or p.kind == "missing"]


# -- 1. two hosts create the same run id ---------------------------------------------------


def test_two_hosts_start_the_same_run_id_one_wins_nothing_acked_is_lost(hosts: Hosts) -> None:
    """Both start run "same" before either flushes. Today both succeed, both flush
    "successfully", and the loser's acknowledged records vanish (its flush adopts the
    winner's index). New: the run is claimed create-only in the bucket at start_run, so
    exactly one start succeeds and the other raises RunExistsError."""
    a, b = hosts.open("host-a"), hosts.open("host-b")
    started: dict[str, Run] = {}
    refused: dict[str, Exception] = {}
    for name, host in (("host-a", a), ("host-b", b)):
        try:
            started[name] = host.start_run("agent", run_id="same")
        except Exception as exc:
            refused[name] = exc
    acked: dict[str, Acked] = {name: [] for name in started}
    for name, run in started.items():
        write(run, name, 4, acked[name])
    a.flush()
    b.flush()
    a.close()
    b.close()

    got, index = restored(hosts, "same")
    everything = [rec for recs in acked.values() for rec in recs]
    missing = [rec for rec in everything if rec not in got]
    assert missing == [], f"acknowledged records lost: {missing}"
    assert len(started) == 1, f"both hosts started run 'same': {sorted(started)}"
    (winner,) = started
    assert got == acked[winner]  # exactly the winner's records, in order
    assert index.owner_host == winner
    (loser,) = refused
    err = refused[loser]
    exists = run_exists_error()
    assert isinstance(err, exists), f"{loser} got {err!r}, not RunExistsError"
    assert issubclass(exists, InvalidInputError)
    assert "same" in str(err)


# -- 4. a spurious 412 on a segment PUT ----------------------------------------------------


def test_a_spurious_412_on_a_segment_put_is_healed(hosts: Hosts, proxy: FaultProxy) -> None:
    """A proxy answers 412 to the first create-only segment PUT without forwarding it.
    Today the flusher takes the 412 for "already stored", the index names a segment
    that is not there and a fresh host's restore raises CorruptObjectError."""
    a = hosts.open("host-a", proxy=proxy)
    run = a.start_run("agent")
    acked: Acked = []
    write(run, "a", 6, acked)
    proxy.set_rate(1.0, ("412",), only=first("PUT", "segment"), budget=1)
    a.flush()
    assert proxy.counts == {"412": 1}
    write(run, "a", 3, acked, start=6)
    run.complete({"ok": True})
    a.close()

    got, index = restored(hosts, run.run_id)
    assert got == acked
    assert len(got) == 9
    assert index.status == "completed"
    assert listed(hosts) == {run.run_id: "completed"}
    assert problems(hosts, run.run_id) == []
    assert cli("--url", hosts.url, "verify", run.run_id) == 0


# -- 5. a lost index PUT -------------------------------------------------------------------


@pytest.mark.parametrize("lost", ["first", "later"])
def test_a_lost_index_put_is_healed_by_later_flushes(
    hosts: Hosts, proxy: FaultProxy, lost: str
) -> None:
    """One index PUT is answered 200 and never stored: the very first (the bucket has no
    index) or a later one (the bucket's index is one flush behind). Today every later
    flush, complete(), close() raises IndexConflictError, forever."""
    a = hosts.open("host-a", proxy=proxy)
    run = a.start_run("agent", metadata={"case": lost})
    acked: Acked = []
    for batch in range(3):
        write(run, "a", 3, acked, start=3 * batch)
        if (lost, batch) in (("first", 0), ("later", 1)):
            proxy.set_rate(1.0, ("unstored",), only=first("PUT", "index"), budget=1)
        run.flush()
    assert proxy.counts == {"unstored": 1}
    run.complete({"batches": 3})
    a.close()

    got, index = restored(hosts, run.run_id)
    assert got == acked
    assert len(got) == 9
    assert index.status == "completed"
    assert index.metadata == {"case": lost}
    assert listed(hosts) == {run.run_id: "completed"}
    assert problems(hosts, run.run_id) == []


@pytest.mark.parametrize("via", ["api", "cli"])
def test_repair_rebuilds_a_lost_index_on_demand(hosts: Hosts, proxy: FaultProxy, via: str) -> None:
    """The run's only index PUT was lost; nothing flushes again (the writer is idle, or
    died). ``Archive.repair(run_id)`` / ``runarchive repair RUN --cache-dir DIR`` rebuild
    the index from the cache. Today neither exists."""
    a = hosts.open("host-a", proxy=proxy)
    run = a.start_run("agent")
    acked: Acked = []
    write(run, "a", 5, acked)
    proxy.set_rate(1.0, ("unstored",), only=first("PUT", "index"), budget=1)
    run.flush()
    assert proxy.counts == {"unstored": 1}
    if via == "api":
        a.repair(run.run_id)  # type: ignore[attr-defined]
    else:
        # The writer dies without another flush; an operator repairs from its cache.
        abandon(a)
        cache = str(hosts.cache_dir("host-a"))
        assert cli("--url", hosts.url, "repair", run.run_id, "--cache-dir", cache) == 0
    got, index = restored(hosts, run.run_id)  # before any close() could heal it
    assert got == acked
    assert index.last_seq == 5
    assert problems(hosts, run.run_id) == []


def test_repair_reuploads_a_missing_segment_and_names_seqs_it_cannot(hosts: Hosts) -> None:
    """A segment vanished from the bucket (an outside actor deleted it). While the
    host's cache still holds its records, repair uploads them again; once the cache
    evicted them, repair raises an error naming the seqs that are lost."""
    store = hosts.store()
    # Still cached: repaired.
    a = hosts.open("host-a")
    run = a.start_run("agent")
    acked: Acked = []
    write(run, "a", 5, acked)
    run.flush()
    write(run, "a", 5, acked, start=5)
    run.flush()
    seg = hosts.reader().index(run.run_id).segments[1]
    assert (seg.first_seq, seg.last_seq) == (6, 10)
    store.delete(seg.key)
    a.repair(run.run_id)  # type: ignore[attr-defined]
    got, _ = restored(hosts, run.run_id)
    assert got == acked
    assert problems(hosts, run.run_id) == []

    # Evicted (cache_keep_records=0, events only): cannot be repaired, and it says which.
    b = hosts.open("host-b", cache_keep_records=0)
    lost = b.start_run("agent")
    for i in range(1, 11):
        lost.event("tool_call", {"i": i})
        if i in (5, 10):
            lost.flush()
    seg = hosts.reader().index(lost.run_id).segments[0]
    assert (seg.first_seq, seg.last_seq) == (1, 5)
    store.delete(seg.key)
    with pytest.raises(RunArchiveError) as err:
        b.repair(lost.run_id)  # type: ignore[attr-defined]
    missing_records = getattr(errors, "MissingRecordsError", RunArchiveError)
    assert isinstance(err.value, missing_records), repr(err.value)
    assert getattr(err.value, "seqs", [(1, 5)]) == [(1, 5)]
    text = str(err.value)
    assert lost.run_id in text
    assert re.search(r"\b1\s*(-|\.\.|to)\s*5\b", text) or "1, 2, 3, 4, 5" in text, text


# -- 6. a fenced writer is loud and recoverable ----------------------------------------------


@pytest.mark.parametrize("via", ["api", "cli"])
def test_a_fenced_writer_is_loud_and_its_stranded_records_can_be_forked(
    hosts: Hosts, capsys: pytest.CaptureFixture[str], via: str
) -> None:
    """Host B resumes a run host A is still writing. A's next append (or the one after
    its next flush) raises FencedError naming host-b; status lists A's stranded records;
    ``fork`` archives them as a new run linked to the original. Today the error does not
    name the new owner and there is no fork."""
    a, b = hosts.open("host-a"), hosts.open("host-b")
    run = a.start_run("agent", metadata={"task": "t1"})
    archived: Acked = []
    write(run, "a", 3, archived)
    run.flush()
    stranded: Acked = []
    write(run, "a", 2, stranded, start=3)  # seq 4 checkpoint, seq 5 event: acked, unflushed
    b.resume(run.run_id)

    fenced: FencedError | None = None
    try:
        stranded.append(content(run.checkpoint("step", {"host": "a", "i": 5, "late": True})))
        with contextlib.suppress(FencedError):
            a.flush()
        run.checkpoint("step", {"host": "a", "i": 6, "never": True})
    except FencedError as exc:
        fenced = exc
    assert fenced is not None, "host-a kept appending to a run host-b took over"
    assert "host-b" in str(fenced), str(fenced)
    last = 3 + len(stranded)

    (row,) = [r for r in a.status().runs if r.run_id == run.run_id]
    assert row.fenced is True
    assert (row.archived_seq, row.last_seq) == (3, last)
    assert row.unflushed_records == len(stranded)
    assert cli("status", "--cache-dir", str(hosts.cache_dir("host-a")), "--json") == 0
    doc = json.loads(capsys.readouterr().out)
    (entry,) = [r for r in doc["runs"] if r["run_id"] == run.run_id]
    assert entry["fenced"] is True
    assert (entry["archived_seq"], entry["last_seq"]) == (3, last)

    new_id = f"fork-{via}"
    if via == "api":
        a.fork(run.run_id, to=new_id)  # type: ignore[attr-defined]
        with contextlib.suppress(FencedError):
            a.close()
    else:
        with contextlib.suppress(FencedError):
            a.close()
        code = cli(
            "--url", hosts.url, "fork", run.run_id, "--to", new_id,
            "--cache-dir", str(hosts.cache_dir("host-a")),
        )  # fmt: skip
        assert code == 0

    got, index = restored(hosts, new_id)
    assert got == stranded
    forked_from = index.metadata.get("forked_from")
    if isinstance(forked_from, dict):
        forked_from = forked_from.get("run_id")
    assert forked_from == run.run_id, index.metadata
    # The original run is untouched: B owns it, with A's 3 archived records.
    original, original_index = restored(hosts, run.run_id)
    assert original == archived
    assert original_index.owner_host == "host-b"


# -- 7. read back before done ---------------------------------------------------------------


def test_a_run_is_never_listed_completed_with_a_segment_missing(
    hosts: Hosts, proxy: FaultProxy
) -> None:
    """One segment PUT is answered 200 and never stored, in the flush that complete()
    makes. Either complete()/close() heal it (upload again from the cache) and the run
    is listed completed, or they raise; never listed completed with a hole. Today the
    run is listed completed and its restore raises CorruptObjectError."""
    a = hosts.open("host-a", proxy=proxy)
    run = a.start_run("agent")
    acked: Acked = []
    write(run, "a", 5, acked)
    proxy.set_rate(1.0, ("unstored",), only=first("PUT", "segment"), budget=1)
    raised: list[Exception] = []
    try:
        run.complete({"ok": True})
    except RunArchiveError as exc:
        raised.append(exc)
    try:
        a.close()
    except RunArchiveError as exc:
        raised.append(exc)
    assert proxy.counts == {"unstored": 1}

    status = listed(hosts).get(run.run_id)
    try:
        index_status: str | None = hosts.reader().index(run.run_id).status
    except RunNotFoundError:
        index_status = None
    if not raised:
        assert status == "completed"  # nothing raised: it must have healed
    if status == "completed" or index_status == "completed":
        got, index = restored(hosts, run.run_id)
        assert got == acked
        assert index.status == "completed"
        assert problems(hosts, run.run_id) == []
