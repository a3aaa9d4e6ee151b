"""Crafted objects in a hostile bucket (issue 12): someone with write access to the
bucket (but, for sealed runs, not necessarily the key) rewrites an index, a segment or
a manifest shard. Readers must refuse with ``CorruptObjectError`` naming the object,
never write outside an export's destination, never return another run's records and
never decompress more than the index declares.

The decompression bombs run in a child process under a 1 GiB address-space limit.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
import zstandard
from support.cli import run_cli
from support.hostile import (
    BOMB_SIZE,
    K1,
    OTHER,
    VICTIM,
    _header_range_differs,
    _join,
    _lines,
    _plant_segment_bomb,
    _reseal,
    _seg_path,
    make_archive,
    read_index,
    run_limited,
    write_index,
)

from runarchive import Reader
from runarchive.engine.manifest.core import shard_key, shard_of
from runarchive.engine.restore import plan_restore
from runarchive.errors import CorruptObjectError
from runarchive.format.codec import decompress_bounded
from runarchive.format.model import parse_index


def _another_runs_index(root: Path) -> str:
    # A valid id, but not the one asked for: a reader would return OTHER's records
    # as VICTIM's (an export would file them under VICTIM's name).
    (root / "runs" / VICTIM / "index.json").write_bytes(
        (root / "runs" / OTHER / "index.json").read_bytes()
    )
    return f"runs/{VICTIM}/index.json"


def tree(where: Path) -> set[Path]:
    return set(where.rglob("*"))


# -- 1. export never writes outside --out ----------------------------------------------


def _climbing_run_id(root: Path) -> str:
    doc = read_index(root, VICTIM)
    doc["run_id"] = "../../../outside/x"
    write_index(root, VICTIM, doc)
    return f"runs/{VICTIM}/index.json"


def _dot_dot_segment_key(root: Path) -> str:
    doc = read_index(root, VICTIM)
    doc["segments"][1]["key"] = f"runs/{VICTIM}/seg/.."
    write_index(root, VICTIM, doc)
    return f"runs/{VICTIM}/seg/.."


def _segment_of_another_run(root: Path) -> str:
    doc, other = read_index(root, VICTIM), read_index(root, OTHER)
    doc["segments"][0]["key"] = other["segments"][0]["key"]
    write_index(root, VICTIM, doc)
    return str(other["segments"][0]["key"])


CRAFTED_FOR_EXPORT = [
    _climbing_run_id,
    _another_runs_index,
    _dot_dot_segment_key,
    _segment_of_another_run,
]


@pytest.mark.parametrize("craft", CRAFTED_FOR_EXPORT, ids=lambda f: f.__name__.strip("_"))
@pytest.mark.parametrize("dest_kind", ["tar", "directory"])
def test_export_of_a_crafted_index_writes_nothing_anywhere(
    craft: Callable[[Path], str], dest_kind: str, tmp_path: Path
) -> None:
    root = make_archive(tmp_path)
    key = craft(root)
    out = tmp_path / "w" / "a" / ("b.tar" if dest_kind == "tar" else "b")
    out.parent.mkdir(parents=True)
    before = tree(tmp_path)
    with Reader.open(root.as_uri()) as reader, pytest.raises(CorruptObjectError) as err:
        reader.export([OTHER, VICTIM], dest=out)
    assert err.value.key == key
    assert tree(tmp_path) == before  # nothing outside --out, nothing half-written
    assert not (tmp_path / "w" / "outside").exists()


@pytest.mark.slow
def test_cli_export_of_a_crafted_index_exits_1_and_writes_nothing(tmp_path: Path) -> None:
    root = make_archive(tmp_path)
    key = _climbing_run_id(root)
    (tmp_path / "w" / "a").mkdir(parents=True)
    before = tree(tmp_path)
    done = run_cli(["--url", root.as_uri(), "export", VICTIM, "--out", "b"], tmp_path / "w" / "a")
    assert done.returncode == 1, done.stdout
    assert f"object {key!r} is corrupt" in done.stderr
    assert "../../../outside/x" in done.stderr  # says what the index claims
    assert tree(tmp_path) == before


def test_export_by_filter_refuses_a_crafted_manifest_entry(tmp_path: Path) -> None:
    root = make_archive(tmp_path)
    bad = "../../outside"
    (path,) = [
        p
        for p in root.glob("manifest/done/*/*.json.zst")
        if VICTIM in orjson.loads(zstandard.ZstdDecompressor().decompress(p.read_bytes()))["runs"]
    ]
    doc = orjson.loads(zstandard.ZstdDecompressor().decompress(path.read_bytes()))
    doc["runs"][bad] = {**doc["runs"][VICTIM], "run_id": bad}
    path.write_bytes(zstandard.ZstdCompressor().compress(orjson.dumps(doc)))
    (tmp_path / "w").mkdir()
    before = tree(tmp_path)
    with Reader.open(root.as_uri()) as reader, pytest.raises(CorruptObjectError) as err:
        reader.export(agent="a", dest=tmp_path / "w" / "b")
    assert err.value.key == path.relative_to(root).as_posix()  # where the entry is
    assert repr(bad) in str(err.value)
    assert tree(tmp_path) == before


def test_export_still_exports_sound_runs(tmp_path: Path) -> None:
    root = make_archive(tmp_path)
    with Reader.open(root.as_uri()) as reader:
        result = reader.export([VICTIM, OTHER], dest=tmp_path / "b.tar")
    assert [(r.run_id, r.records, r.segments) for r in result.runs] == [
        (VICTIM, 6, 3),
        (OTHER, 6, 3),
    ]


# -- 2. restore checks what each segment holds against its ref ---------------------------


def _refs_of_another_run(root: Path) -> str:
    doc = read_index(root, VICTIM)
    doc["segments"] = read_index(root, OTHER)["segments"]
    write_index(root, VICTIM, doc)
    return str(doc["segments"][0]["key"])


def _copied_segment_of_another_run(root: Path) -> str:
    # The object copied under the victim's prefix: the key passes, the header's run not.
    doc, other = read_index(root, VICTIM), read_index(root, OTHER)
    ref = dict(other["segments"][0])
    ref["key"] = ref["key"].replace(f"runs/{OTHER}/", f"runs/{VICTIM}/")
    (root / ref["key"]).write_bytes(_seg_path(root, other["segments"][0]).read_bytes())
    doc["segments"][0] = ref
    write_index(root, VICTIM, doc)
    return str(ref["key"])


def _header_says_victim_records_say_other(root: Path) -> str:
    other = read_index(root, OTHER)
    header, *records = _lines(root, other["segments"][0])
    # The victim's own ref stays (same range), with its hashes forged to match.
    victim_header = {**header, "run": VICTIM, "prev_sha256": None}
    return _reseal(root, VICTIM, 0, _join([victim_header, *records]))


def _record_outside_the_range(root: Path) -> str:
    # Segment 2 (seqs 3-4) claims seqs 3-3 in its ref and header but holds seq 4.
    doc = read_index(root, VICTIM)
    header, *records = _lines(root, doc["segments"][1])
    doc["segments"][1].update(last_seq=3)
    write_index(root, VICTIM, doc)
    return _reseal(root, VICTIM, 1, _join([{**header, "last_seq": 3}, *records]))


CRAFTED_FOR_RESTORE = [
    _refs_of_another_run,
    _copied_segment_of_another_run,
    _header_says_victim_records_say_other,
    _record_outside_the_range,
    _header_range_differs,
]


@pytest.mark.parametrize("craft", CRAFTED_FOR_RESTORE, ids=lambda f: f.__name__.strip("_"))
def test_restore_refuses_segments_that_are_not_the_refs(
    craft: Callable[[Path], str], tmp_path: Path
) -> None:
    root = make_archive(tmp_path)
    key = craft(root)
    with Reader.open(root.as_uri()) as reader, pytest.raises(CorruptObjectError) as err:
        reader.restore(VICTIM)
    assert err.value.key == key
    assert repr(key) in str(err.value)


@pytest.mark.parametrize(
    ("first", "last"), [(3, 2), (0, 2), (-4, 2), (-4, -1)], ids=["inverted", "zero", "neg", "negs"]
)
def test_restore_plan_refuses_inverted_and_negative_ranges(
    first: int, last: int, tmp_path: Path
) -> None:
    root = make_archive(tmp_path)
    doc = read_index(root, VICTIM)
    doc["segments"][0].update(first_seq=first, last_seq=last)
    write_index(root, VICTIM, doc)
    key = doc["segments"][0]["key"]
    index = parse_index(json.dumps(doc).encode(), "k")
    with pytest.raises(CorruptObjectError, match="seq range") as err:
        plan_restore(index)  # pure: refused before any GET
    assert err.value.key == key
    with Reader.open(root.as_uri()) as reader, pytest.raises(CorruptObjectError) as err:
        reader.restore(VICTIM)
    assert err.value.key == key


def test_restore_refuses_an_index_of_another_run(tmp_path: Path) -> None:
    root = make_archive(tmp_path)
    _another_runs_index(root)
    with Reader.open(root.as_uri()) as reader:
        with pytest.raises(CorruptObjectError, match=OTHER) as err:
            reader.restore(VICTIM)
        assert err.value.key == f"runs/{VICTIM}/index.json"
        assert [r.data["run"] for r in reader.restore(OTHER).events] == [OTHER] * 6


# -- 3. decompression is bounded -------------------------------------------------------


def test_a_frame_without_a_size_is_streamed_up_to_the_limit() -> None:
    raw = b"".join(b"%d\n" % i for i in range(20_000))
    obj = zstandard.ZstdCompressor(write_checksum=True).compressobj()
    frame = obj.compress(raw) + obj.flush()
    assert zstandard.frame_content_size(frame) == -1
    assert decompress_bounded(frame, "k", len(raw), "test") == raw
    with pytest.raises(CorruptObjectError, match=f"more than {len(raw) - 1:,} bytes"):
        decompress_bounded(frame, "k", len(raw) - 1, "test")
    with pytest.raises(CorruptObjectError, match="truncated"):
        decompress_bounded(frame[: len(frame) // 2], "k", len(raw), "test")
    sized = zstandard.ZstdCompressor().compress(raw)
    assert decompress_bounded(sized, "k", len(raw), "test") == raw
    with pytest.raises(CorruptObjectError, match=f"declares {len(raw):,} bytes"):
        decompress_bounded(sized, "k", len(raw) - 1, "test")


@pytest.mark.slow
@pytest.mark.parametrize("sized", [True, False], ids=["sized", "streamed"])
@pytest.mark.parametrize("op", ["restore", "export", "verify"])
def test_a_segment_bomb_is_refused_in_bounded_memory(
    bombs: dict[bool, bytes], sized: bool, op: str, tmp_path: Path
) -> None:
    root = make_archive(tmp_path)
    key = _plant_segment_bomb(root, bombs[sized])
    got = run_limited(root, op, dest=str(tmp_path / "out.tar"))
    if op == "verify":
        assert got["error"] is None
        assert ["corrupt", key] in got["problems"]
    else:
        assert got["error"] == "CorruptObjectError", got
        assert got["key"] == key
    assert got["maxrss_mib"] < 256


@pytest.mark.slow
def test_a_bomb_the_index_declares_is_refused_by_the_ceiling(
    bombs: dict[bool, bytes], tmp_path: Path
) -> None:
    root = make_archive(tmp_path)
    key = _plant_segment_bomb(root, bombs[False], declared=BOMB_SIZE)
    got = run_limited(root, "restore")
    assert got["error"] == "CorruptObjectError", got
    assert got["key"] == key
    assert "ceiling" in got["message"]


@pytest.mark.slow
def test_an_orphan_bomb_does_not_sink_verify(bombs: dict[bool, bytes], tmp_path: Path) -> None:
    root = make_archive(tmp_path)
    orphan = f"runs/{VICTIM}/seg/000000000007-000000000008-{'0' * 16}.jsonl.zst"
    for sized in (True, False):
        (root / orphan).write_bytes(bombs[sized])
        got = run_limited(root, "verify")
        assert got["error"] is None, got
        assert any(key == orphan for _, key in got["problems"]), got


@pytest.mark.slow
@pytest.mark.parametrize("sized", [True, False], ids=["sized", "streamed"])
def test_a_manifest_shard_bomb_is_refused_in_bounded_memory(
    bombs: dict[bool, bytes], sized: bool, tmp_path: Path
) -> None:
    root = make_archive(tmp_path)
    key = shard_key("done", shard_of(VICTIM))
    (root / key).write_bytes(bombs[sized])
    got = run_limited(root, "list")
    assert got["error"] == "CorruptObjectError", got
    assert got["key"] == key
    assert got["maxrss_mib"] < 512


@pytest.mark.slow
@pytest.mark.parametrize("sized", [True, False], ids=["sized", "streamed"])
def test_a_sealed_segment_bomb_is_refused_after_decryption(
    bombs: dict[bool, bytes], sized: bool, tmp_path: Path
) -> None:
    """A bomb inside valid ciphertext (someone who holds the key, or a broken writer):
    decryption succeeds, decompression must still stop at the declared size."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: PLC0415

    from runarchive.config import load_config  # noqa: PLC0415
    from runarchive.crypto.keyring import keyring_for  # noqa: PLC0415
    from runarchive.format.model import RunIndex  # noqa: PLC0415

    settings = {"encryption": "local", "encryption_keys": f"k1={K1}"}
    root = make_archive(tmp_path, **settings)
    doc = read_index(root, VICTIM)
    ref = doc["segments"][1]
    index = RunIndex.model_validate(doc)
    keyring = keyring_for(load_config(url=root.as_uri(), encryption_keys=f"k1={K1}"))
    plain = keyring.key_by_id(VICTIM, index.keys, str(ref["dek"]), ref["key"])
    line, _, _ = _seg_path(root, ref).read_bytes().partition(b"\n")
    nonce = base64.b64decode(orjson.loads(line)["nonce"])
    body = line + b"\n" + AESGCM(plain).encrypt(nonce, bombs[sized], line)
    _seg_path(root, ref).write_bytes(body)
    sha = hashlib.sha256(body).hexdigest()  # the stored object's hash, forged to match
    ref["sha256"] = sha
    doc["segments"][2]["prev_sha256"] = sha
    write_index(root, VICTIM, doc)
    got = run_limited(root, "restore", settings={"encryption_keys": f"k1={K1}"})
    assert got["error"] == "CorruptObjectError", got
    assert got["key"] == ref["key"]
    assert got["maxrss_mib"] < 256
