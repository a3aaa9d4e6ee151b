"""verify: a sound archive has no problem; each kind of damage is named with its object."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from support.backends import Backend, abandon

from runarchive import Archive, Policy
from runarchive.compliance.verify import check_index
from runarchive.format.codec import index_key
from runarchive.format.model import RunIndex


def write(archive: Archive, run_id: str, n: int = 40, end: str | None = "complete") -> RunIndex:
    run = archive.start_run(agent="v", run_id=run_id)
    for i in range(n):
        run.checkpoint(("plan", "act", "observe")[i % 3], {"i": i, "pad": "x" * 50})
        if i % 4 == 0:
            run.event("tool", {"i": i})
        if i % 10 == 9:  # at least 4 segments, however the background flusher keeps up
            run.flush()
    if end == "complete":
        run.complete({"ok": True})
    elif end == "fail":
        run.fail(RuntimeError("boom"))
    else:
        run.flush()
    return archive.index(run_id)


def put_index(archive: Archive, index: RunIndex | dict[str, Any]) -> None:
    body = orjson.dumps(index) if isinstance(index, dict) else index.model_dump_json().encode()
    run_id = index["run_id"] if isinstance(index, dict) else index.run_id
    archive.store.put(index_key(run_id), body, mode="overwrite")


def kinds(report: Any) -> list[tuple[str, str, str | None]]:
    return [(p.kind, p.severity, p.key) for p in report.problems]


@pytest.fixture
def archive(backend: Backend) -> Archive:
    # Small segments: several per run, and a policy that drops checkpoints.
    return backend.open(flush_records=16, policy=Policy(keep_last=5))


def test_a_sound_archive_has_no_problem(archive: Archive) -> None:
    a = write(archive, "done")
    b = write(archive, "failed", end="fail")
    c = write(archive, "running", end=None)
    report = archive.verify()
    assert report.problems == []
    assert report.ok
    assert report.runs == 3
    assert report.segments == sum(len(ix.segments) for ix in (a, b, c)) > 6
    assert report.records == sum(s.records for ix in (a, b, c) for s in ix.segments)
    assert sum(s.dropped for s in a.segments) > 0  # the policy dropped some: still sound
    assert archive.verify("done").runs == 1


def test_request_budget_of_one_run(archive: Archive) -> None:
    index = write(archive, "r")
    archive.store.reset()
    assert archive.verify("r").ok
    counts = dict(archive.store.counts)
    # 1 LIST; the index, every segment; the manifest entry: the index again (where it
    # is), 2 LISTs for format 1 shards, 1 LIST of its hour's done objects, 1 of them
    assert counts == {"list": 1 + 3, "get": 1 + len(index.segments) + 2}


def test_a_flipped_byte_is_corrupt(archive: Archive) -> None:
    index = write(archive, "r")
    key = index.segments[1].key
    body = bytearray(archive.store.get(key).body)
    body[len(body) // 2] ^= 0x01
    archive.store.put(key, bytes(body), mode="overwrite")
    report = archive.verify("r")
    assert not report.ok
    assert kinds(report) == [("corrupt", "error", key)]
    assert "zstd" in report.problems[0].message or "SHA-256" in report.problems[0].message


def test_a_deleted_segment_is_missing(archive: Archive) -> None:
    index = write(archive, "r")
    key = index.segments[2].key
    archive.store.delete(key)
    assert kinds(archive.verify("r")) == [("missing", "error", key)]


def test_two_segments_swapped_in_the_index_break_seqs_and_chain(archive: Archive) -> None:
    index = write(archive, "r")
    segs = list(index.segments)
    segs[1], segs[2] = segs[2], segs[1]
    put_index(archive, index.model_copy(update={"segments": tuple(segs)}))
    found = {(k, key) for k, _sev, key in kinds(archive.verify("r"))}
    assert ("seq-gap", segs[1].key) in found
    assert ("out-of-chain", segs[1].key) in found
    assert ("out-of-chain", segs[2].key) in found


def test_two_segment_bodies_swapped_are_corrupt(archive: Archive) -> None:
    index = write(archive, "r")
    k1, k2 = index.segments[1].key, index.segments[2].key
    b1, b2 = archive.store.get(k1).body, archive.store.get(k2).body
    archive.store.put(k1, b2, mode="overwrite")
    archive.store.put(k2, b1, mode="overwrite")
    assert kinds(archive.verify("r")) == [("corrupt", "error", k1), ("corrupt", "error", k2)]


def test_a_dropped_head_is_caught(archive: Archive) -> None:
    index = write(archive, "r")
    # The crude way: the chain head is gone from the index.
    raw = orjson.loads(index.model_dump_json())
    raw["chain_head"] = None
    put_index(archive, raw)
    assert kinds(archive.verify("r")) == [("out-of-chain", "error", index_key("r"))]
    # The careful way: drop the last segment and make the index look whole again.
    last = index.segments[-1]
    shorter = index.model_copy(
        update={
            "segments": index.segments[:-1],
            "last_seq": index.segments[-2].last_seq,
            "chain_head": index.segments[-2].sha256,
        }
    )
    assert check_index(shorter) == []  # consistent on its own...
    put_index(archive, shorter)
    found = kinds(archive.verify("r"))
    # ...but the manifest kept the real head and seq, and the dropped segment is still
    # there, continuing the chain of a run that ended.
    assert ("truncated", "error", last.key) in found
    assert ("out-of-chain", "error", index_key("r")) in found
    assert ("manifest", "error", index_key("r")) in found


def test_an_interrupted_flush_leaves_a_warning_not_an_error(backend: Backend) -> None:
    archive = backend.open(flush_records=16)
    index = write(archive, "r", end=None)
    # No background flush from here (one in flight for the earlier records, or the age
    # trigger on a slow machine): it would archive the "late" record planted below.
    archive.flusher.stop()
    # A segment PUT whose index update never happened (a crash in between).
    run = archive.run("r")
    run.checkpoint("plan", {"late": True})
    row = archive.cache.run("r")
    assert row is not None
    batch = archive.cache.pending("r", 100, row.last_seq)
    ref, body = archive.engine._encode(row, batch, index.chain_head)
    archive.store.put(ref.key, body, mode="create")
    abandon(archive)
    report = backend.open().verify("r")
    assert report.ok
    assert [(p.kind, p.severity, p.key) for p in report.problems] == [
        ("orphan", "warning", ref.key)
    ]
    assert "continues the chain" in report.problems[0].message


def test_unreadable_index_and_lost_index(archive: Archive) -> None:
    write(archive, "a")
    write(archive, "b")
    archive.store.put(index_key("a"), b"{not json", mode="overwrite")
    archive.store.delete(index_key("b"))
    report = archive.verify()
    assert ("unreadable", "error", index_key("a")) in kinds(report)
    assert ("missing", "error", index_key("b")) in kinds(report)  # the manifest still lists it
    assert not report.ok


def test_check_index_counts_and_ranges(archive: Archive) -> None:
    index = write(archive, "r")
    seg = index.segments[0]
    bad = index.model_copy(
        update={
            "segments": (seg.model_copy(update={"records": seg.records + 1}), *index.segments[1:]),
            "last_seq": index.last_seq + 3,
        }
    )
    found = {(p.kind, p.key) for p in check_index(bad)}
    assert ("inconsistent", seg.key) in found
    assert ("inconsistent", index_key("r")) in found
