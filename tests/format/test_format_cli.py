"""``docs/format.md`` proved with standard tools: an archive read with ``zstd``, ``jq``
and ``sha256sum`` as subprocesses, without runarchive's own reader.

The archive is written once per module on a ``file://`` directory (the same layout
as a bucket), then every segment is decompressed with ``zstd -dc``, parsed with
``jq``, hashed with ``sha256sum`` and tested with ``zstd -t``/``zstd -lv``, and the
results are compared with what the test wrote and what the index says.

``zstd`` and ``jq`` are Debian packages that these machines have; a missing tool
fails the tests (never skips them), because a skipped test proves nothing.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import zstandard

from runarchive import Archive, CorruptObjectError, FormatVersionError, Policy, Reader
from runarchive.format.codec import decode_segment

FORMAT_MD = Path(__file__).resolve().parents[2] / "docs" / "format.md"

# The key regexes docs/format.md gives (test_key_regexes_are_the_documented_ones checks).
SEGMENT_KEY_RE = re.compile(
    r"^runs/(?P<run>[A-Za-z0-9._-]{1,128})/seg/"
    r"(?P<first>[0-9]{12})-(?P<last>[0-9]{12})-(?P<sha16>[0-9a-f]{16})\.jsonl\.zst$"
)
INDEX_KEY_RE = re.compile(r"^runs/(?P<run>[A-Za-z0-9._-]{1,128})/index\.json$")
RECORD_TS_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z$")
INDEX_TS_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{6})?Z$")

# jq filter for the record lines of a segment (format 2 starts with a header line).
RECORDS = 'select(.type != "segment")'
CHECKPOINT_FIELDS = {"run", "seq", "ts", "type", "name", "metadata", "state"}
EVENT_FIELDS = {"run", "seq", "ts", "type", "kind", "lane", "data"}
ZSTD_MAGIC = bytes.fromhex("28b52ffd")

TOOLS = {
    "zstd": "zstd (Debian/Ubuntu: apt-get install zstd)",
    "jq": "jq (Debian/Ubuntu: apt-get install jq)",
    "sha256sum": "sha256sum (Debian/Ubuntu: coreutils)",
}


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"the `{name}` command is not on PATH; these tests read the archive with "
            f"standard tools and must not be skipped. Install {TOOLS[name]}.",
            pytrace=False,
        )
    return path


def _run(argv: list[str], stdin: bytes | None = None) -> bytes:
    """Run a CLI tool; fail the test with its stderr if it exits non-zero."""
    proc = subprocess.run(
        [_tool(argv[0]), *argv[1:]], input=stdin, capture_output=True, timeout=30, check=False
    )
    if proc.returncode != 0:
        pytest.fail(
            f"`{' '.join(argv)}` exited {proc.returncode}: "
            f"{proc.stderr.decode(errors='replace').strip()}",
            pytrace=False,
        )
    return proc.stdout


def _returncode(argv: list[str]) -> int:
    return subprocess.run(
        [_tool(argv[0]), *argv[1:]], capture_output=True, timeout=30, check=False
    ).returncode


def _jq_lines(filter_: str, data: bytes) -> list[Any]:
    """``jq -c FILTER`` over ``data``, each output line parsed."""
    return [json.loads(line) for line in _run(["jq", "-c", filter_], data).splitlines()]


def _ts(ts: datetime) -> str:
    """The documented record timestamp format, computed independently of runarchive."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# -- the archive under test ------------------------------------------------------


@dataclass
class WrittenRun:
    run_id: str
    records: dict[int, dict[str, Any]] = field(default_factory=dict)  # seq -> record JSON


@dataclass
class Written:
    root: Path
    full: WrittenRun  # every checkpoint kept, several segments
    pruned: WrittenRun  # compression policy drops checkpoints
    empty: WrittenRun  # started and completed with no record


