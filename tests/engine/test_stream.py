"""Streaming restore (issue 13): ``Reader.iter_records`` yields what ``restore()`` returns,
and never a record of a segment that fails a check.

Every case runs twice: with the default buffer (a segment is decoded once and held
until it is handed out) and with ``BUFFER_BYTES = 0`` (every segment is checked in a
first pass, then parsed again while yielded). Peak memory is measured by
``bench/scale_restore.py``, not here.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import zstandard
from support.hostile import (
    K1,
    VICTIM,
    _header_range_differs,
    _lines,
    _plant_segment_bomb,
    _reseal,
    _seg_path,
    make_archive,
    read_index,
    write_index,
)

from runarchive import Archive, Policy, Reader
from runarchive.errors import CorruptObjectError, DecryptionError, InvalidInputError
from runarchive.format.codec import encode_segment, segment_key
from runarchive.format.model import Checkpoint, Event

ENC = {"encryption": "local", "encryption_keys": f"k1={K1}"}
RUNS = ("mixed", "keep-all", "one", "empty", "lanes")


@pytest.fixture(params=["buffered", "two-pass"])
def buffer_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways a segment is checked before it is yielded."""
    if request.param == "two-pass":
        monkeypatch.setattr("runarchive.engine.stream.BUFFER_BYTES", 0)
    return str(request.param)


def write_runs(root: Path, cache: Path, **settings: Any) -> None:
    """Runs of several shapes, in segments of at most 7 records (many segments)."""
    with Archive.open(root.as_uri(), cache_dir=cache, max_segment_records=7, **settings) as archive:
        with archive.start_run(agent="a", run_id="mixed") as run:
            for i in range(60):
                if i % 3 == 0:
                    run.checkpoint("plan" if i % 2 else "act", {"i": i, "text": "é" * i})
                else:
                    run.event("tool", {"i": i}, lane="main")
        with archive.start_run(agent="a", run_id="keep-all", policy=Policy(keep_all=True)) as run:
            for i in range(30):
                run.checkpoint("same", {"i": i})
                run.event("step", [i, None, True])
        with archive.start_run(agent="a", run_id="one") as run:
            run.event("only", None)
        with archive.start_run(agent="a", run_id="empty"):
            pass
        with archive.start_run(agent="a", run_id="lanes") as run:
            for i in range(25):
                run.event(f"kind-{i % 4}", {"n": i}, lane=f"lane-{i % 3}")
                archive.flush()  # one segment per record


def drain(records: Iterator[Checkpoint | Event]) -> tuple[list[Checkpoint | Event], Exception]:
    """What a consumer got before the iterator raised, and what it raised."""
    got: list[Checkpoint | Event] = []
    try:
        for rec in records:
            got.append(rec)
    except CorruptObjectError as exc:
        return got, exc
    raise AssertionError(f"no error after {len(got)} records")


