"""A hostile bucket's tools: a small file:// archive, its indexes and segments rewritten
with forged hashes, decompression bombs, and a child process under a memory limit
(tests/trust/test_hostile.py; test_stream.py and test_live_adversarial.py use them too)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import zstandard

from runarchive import Archive

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


def _reseal(root: Path, run_id: str, pos: int, raw: bytes) -> str:
    """Replace segment ``pos`` of ``run_id`` by ``raw`` (JSON Lines) under a new key,
    with the index's sha256, raw_bytes and chain forged to match: what someone who
    can write the bucket can do to a plaintext run."""
    doc = read_index(root, run_id)
    ref = doc["segments"][pos]
    sha = hashlib.sha256(raw).hexdigest()
    key = f"runs/{run_id}/seg/{ref['first_seq']:012d}-{ref['last_seq']:012d}-{sha[:16]}.jsonl.zst"
    (root / key).write_bytes(zstandard.ZstdCompressor(write_checksum=True).compress(raw))
    ref.update(key=key, sha256=sha, raw_bytes=len(raw))
    if pos + 1 < len(doc["segments"]):
        doc["segments"][pos + 1]["prev_sha256"] = sha
    else:
        doc["chain_head"] = sha
    write_index(root, run_id, doc)
    return key


def _lines(root: Path, ref: dict[str, Any]) -> list[dict[str, Any]]:
    raw = zstandard.ZstdDecompressor().decompress(_seg_path(root, ref).read_bytes())
    return [orjson.loads(line) for line in raw.splitlines()]


def _join(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(line) + b"\n" for line in lines)


def _header_range_differs(root: Path) -> str:
    doc = read_index(root, VICTIM)
    header, *records = _lines(root, doc["segments"][1])
    return _reseal(root, VICTIM, 1, _join([{**header, "first_seq": 2}, *records]))


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
# VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a child forked from a
# large pytest process would report the parent's peak.
with open("/proc/self/status") as status:
    hwm = next(line for line in status if line.startswith("VmHWM:"))
out["maxrss_mib"] = int(hwm.split()[1]) / 1024
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


def make_bomb(sized: bool) -> bytes:
    """10 GiB of zeros as one zstd frame, compressed chunk by chunk (≈ 330 KB, 4 s)."""
    comp = zstandard.ZstdCompressor(level=1, write_checksum=True)
    obj = comp.compressobj(size=BOMB_SIZE if sized else -1)
    chunk, parts = bytes(16 << 20), []
    for _ in range(BOMB_SIZE // len(chunk)):
        parts.append(obj.compress(chunk))
    parts.append(obj.flush())
    return b"".join(parts)


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