def _write(run: Any, written: WrittenRun, kind: str, *args: Any, **kwargs: Any) -> None:
    if kind == "checkpoint":
        rec = run.checkpoint(*args, **kwargs)
        doc = {"name": rec.name, "metadata": rec.metadata, "state": rec.state}
    else:
        rec = run.event(*args, **kwargs)
        doc = {"kind": rec.kind, "lane": rec.lane, "data": rec.data}
    written.records[rec.seq] = {
        "run": written.run_id,
        "seq": rec.seq,
        "ts": _ts(rec.ts),
        "type": kind,
        **doc,
    }


NESTED_STATE = {
    "messages": [
        {"role": "user", "content": 'Grüße aus Köln — 日本語のテキスト, emoji 🚀, "quotes"'},
        {"role": "assistant", "content": "line one\nline two\ttab \\ backslash \u0001 ctrl"},
    ],
    "tree": {"a": [1, -2, 2.5, None, True, False, {"deep": {"deeper": ["x", [], {}]}}]},
    "ключ": "значение",
    "empty": {},
}


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Written:
    tmp = tmp_path_factory.mktemp("format")
    root = tmp / "archive"
    out = Written(root, WrittenRun("fmt-full"), WrittenRun("fmt-pruned"), WrittenRun("fmt-empty"))

    with Archive.open(
        root.as_uri(),
        cache_dir=tmp / "cache-a",
        max_segment_records=4,
        policy=Policy(keep_all=True),
    ) as archive:
        with archive.start_run(
            agent="format-test", run_id=out.full.run_id, metadata={"suite": "format", "ñ": [1, 2]}
        ) as run:
            w = out.full
            _write(run, w, "checkpoint", "plan", NESTED_STATE, metadata={"note": "première"})
            _write(run, w, "event", "tool_call", {"tool": "search", "q": "ümlaut"}, lane="tools")
            _write(run, w, "checkpoint", "étape-2", ["a", 1, 2.25, None])
            _write(run, w, "event", "tick")  # data None, lane "main"
            _write(run, w, "checkpoint", "scalar", "just a string")
            _write(run, w, "checkpoint", "nothing", None)
            _write(run, w, "event", "llm_call", {"tokens": 512, "model": "m-1"})
            _write(run, w, "checkpoint", "plan", {**NESTED_STATE, "step": 2})
            _write(run, w, "event", "done", [1, [2, [3]]], lane="lane-β")
            _write(run, w, "checkpoint", "final", {"n": 9007199254740991, "f": 0.1})
            run.complete({"answer": 42, "text": "fertig ✓"})
        with archive.start_run(agent="format-test", run_id=out.empty.run_id):
            pass

    with (
        Archive.open(
            root.as_uri(),
            cache_dir=tmp / "cache-b",
            max_segment_records=4,
            policy=Policy(keep_last=1),
        ) as archive,
        archive.start_run(agent="format-test", run_id=out.pruned.run_id) as run,
    ):
        w = out.pruned
        for i in range(7):
            _write(run, w, "checkpoint", "same", {"i": i})
        _write(run, w, "event", "end", {"i": 7})
        for i in range(3):
            _write(run, w, "checkpoint", "other", {"j": i})

    return out


def _index_bytes(w: Written, run: WrittenRun) -> bytes:
    return (w.root / "runs" / run.run_id / "index.json").read_bytes()


def _segments(w: Written, run: WrittenRun) -> list[dict[str, Any]]:
    """The index's segment refs, read with jq."""
    return _jq_lines(".segments[]", _index_bytes(w, run))


def _decompressed(w: Written, key: str) -> bytes:
    return _run(["zstd", "-dc", str(w.root / key)])


# -- tests ---------------------------------------------------------------------


def test_cli_tools_are_installed() -> None:
    for name in TOOLS:
        _tool(name)
    assert _returncode(["zstd", "--version"]) == 0
    assert _run(["jq", "--version"]).startswith(b"jq-")