def points_in_time(records: tuple[Checkpoint | Event, ...]) -> list[dict[str, Any]]:
    """``seq`` and ``at`` cut-offs around and inside the run."""
    out: list[dict[str, Any]] = [{}, {"seq": 0}, {"seq": 1}]
    if records:
        last = records[-1].seq
        out += [{"seq": last // 2}, {"seq": last}, {"seq": last + 5}]
        mid = records[len(records) // 2].ts
        out += [{"at": records[0].ts - timedelta(seconds=1)}, {"at": mid}, {"at": mid, "seq": 3}]
    return out


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "sealed"])
def test_iter_records_equals_restore(encrypted: bool, buffer_mode: str, tmp_path: Path) -> None:
    root = tmp_path / "bucket"
    write_runs(root, tmp_path / "cache", **(ENC if encrypted else {}))
    settings = {"encryption_keys": f"k1={K1}"} if encrypted else {}
    with Reader.open(root.as_uri(), **settings) as reader:
        for run_id in RUNS:
            whole = reader.restore(run_id).records
            assert [r.seq for r in whole] == sorted({r.seq for r in whole})
            for cut in points_in_time(whole):
                want = list(reader.restore(run_id, **cut).records)
                assert list(reader.iter_records(run_id, **cut)) == want, (run_id, cut)
                for prefetch in (1, 5):
                    got = reader.iter_records(run_id, prefetch=prefetch, **cut)
                    assert list(got) == want
            for types in (["event"], ["checkpoint"], ["event", "checkpoint"]):
                want = [r for r in whole if r.type in types]
                assert list(reader.iter_records(run_id, types=types)) == want
        assert len(reader.index("mixed").segments) > 5
        if encrypted:
            assert all(s.dek for s in reader.index("mixed").segments)


def test_a_version_1_segment_streams(buffer_mode: str, tmp_path: Path) -> None:
    root = make_archive(tmp_path)
    doc = read_index(root, VICTIM)
    ref = doc["segments"][0]
    _header, *records = _lines(root, ref)
    enc = encode_segment([orjson.dumps(r) for r in records])
    key = segment_key(VICTIM, ref["first_seq"], ref["last_seq"], enc.sha256)
    (root / key).write_bytes(enc.body)
    ref.update(key=key, sha256=enc.sha256, raw_bytes=enc.raw_bytes, format=1)
    ref.pop("prev_sha256")
    write_index(root, VICTIM, doc)
    with Reader.open(root.as_uri()) as reader:
        assert list(reader.iter_records(VICTIM)) == list(reader.restore(VICTIM).records)
        assert [r.seq for r in reader.iter_records(VICTIM)] == [1, 2, 3, 4, 5, 6]


def test_arguments_are_checked_when_called(tmp_path: Path) -> None:
    root = make_archive(tmp_path)
    with Reader.open(root.as_uri()) as reader:
        with pytest.raises(InvalidInputError, match="types"):
            reader.iter_records(VICTIM, types=["checkpoints"])
        with pytest.raises(InvalidInputError, match="prefetch"):
            reader.iter_records(VICTIM, prefetch=0)
        with pytest.raises(InvalidInputError, match="seq"):
            reader.iter_records(VICTIM, seq=-1)


def test_an_archive_streams_what_the_bucket_holds(tmp_path: Path) -> None:
    root = make_archive(tmp_path)
    with Archive.open(root.as_uri(), cache_dir=tmp_path / "other-host") as archive:
        assert list(archive.iter_records(VICTIM)) == list(archive.restore(VICTIM).records)
        assert [r.seq for r in archive.iter_records(VICTIM, seq=4, types=["event"])] == [
            1,
            2,
            3,
            4,
        ]


def test_a_consumer_may_stop_early(tmp_path: Path) -> None:
    root = make_archive(tmp_path)
    with Reader.open(root.as_uri()) as reader:
        records = reader.iter_records(VICTIM, prefetch=3)
        first = next(records)
        records.close()  # the pool is shut down, queued GETs cancelled
        assert first.seq == 1
        assert [r.seq for r in reader.iter_records(VICTIM)] == [1, 2, 3, 4, 5, 6]


def test_records_share_what_they_repeat_and_stay_independent(tmp_path: Path) -> None:
    root = make_archive(tmp_path)
    with Reader.open(root.as_uri()) as reader:
        a, b, *_ = reader.restore(VICTIM).records
    assert isinstance(a, Event)
    assert isinstance(b, Event)
    assert a.model_fields_set is b.model_fields_set
    assert a.run is b.run
    assert a.kind is b.kind
    moved = a.model_copy(update={"seq": 99, "lane": "other"})
    assert (moved.seq, moved.lane, b.model_fields_set) == (99, "other", a.model_fields_set)
    assert a.model_dump(mode="json", exclude_unset=True) == json.loads(a.model_dump_json())


# -- a segment that fails a check yields nothing ------------------------------------------


def _wrong_sha(root: Path) -> str:
    # Segment 2's object replaced by segment 3's bytes; the index still names segment 2's.
    doc = read_index(root, VICTIM)
    two, three = doc["segments"][1], doc["segments"][2]
    _seg_path(root, two).write_bytes(_seg_path(root, three).read_bytes())
    return str(two["key"])


def _truncated(root: Path) -> str:
    ref = read_index(root, VICTIM)["segments"][1]
    body = _seg_path(root, ref).read_bytes()
    _seg_path(root, ref).write_bytes(body[: len(body) - 6])
    return str(ref["key"])


def _last_record_outside_the_range(root: Path) -> str:
    # Segment 2 (seqs 3-4) holds seqs 3 and 5, hash forged: the last record is refused.
    doc = read_index(root, VICTIM)
    header, first, second = _lines(root, doc["segments"][1])
    raw = b"".join(orjson.dumps(x) + b"\n" for x in [header, first, {**second, "seq": 5}])
    return _reseal(root, VICTIM, 1, raw)


def _bad_last_line(root: Path) -> str:
    doc = read_index(root, VICTIM)
    header, *records = _lines(root, doc["segments"][1])
    raw = b"".join(orjson.dumps(line) + b"\n" for line in [header, records[0]]) + b"{oops\n"
    return _reseal(root, VICTIM, 1, raw)


def _one_record_too_many(root: Path) -> str:
    # Header and ref agree on 1 record; the body (hash forged) holds 2.
    doc = read_index(root, VICTIM)
    header, *records = _lines(root, doc["segments"][1])
    doc["segments"][1]["records"] = 1
    write_index(root, VICTIM, doc)
    raw = b"".join(orjson.dumps(x) + b"\n" for x in [{**header, "records": 1}, *records])
    return _reseal(root, VICTIM, 1, raw)


BAD_SEGMENT_2: list[Callable[[Path], str]] = [
    _wrong_sha,
    _truncated,
    _header_range_differs,
    _last_record_outside_the_range,
    _bad_last_line,
    _one_record_too_many,
]


@pytest.mark.parametrize("craft", BAD_SEGMENT_2, ids=lambda f: f.__name__.strip("_"))
def test_a_bad_segment_yields_nothing(
    craft: Callable[[Path], str], buffer_mode: str, tmp_path: Path
) -> None:
    root = make_archive(tmp_path)
    first = read_index(root, VICTIM)["segments"][0]
    key = craft(root)
    with Reader.open(root.as_uri()) as reader:
        got, err = drain(reader.iter_records(VICTIM))
        with pytest.raises(CorruptObjectError) as whole:
            reader.restore(VICTIM)
    assert getattr(err, "key", None) == key == whole.value.key
    assert [r.seq for r in got] == list(range(1, first["last_seq"] + 1))  # segment 1 only


def test_altered_ciphertext_yields_nothing(buffer_mode: str, tmp_path: Path) -> None:
    root = make_archive(tmp_path, **ENC)
    doc = read_index(root, VICTIM)
    ref = doc["segments"][1]
    body = bytearray(_seg_path(root, ref).read_bytes())
    body[-20] ^= 0x01
    _seg_path(root, ref).write_bytes(bytes(body))
    ref["sha256"] = hashlib.sha256(body).hexdigest()  # forged: AES-GCM must catch it
    doc["segments"][2]["prev_sha256"] = ref["sha256"]
    write_index(root, VICTIM, doc)
    with Reader.open(root.as_uri(), encryption_keys=f"k1={K1}") as reader:
        got, err = drain(reader.iter_records(VICTIM))
    assert isinstance(err, DecryptionError)
    assert err.key == ref["key"]
    assert [r.seq for r in got] == [1, 2]


def test_overlapping_segments_are_refused(tmp_path: Path) -> None:
    root = make_archive(tmp_path)
    doc = read_index(root, VICTIM)
    doc["segments"][1]["first_seq"] = 2
    write_index(root, VICTIM, doc)
    with Reader.open(root.as_uri()) as reader:
        with pytest.raises(CorruptObjectError, match="overlaps") as err:
            list(reader.iter_records(VICTIM))
        assert err.value.key == doc["segments"][1]["key"]
        with pytest.raises(CorruptObjectError, match="overlaps"):
            reader.restore(VICTIM)


def test_segments_listed_out_of_order_stream_in_seq_order(tmp_path: Path) -> None:
    root = make_archive(tmp_path)
    doc = read_index(root, VICTIM)
    doc["segments"].reverse()
    write_index(root, VICTIM, doc)
    with Reader.open(root.as_uri()) as reader:
        assert [r.seq for r in reader.iter_records(VICTIM)] == [1, 2, 3, 4, 5, 6]


ITER_CHILD = r"""
import json, resource, sys
limit = 1 << 30
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
from runarchive import Reader
from runarchive.errors import RunArchiveError
doc = json.loads(sys.argv[1])
out = {"seqs": []}
try:
    with Reader.open(doc["url"]) as reader:
        for rec in reader.iter_records(doc["run"]):
            out["seqs"].append(rec.seq)
    out["error"] = None
except MemoryError:
    out["error"] = "MemoryError"
except RunArchiveError as exc:
    out.update(error=type(exc).__name__, key=getattr(exc, "key", None))
with open("/proc/self/status") as status:
    hwm = next(line for line in status if line.startswith("VmHWM:"))
out["maxrss_mib"] = int(hwm.split()[1]) / 1024
print(json.dumps(out))
"""


@pytest.mark.slow
@pytest.mark.parametrize("sized", [True, False], ids=["sized", "streamed"])
def test_a_bomb_is_refused_in_bounded_memory_and_yields_nothing(
    bombs: dict[bool, bytes], sized: bool, tmp_path: Path
) -> None:
    root = make_archive(tmp_path)
    key = _plant_segment_bomb(root, bombs[sized])
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNARCHIVE_")}
    proc = subprocess.run(
        [sys.executable, "-c", ITER_CHILD, json.dumps({"url": root.as_uri(), "run": VICTIM})],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert (got["error"], got["key"], got["seqs"]) == ("CorruptObjectError", key, [1, 2])
    assert got["maxrss_mib"] < 256


def test_a_frame_streams_in_pieces_with_the_whole_frame_checks() -> None:
    from runarchive.format.codec import decompress_bounded, iter_frame, iter_lines  # noqa: PLC0415

    raw = b"".join(b'{"i":%d}\n' % i for i in range(50_000)) + b"\n\nlast"
    sized = zstandard.ZstdCompressor(write_checksum=True).compress(raw)
    obj = zstandard.ZstdCompressor(write_checksum=True).compressobj()
    unsized = obj.compress(raw) + obj.flush()
    for frame in (sized, unsized, sized + b"trailing bytes are ignored"):
        pieces = list(iter_frame(frame, "k", len(raw), "test"))
        assert len(pieces) > 1
        assert b"".join(pieces) == raw == decompress_bounded(frame, "k", len(raw), "test")
        assert list(iter_lines(pieces)) == raw.split(b"\n")
        with pytest.raises(CorruptObjectError, match="more than"):
            list(iter_frame(frame, "k", len(raw) - 1, "test"))
        with pytest.raises(CorruptObjectError, match="does not decode"):
            list(iter_frame(frame[: len(frame) // 2], "k", len(raw), "test"))
    flipped = sized[:-1] + bytes([sized[-1] ^ 1])  # the XXH64 at the end of the frame
    with pytest.raises(CorruptObjectError, match="checksum"):
        list(iter_frame(flipped, "k", len(raw), "test"))
    for pieces_in in ([b"a\nb", b"c\n", b"\nd"], [b"", b"a", b"b", b"\n"], [b"\n\n"], [b"x"]):
        joined = b"".join(pieces_in)
        want = joined.split(b"\n")
        if want[-1] == b"":
            want.pop()
        assert list(iter_lines(pieces_in)) == want


def test_the_benchmark_writes_runs_that_verify(tmp_path: Path) -> None:
    """bench/scale_restore.py writes its runs directly (no cache: 1,000,000 records in
    seconds); they must be what the writer writes, or its figures mean nothing."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    from scale_restore import write_run  # noqa: PLC0415

    root = tmp_path / "bucket"
    make_archive(tmp_path)  # creates the archive (and its manifest) at root
    index = write_run(root, "bench-run", 2_500, 1_000)
    with Reader.open(root.as_uri()) as reader:
        report = reader.verify("bench-run")
        assert report.problems == []
        records = list(reader.iter_records("bench-run"))
    assert [r.seq for r in records] == list(range(1, 2_501))
    assert len(index.segments) == 3
    assert sum(isinstance(r, Checkpoint) for r in records) == 250
