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
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
import zstandard

from runarchive import Archive
from runarchive.codec import decompress_bounded
from runarchive.errors import CorruptObjectError
from runarchive.manifest import shard_key, shard_of

VICTIM, OTHER = "victim", "other"
K1 = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="  # 32 bytes, base64


def make_archive(tmp_path: Path, **settings: Any) -> Path:
    """A ``file://`` archive with two completed runs of 3 segments (2 events each)."""
    root = tmp_path / "bucket"
    with Archive.open(
        root.as_uri(), cache_dir=tmp_path / "writer", max_segment_records=2, **settings
    ) as archive:
        for run_id in (VICTIM, OTHER):
            with archive.start_run(agent="a", run_id=run_id) as run:
                for i in range(6):
                    run.event("step", {"i": i, "run": run_id})
    return root


def read_index(root: Path, run_id: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((root / "runs" / run_id / "index.json").read_text())
    return doc


def write_index(root: Path, run_id: str, doc: dict[str, Any]) -> None:
    (root / "runs" / run_id / "index.json").write_text(json.dumps(doc))


def _seg_path(root: Path, ref: dict[str, Any]) -> Path:
    return root / str(ref["key"])


def tree(where: Path) -> set[Path]:
    return set(where.rglob("*"))


# -- 3. decompression is bounded -------------------------------------------------------

GiB = 1 << 30
BOMB_SIZE = 10 * GiB

CHILD = r"""
import json, resource, sys
limit = 1 << 30
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
from runarchive import Reader
from runarchive.errors import RunArchiveError
doc = json.loads(sys.argv[1])
out = {}
try:
    with Reader.open(doc["url"], **doc["settings"]) as reader:
        if doc["op"] == "restore":
            reader.restore(doc["run"])
        elif doc["op"] == "export":
            reader.export([doc["run"]], dest=doc["dest"])
        elif doc["op"] == "list":
            reader.list_runs(limit=None)
        elif doc["op"] == "verify":
            report = reader.verify(doc["run"])
            out["problems"] = [[p.kind, p.key] for p in report.problems]
    out["error"] = None
except MemoryError:
    out["error"] = "MemoryError"
except RunArchiveError as exc:
    out.update(error=type(exc).__name__, key=getattr(exc, "key", None), message=str(exc))
out["maxrss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""


def run_limited(root: Path, op: str, run: str = VICTIM, **extra: Any) -> dict[str, Any]:
    """Run ``op`` against the archive in a child limited to 1 GiB of address space."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNARCHIVE_")}
    doc = {"url": root.as_uri(), "op": op, "run": run, "settings": {}, **extra}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(doc)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    got: dict[str, Any] = json.loads(proc.stdout)
    print(op, got)  # peak memory, for the report (pytest -s)
    return got


def _bomb(sized: bool) -> bytes:
    """10 GiB of zeros as one zstd frame, compressed chunk by chunk (≈ 330 KB, 4 s)."""
    comp = zstandard.ZstdCompressor(level=1, write_checksum=True)
    obj = comp.compressobj(size=BOMB_SIZE if sized else -1)
    chunk, parts = bytes(16 << 20), []
    for _ in range(BOMB_SIZE // len(chunk)):
        parts.append(obj.compress(chunk))
    parts.append(obj.flush())
    return b"".join(parts)


@pytest.fixture(scope="module")
def bombs() -> dict[bool, bytes]:
    """Both kinds of bomb: with the content size in the frame header, and without it
    (streamed: a reader only learns the size by decompressing)."""
    made = {sized: _bomb(sized) for sized in (True, False)}
    assert zstandard.frame_content_size(made[True]) == BOMB_SIZE
    assert zstandard.frame_content_size(made[False]) == -1
    return made


def _plant_segment_bomb(root: Path, bomb: bytes, declared: int | None = None) -> str:
    """Segment 2 of VICTIM becomes the bomb; the index keeps its sha256 (the bomb is
    caught before the hash is computed) and says ``raw_bytes=declared`` if given."""
    doc = read_index(root, VICTIM)
    ref = doc["segments"][1]
    _seg_path(root, ref).write_bytes(bomb)
    if declared is not None:
        ref["raw_bytes"] = declared
        write_index(root, VICTIM, doc)
    return str(ref["key"])


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


def test_a_bomb_the_index_declares_is_refused_by_the_ceiling(
    bombs: dict[bool, bytes], tmp_path: Path
) -> None:
    root = make_archive(tmp_path)
    key = _plant_segment_bomb(root, bombs[False], declared=BOMB_SIZE)
    got = run_limited(root, "restore")
    assert got["error"] == "CorruptObjectError", got
    assert got["key"] == key
    assert "ceiling" in got["message"]


def test_an_orphan_bomb_does_not_sink_verify(bombs: dict[bool, bytes], tmp_path: Path) -> None:
    root = make_archive(tmp_path)
    orphan = f"runs/{VICTIM}/seg/000000000007-000000000008-{'0' * 16}.jsonl.zst"
    for sized in (True, False):
        (root / orphan).write_bytes(bombs[sized])
        got = run_limited(root, "verify")
        assert got["error"] is None, got
        assert any(key == orphan for _, key in got["problems"]), got


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


@pytest.mark.parametrize("sized", [True, False], ids=["sized", "streamed"])
def test_a_sealed_segment_bomb_is_refused_after_decryption(
    bombs: dict[bool, bytes], sized: bool, tmp_path: Path
) -> None:
    """A bomb inside valid ciphertext (someone who holds the key, or a broken writer):
    decryption succeeds, decompression must still stop at the declared size."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: PLC0415

    from runarchive.config import load_config  # noqa: PLC0415
    from runarchive.crypto import keyring_for  # noqa: PLC0415
    from runarchive.model import RunIndex  # noqa: PLC0415

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