def test_key_regexes_are_the_documented_ones() -> None:
    documented = dict(re.findall(r"^ *(index|segment): +(\^\S+\$)$", FORMAT_MD.read_text(), re.M))
    assert documented == {"index": INDEX_KEY_RE.pattern, "segment": SEGMENT_KEY_RE.pattern}


def test_records_read_with_zstd_and_jq_equal_what_was_written(written: Written) -> None:
    run = written.full
    segs = _segments(written, run)
    assert len(segs) == 3  # 11 records, at most 4 per segment
    seen: dict[int, dict[str, Any]] = {}
    for ref in segs:
        raw = _decompressed(written, ref["key"])
        # JSON Lines: one record per line, every line \n-terminated, no blank lines
        assert raw.endswith(b"\n")
        assert b"\n\n" not in raw
        header, *lines = _jq_lines(".", raw)
        assert header["type"] == "segment"  # format 2: the first line is the header
        assert len(lines) == ref["records"] == header["records"] == len(raw.splitlines()) - 1
        for rec in lines:
            assert ref["first_seq"] <= rec["seq"] <= ref["last_seq"]
            assert rec["seq"] not in seen
            seen[rec["seq"]] = rec
    assert seen == run.records
    assert sorted(seen) == list(range(1, len(run.records) + 1))  # gapless from 1


def test_record_fields_and_types(written: Written) -> None:
    for ref in _segments(written, written.full):
        raw = _decompressed(written, ref["key"])
        for rec in _jq_lines(RECORDS, raw):
            assert rec["run"] == written.full.run_id
            assert type(rec["seq"]) is int
            assert rec["seq"] >= 1
            assert RECORD_TS_RE.fullmatch(rec["ts"]), rec["ts"]
            if rec["type"] == "checkpoint":
                assert set(rec) == CHECKPOINT_FIELDS
                assert isinstance(rec["name"], str)
                assert isinstance(rec["metadata"], dict)
            else:
                assert rec["type"] == "event"
                assert set(rec) == EVENT_FIELDS
                assert isinstance(rec["kind"], str)
                assert isinstance(rec["lane"], str)
        # seq order inside a segment; timestamps are text-sortable in the same format
        seqs = _jq_lines(f"{RECORDS} | .seq", raw)
        assert seqs == sorted(seqs)


def test_documented_jq_recipes(written: Written) -> None:
    ref = _segments(written, written.full)[0]
    raw = _decompressed(written, ref["key"])
    picked = _jq_lines('select(.type=="checkpoint") | {seq,name}', raw)
    expected = [
        {"seq": r["seq"], "name": r["name"]}
        for r in written.full.records.values()
        if r["type"] == "checkpoint" and ref["first_seq"] <= r["seq"] <= ref["last_seq"]
    ]
    assert picked == expected
    # UTF-8 is stored as is, not \u-escaped; jq -r gives the text back.
    assert "日本語".encode() in raw
    names = _run(["jq", "-r", 'select(.type=="checkpoint") | .name'], raw).decode().split()
    assert names == [e["name"] for e in expected]
    # ts parses with jq once the fraction is cut off (jq 1.6 rejects fractions).
    epoch = _jq_lines(RECORDS + ' | .ts | sub("\\\\.[0-9]+Z$"; "Z") | fromdateiso8601', raw)
    assert all(isinstance(t, int) and t > 1_600_000_000 for t in epoch)


def test_sha256sum_of_decompressed_body_matches_index(written: Written) -> None:
    for run in (written.full, written.pruned):
        for ref in _segments(written, run):
            raw = _decompressed(written, ref["key"])
            digest = _run(["sha256sum"], raw).split()[0].decode()
            assert digest == ref["sha256"]
            assert SEGMENT_KEY_RE.fullmatch(ref["key"])["sha16"] == digest[:16]  # type: ignore[index]
            assert len(raw) == ref["raw_bytes"]
            assert (written.root / ref["key"]).stat().st_size == ref["stored_bytes"]


def test_hash_chain_checks_with_sha256sum_and_jq(written: Written) -> None:
    for run in (written.full, written.pruned):
        index = _index_bytes(written, run)
        prev = None
        for ref in _segments(written, run):
            raw = _decompressed(written, ref["key"])
            header = _jq_lines('select(.type == "segment")', raw)
            assert header == [
                {
                    "type": "segment",
                    "format": 2,
                    "run": run.run_id,
                    "first_seq": ref["first_seq"],
                    "last_seq": ref["last_seq"],
                    "records": ref["records"],
                    "prev_sha256": prev,
                }
            ]
            assert ref["prev_sha256"] == prev
            prev = _run(["sha256sum"], raw).split()[0].decode()
        assert _jq_lines(".chain_head", index) == [prev]


def test_a_version_1_run_stays_readable(tmp_path: Path) -> None:
    """A run as format version 1 wrote it (no segment header, no chain), built from
    the spec with zstd and jq, restores with this version."""
    root = tmp_path / "v1"
    seg_dir = root / "runs" / "old-run" / "seg"
    seg_dir.mkdir(parents=True)
    ts = "2025-01-02T03:04:05.000006Z"
    body = (
        b'{"run":"old-run","seq":1,"ts":"' + ts.encode() + b'","type":"checkpoint",'
        b'"name":"plan","metadata":{},"state":{"x":1}}\n'
        b'{"run":"old-run","seq":2,"ts":"' + ts.encode() + b'","type":"event",'
        b'"kind":"tool","lane":"main","data":null}\n'
    )
    sha = _run(["sha256sum"], body).split()[0].decode()
    key = f"runs/old-run/seg/000000000001-000000000002-{sha[:16]}.jsonl.zst"
    plain = tmp_path / "body.jsonl"  # from a file, zstd records the content size (§2.1)
    plain.write_bytes(body)
    (root / key).write_bytes(_run(["zstd", "-q", "-c", str(plain)], b""))
    stamp = "2025-01-02T03:04:05.000006Z"
    index = {
        "format": 1,
        "run_id": "old-run",
        "agent": "v1",
        "status": "completed",
        "created_at": stamp,
        "updated_at": stamp,
        "last_seq": 2,
        "segments": [
            {
                "key": key,
                "first_seq": 1,
                "last_seq": 2,
                "records": 2,
                "checkpoints": 1,
                "events": 1,
                "stored_bytes": (root / key).stat().st_size,
                "raw_bytes": len(body),
                "sha256": sha,
                "first_ts": stamp,
                "last_ts": stamp,
                "format": 1,
            }
        ],
    }
    (root / "runs" / "old-run" / "index.json").write_text(json.dumps(index))
    with Reader.open(root.as_uri()) as reader:
        restored = reader.restore("old-run")
    assert [(r.seq, r.type) for r in restored.records] == [(1, "checkpoint"), (2, "event")]
    assert restored.checkpoints[0].state == {"x": 1}


def test_segment_is_one_zstd_frame_with_content_size_and_checksum(written: Written) -> None:
    for ref in _segments(written, written.full):
        path = written.root / ref["key"]
        assert _returncode(["zstd", "-t", str(path)]) == 0
        info = _run(["zstd", "-lv", str(path)]).decode()
        assert re.search(r"# Zstandard Frames: 1\b", info), info
        size = re.search(r"Decompressed Size:.*\((\d+) B\)", info)
        assert size is not None, info
        assert int(size[1]) == ref["raw_bytes"], info
        assert re.search(r"Check: XXH64\b", info), info
        # The same facts from the frame header (RFC 8878 §3.1.1), independent of zstd's output.
        body = path.read_bytes()
        assert body[:4] == ZSTD_MAGIC
        descriptor = body[4]
        assert descriptor >> 2 & 1 == 1  # Content_Checksum_flag
        fcs_flag, single_segment = descriptor >> 6, descriptor >> 5 & 1
        assert fcs_flag != 0 or single_segment == 1  # a Frame_Content_Size field is present
        assert (descriptor & 0b11) == 0  # no dictionary id


def test_corrupted_copy_fails_zstd_test(written: Written, tmp_path: Path) -> None:
    ref = _segments(written, written.full)[0]
    body = (written.root / ref["key"]).read_bytes()
    for name, pos in (("checksum", len(body) - 1), ("payload", len(body) // 2)):
        bad = bytearray(body)
        bad[pos] ^= 0xFF
        copy = tmp_path / f"{name}.jsonl.zst"
        copy.write_bytes(bytes(bad))
        assert _returncode(["zstd", "-t", str(copy)]) != 0, f"flipped {name} byte not detected"
        assert _returncode(["zstd", "-dc", str(copy)]) != 0


def test_index_keys_equal_files_present_no_orphans(written: Written) -> None:
    objects = {
        p.relative_to(written.root).as_posix()
        for p in written.root.rglob("*")
        if p.is_file() and p.relative_to(written.root).parts[0] != ".tmp"
    }
    expected: set[str] = set()
    for run in (written.full, written.pruned, written.empty):
        index = _index_bytes(written, run)
        keys = _run(["jq", "-r", ".segments[].key"], index).decode().split()
        on_disk = sorted(
            p.relative_to(written.root).as_posix()
            for p in (written.root / "runs" / run.run_id / "seg").glob("*")
        )
        assert keys == on_disk  # same set, and the index order is the key (seq) order
        expected |= {f"runs/{run.run_id}/index.json", *keys}
    # Nothing else in the key space: no orphan segment, no leftover probe object; the
    # manifest lists every run as finished, readable with zstd and jq.
    manifest = {o for o in objects if o.startswith("manifest/")}
    assert objects - manifest == expected
    listed: dict[str, list[str]] = {"live": [], "done": []}
    for key in sorted(manifest):
        kind = key.split("/")[1]  # manifest format 2 (format.md §10.1)
        body = _run(["zstd", "-dc", str(written.root / key)], b"")
        listed[kind] += _run(["jq", "-r", ".runs | keys[]"], body).decode().split()
    assert listed["live"] == []
    assert sorted(listed["done"]) == sorted(
        r.run_id for r in (written.full, written.pruned, written.empty)
    )
    assert not [p for p in (written.root / "_runarchive").rglob("*") if p.is_file()]


def test_index_format_and_key_patterns(written: Written) -> None:
    for run in (written.full, written.pruned, written.empty):
        index = _index_bytes(written, run)
        assert INDEX_KEY_RE.fullmatch(f"runs/{run.run_id}/index.json")
        assert _jq_lines(".format", index) == [2]
        assert _jq_lines("[.segments[].format] | unique", index) in ([[2]], [[]])
        doc = json.loads(index)
        assert doc["run_id"] == run.run_id
        assert doc["agent"] == "format-test"
        assert doc["status"] == "completed"
        for name in ("created_at", "updated_at", "ended_at"):
            assert INDEX_TS_RE.fullmatch(doc[name]), doc[name]
        for ref in doc["segments"]:
            m = SEGMENT_KEY_RE.fullmatch(ref["key"])
            assert m is not None, ref["key"]
            assert m["run"] == run.run_id
            assert (int(m["first"]), int(m["last"])) == (ref["first_seq"], ref["last_seq"])
            assert INDEX_TS_RE.fullmatch(ref["first_ts"])
            assert INDEX_TS_RE.fullmatch(ref["last_ts"])
    full = json.loads(_index_bytes(written, written.full))
    assert full["metadata"] == {"suite": "format", "ñ": [1, 2]}
    assert full["result"] == {"answer": 42, "text": "fertig ✓"}
    assert full["error"] is None
    empty = json.loads(_index_bytes(written, written.empty))
    assert (empty["last_seq"], empty["segments"]) == (0, [])


def test_seq_ranges_contiguous_and_dropped_accounts_for_gaps(written: Written) -> None:
    for run in (written.full, written.pruned):
        index = json.loads(_index_bytes(written, run))
        segs = index["segments"]
        assert segs[0]["first_seq"] == 1
        for a, b in itertools.pairwise(segs):
            assert b["first_seq"] == a["last_seq"] + 1
        assert index["last_seq"] == segs[-1]["last_seq"] == len(run.records)
        present: set[int] = set()
        for ref in segs:
            lines = _jq_lines(RECORDS, _decompressed(written, ref["key"]))
            span = ref["last_seq"] - ref["first_seq"] + 1
            assert ref["records"] == len(lines) == ref["checkpoints"] + ref["events"]
            assert ref["records"] + ref["dropped"] == span
            assert ref["checkpoints"] == sum(r["type"] == "checkpoint" for r in lines)
            for rec in lines:
                assert rec == run.records[rec["seq"]]  # kept records are byte-for-value equal
            present |= {r["seq"] for r in lines}
        missing = set(run.records) - present
        assert all(run.records[s]["type"] == "checkpoint" for s in missing)  # events never drop
        assert len(missing) == sum(ref["dropped"] for ref in segs)
    assert sum(r["dropped"] for r in json.loads(_index_bytes(written, written.pruned))["segments"])


def test_orphan_segment_is_ignored_by_readers(written: Written, tmp_path: Path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(written.root, root)
    ref = _segments(written, written.full)[0]
    # An interrupted flush of the same range with other content: a valid frame no index names.
    orphan_body = _run(["zstd", "-q", "-c"], b'{"run":"fmt-full","seq":1}\n')
    sha = _run(["sha256sum"], b'{"run":"fmt-full","seq":1}\n').split()[0].decode()
    name = f"{ref['first_seq']:012d}-{ref['last_seq']:012d}-{sha[:16]}.jsonl.zst"
    orphan = root / "runs" / "fmt-full" / "seg" / name
    orphan.write_bytes(orphan_body)
    with Reader.open(root.as_uri()) as reader:
        restored = reader.restore(written.full.run_id)
    assert [r.seq for r in restored.records] == sorted(written.full.records)


def test_newer_index_format_is_refused(written: Written, tmp_path: Path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(written.root, root)
    path = root / "runs" / written.full.run_id / "index.json"
    newer = _run(["jq", "-c", '.format = 5 | .added_in_v5 = "x"'], path.read_bytes())
    path.write_bytes(newer)
    with Reader.open(root.as_uri()) as reader, pytest.raises(FormatVersionError, match="version 5"):
        reader.index(written.full.run_id)
    # An additive field within version 2 is ignored by a version-2 reader.
    added = _run(["jq", "-c", '.added_in_v2_1 = {"x": 1}'], _index_bytes(written, written.full))
    path.write_bytes(added)
    with Reader.open(root.as_uri()) as reader:
        assert reader.index(written.full.run_id).last_seq == len(written.full.records)


def test_decode_segment_detects_the_header_when_the_format_is_not_given(written: Written) -> None:
    ref = _segments(written, written.full)[0]
    body = (written.root / ref["key"]).read_bytes()
    detected = decode_segment(body, ref["key"], ref["sha256"])
    assert detected == decode_segment(body, ref["key"], ref["sha256"], 2)
    assert [r.seq for r in detected] == [
        s for s in sorted(written.full.records) if ref["first_seq"] <= s <= ref["last_seq"]
    ]
    with pytest.raises(CorruptObjectError, match="segment header"):
        decode_segment(zstandard.ZstdCompressor().compress(b'{"x":1}\n'), "k", fmt=2)
