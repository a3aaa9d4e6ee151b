"""``docs/format.md`` §11 proved: an encrypted run decoded by following the document
alone, with ``cryptography``, ``hashlib``/``hmac`` and the ``zstd``/``jq`` commands.

runarchive writes the run (a ``file://`` archive, a local key file, a key rotation in
the middle so the run has two data keys under two KEKs). Everything after that is a
decoder that imports no runarchive module: it reads ``index.json`` with ``json``,
unwraps the data keys with ``aes_key_unwrap``, checks each stored object's SHA-256,
the key, the plaintext header and the chain, decrypts with AES-GCM (the header line as
associated data), recomputes the nonce, decompresses with ``zstd -dc`` and compares
the records with what was written; then it opens the sealed index fields and the
manifest entry's sealed metadata. Finally the "Decrypting by hand" snippet is cut out
of ``docs/format.md`` and run in a subprocess against the same archive.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap

FORMAT_MD = Path(__file__).resolve().parents[2] / "docs" / "format.md"
SNIPPET_RE = re.compile(
    r"<!-- decrypt-snippet:begin -->\s*```python\n(?P<code>.*?)```\s*<!-- decrypt-snippet:end -->",
    re.S,
)
# §11.1: the key of a sealed segment
SEALED_KEY_RE = re.compile(
    r"^runs/(?P<run>[A-Za-z0-9._-]{1,128})/seg/"
    r"(?P<first>[0-9]{12})-(?P<last>[0-9]{12})-(?P<sha16>[0-9a-f]{16})\.sealed$"
)
HEADER_FIELDS = [
    "type", "format", "alg", "run", "first_seq", "last_seq", "dek", "kek", "wrapped_key", "nonce",
]  # fmt: skip
NONCE_LABEL = b"runarchive segment nonce v1"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"`{name}` is not on PATH (apt-get install {name})", pytrace=False)
    return path


@dataclass
class Written:
    root: Path  # the archive directory (file://)
    keyfile: Path
    run_id: str
    metadata: dict[str, Any]
    result: Any
    records: list[dict[str, Any]]  # what was appended: type, seq and the caller's fields
    bundle: Path  # a sealed export bundle of the run (a directory)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Written:
    """One encrypted run, written by runarchive (the only use of it in this module)."""
    from runarchive import Archive, Policy, Reader  # noqa: PLC0415 - the decoder must not see it
    from runarchive.crypto.providers import add_key_to_file  # noqa: PLC0415

    tmp = tmp_path_factory.mktemp("sealed")
    root, keyfile, cache = tmp / "archive", tmp / "keys.json", tmp / "cache"
    add_key_to_file(keyfile, "k1")
    settings: dict[str, Any] = {
        "cache_dir": cache,
        "encryption": "local",
        "encryption_key_file": keyfile,
        "policy": Policy(keep_all=True),
    }
    metadata = {"ticket": "OPS-12", "labels": ["ünïcode", "secret"]}
    result = {"answer": 42, "text": "done"}
    records: list[dict[str, Any]] = []
    archive = Archive.open(root.as_uri(), **settings)
    run = archive.start_run(agent="planner", metadata=metadata)
    for i in range(6):
        seq = run.checkpoint(f"step-{i % 2}", {"i": i, "msg": "x" * i}, metadata={"n": i}).seq
        records.append({"seq": seq, "type": "checkpoint", "name": f"step-{i % 2}"})
        records[-1] |= {"state": {"i": i, "msg": "x" * i}, "metadata": {"n": i}}
        seq = run.event("tool_call", {"i": i}, lane="tools").seq
        records.append({"seq": seq, "type": "event", "kind": "tool_call"})
        records[-1] |= {"lane": "tools", "data": {"i": i}}
        if i in (1, 3):
            run.flush()
    run_id = run.run_id
    archive.close()  # the run is still running: the agent restarts with a new key
    add_key_to_file(keyfile, "k2")
    archive = Archive.open(root.as_uri(), **settings)
    run = archive.run(run_id)
    seq = run.event("final", None).seq
    records.append({"seq": seq, "type": "event", "kind": "final", "lane": "main", "data": None})
    run.complete(result)
    archive.close()
    bundle = tmp / "bundle"
    with Reader.open(root.as_uri()) as reader:
        reader.export(run_id, dest=bundle, progress=False)  # sealed: no key needed
    return Written(root, keyfile, run_id, metadata, result, records, bundle)


# -- the decoder: docs/format.md §11 only, no runarchive import ------------------------


def _b64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def _keks(keyfile: Path) -> dict[str, bytes]:
    """KEK id (``local:<id>``) -> the 32-byte key, from a key file."""
    doc = json.loads(keyfile.read_text())
    return {f"local:{kid}": _b64(b64) for kid, b64 in doc["keys"].items()}


def _data_keys(index: dict[str, Any], keks: dict[str, bytes]) -> dict[str, bytes]:
    """§11.4: every data key of the run, unwrapped with AES key wrap (RFC 3394)."""
    out = {}
    for key in index["keys"]:
        assert set(key) >= {"id", "kek", "wrapped", "alg", "created_at"}
        assert key["alg"] == "AES-256-GCM"
        assert key["kek"].startswith("local:")
        plain = aes_key_unwrap(keks[key["kek"]], _b64(key["wrapped"]))
        assert len(plain) == 32
        out[key["id"]] = plain
    return out


def _zstd_dc(frame: bytes) -> bytes:
    proc = subprocess.run(
        [_tool("zstd"), "-dc"], input=frame, capture_output=True, timeout=30, check=True
    )
    return proc.stdout


def _open_segment(
    root: Path, index: dict[str, Any], pos: int, data_keys: dict[str, bytes]
) -> tuple[dict[str, Any], bytes]:
    """§11.2-11.3: one sealed segment's plaintext header and its JSON Lines."""
    ref, run = index["segments"][pos], index["run_id"]
    body = (root / ref["key"]).read_bytes()
    # The key, the stored object's SHA-256 and sizes: checkable without any key.
    m = SEALED_KEY_RE.fullmatch(ref["key"])
    assert m is not None, ref["key"]
    assert m["run"] == run
    assert (int(m["first"]), int(m["last"])) == (ref["first_seq"], ref["last_seq"])
    stored_sha = hashlib.sha256(body).hexdigest()
    assert stored_sha == ref["sha256"]
    assert m["sha16"] == stored_sha[:16]
    assert len(body) == ref["stored_bytes"]
    assert ref["format"] == 3
    # The plaintext header line.
    line, sep, ciphertext = body.partition(b"\n")
    assert sep == b"\n"
    header = json.loads(line)
    assert list(header) == HEADER_FIELDS
    assert header["type"] == "sealed-segment"
    assert (header["format"], header["alg"], header["run"]) == (3, "AES-256-GCM", run)
    assert (header["first_seq"], header["last_seq"]) == (ref["first_seq"], ref["last_seq"])
    assert header["dek"] == ref["dek"]
    # AES-256-GCM with the header line (without its newline) as associated data.
    data_key, nonce = data_keys[ref["dek"]], _b64(header["nonce"])
    assert len(nonce) == 12
    frame = AESGCM(data_key).decrypt(nonce, ciphertext, line)
    assert len(ciphertext) == len(frame) + 16
    assert frame[:4] == bytes.fromhex("28b52ffd")  # a zstd frame
    raw = _zstd_dc(frame)
    assert len(raw) == ref["raw_bytes"]
    # The deterministic nonce.
    mac = hmac.new(data_key, NONCE_LABEL + hashlib.sha256(frame).digest(), hashlib.sha256)
    assert mac.digest()[:12] == nonce
    # Changing one byte of the header (the associated data) fails authentication.
    forged = line.replace(b'"first_seq":', b'"first_seq": ', 1)
    with pytest.raises(InvalidTag):
        AESGCM(data_key).decrypt(nonce, ciphertext, forged)
    return header, raw


def _records(raw: bytes, index: dict[str, Any], pos: int) -> list[dict[str, Any]]:
    """§11.3: the JSON Lines body: the inner segment header, then the records."""
    ref = index["segments"][pos]
    assert raw.endswith(b"\n")
    lines = raw.split(b"\n")[:-1]
    inner = json.loads(lines[0])
    assert inner == {
        "type": "segment",
        "format": 3,
        "run": index["run_id"],
        "first_seq": ref["first_seq"],
        "last_seq": ref["last_seq"],
        "records": ref["records"],
        "prev_sha256": ref["prev_sha256"],
    }
    records = [json.loads(line) for line in lines[1:]]
    assert len(records) == ref["records"]
    assert sum(r["type"] == "checkpoint" for r in records) == ref["checkpoints"]
    return records


def _open_field(run_id: str, name: str, sealed: dict[str, Any], data_key: bytes) -> Any:
    """§11.5: one sealed field: AES-256-GCM, associated data ``runarchive:<run>:<field>``."""
    aad = f"runarchive:{run_id}:{name}".encode()
    return json.loads(AESGCM(data_key).decrypt(_b64(sealed["nonce"]), _b64(sealed["ct"]), aad))


def test_sealed_run_decodes_by_the_document(written: Written) -> None:
    index_path = written.root / "runs" / written.run_id / "index.json"
    index = json.loads(index_path.read_bytes())
    assert index["format"] == 3
    assert index["status"] == "completed"
    # Agent data is not in plaintext; what stays readable is.
    assert index["metadata"] == {}
    assert index["result"] is None
    assert index["error"] is None
    assert index["agent"] == "planner"
    assert set(index["sealed"]) == {"metadata", "result"}
    # Rotation: two data keys, under the two KEKs.
    assert sorted(k["kek"] for k in index["keys"]) == ["local:k1", "local:k2"]
    data_keys = _data_keys(index, _keks(written.keyfile))
    # The chain, over the stored objects: checkable without a key.
    prev = None
    for ref in index["segments"]:
        assert ref["prev_sha256"] == prev
        assert hashlib.sha256((written.root / ref["key"]).read_bytes()).hexdigest() == ref["sha256"]
        prev = ref["sha256"]
    assert index["chain_head"] == prev
    # Segments: 3 under k1's data key, the last one under k2's.
    kek_of = {k["id"]: k["kek"] for k in index["keys"]}
    assert [kek_of[r["dek"]] for r in index["segments"]] == ["local:k1"] * 3 + ["local:k2"]
    got: list[dict[str, Any]] = []
    expected_first = 1
    for pos, ref in enumerate(index["segments"]):
        header, raw = _open_segment(written.root, index, pos, data_keys)
        key = next(k for k in index["keys"] if k["id"] == ref["dek"])
        # Never rekeyed: the header's copy of the wrapped key is the index's.
        assert (header["kek"], header["wrapped_key"]) == (key["kek"], key["wrapped"])
        assert ref["first_seq"] == expected_first
        expected_first = ref["last_seq"] + 1
        got.extend(_records(raw, index, pos))
    assert index["last_seq"] == expected_first - 1 == len(written.records)
    # The records are what was written, in seq order, with the documented fields.
    assert [r["seq"] for r in got] == list(range(1, len(written.records) + 1))
    for rec, want in zip(got, written.records, strict=True):
        assert rec["run"] == written.run_id
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", rec["ts"])
        assert {k: v for k, v in rec.items() if k not in ("run", "ts")} == want
    # Sealed fields of the index: metadata sealed at the first flush (k1's data key),
    # result at the end (k2's).
    sealed = index["sealed"]
    assert kek_of[sealed["metadata"]["dek"]] == "local:k1"
    assert kek_of[sealed["result"]["dek"]] == "local:k2"
    run_id = written.run_id
    meta = _open_field(run_id, "metadata", sealed["metadata"], data_keys[sealed["metadata"]["dek"]])
    assert meta == written.metadata
    result = _open_field(run_id, "result", sealed["result"], data_keys[sealed["result"]["dek"]])
    assert result == written.result
    # A sealed value moved to another field does not open (the name is associated data).
    with pytest.raises(InvalidTag):
        _open_field(run_id, "result", sealed["metadata"], data_keys[sealed["metadata"]["dek"]])


def test_manifest_entry_carries_the_sealed_metadata_and_its_key(written: Written) -> None:
    run_id = written.run_id
    # manifest format 2: the run's done object, in the partition of its end hour
    docs = [json.loads(_zstd_dc(p.read_bytes())) for p in written.root.glob("manifest/done/*/*")]
    (entry,) = [d["runs"][run_id] for d in docs if run_id in d["runs"]]
    assert entry["metadata"] == {}
    assert entry["agent"] == "planner"
    key = entry["metadata_key"]
    [data_key] = _data_keys({"keys": [key]}, _keks(written.keyfile)).values()
    assert entry["sealed_metadata"]["dek"] == key["id"]
    assert _open_field(run_id, "metadata", entry["sealed_metadata"], data_key) == written.metadata


def test_no_agent_data_in_any_object(written: Written) -> None:
    for path in written.root.rglob("*"):
        if not path.is_file() or ".tmp" in path.parts:
            continue
        body = path.read_bytes()
        if path.suffix == ".zst":
            body = _zstd_dc(body)
        for needle in (b"OPS-12", b"step-0", b"tool_call", b"xxxx", b'"answer"'):
            assert needle not in body, (needle, path)


def test_decrypting_by_hand_snippet_works(written: Written, tmp_path: Path) -> None:
    m = SNIPPET_RE.search(FORMAT_MD.read_text())
    assert m is not None, "docs/format.md lost its decrypt-snippet markers"
    script = tmp_path / "decrypt.py"
    script.write_text(m["code"])
    index_path = written.root / "runs" / written.run_id / "index.json"
    index = json.loads(index_path.read_bytes())
    records: list[dict[str, Any]] = []
    for pos in range(len(index["segments"])):
        # As documented: python3 decrypt.py KEYFILE INDEX N | zstd -dc | jq -c '...'
        pipeline = (
            f'"{sys.executable}" "{script}" "{written.keyfile}" "{index_path}" {pos} '
            f'| "{_tool("zstd")}" -dc | "{_tool("jq")}" -c \'select(.type != "segment")\''
        )
        proc = subprocess.run(
            ["bash", "-o", "pipefail", "-c", pipeline],
            capture_output=True,
            timeout=30,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr.decode()
        records.extend(json.loads(line) for line in proc.stdout.splitlines())
    assert [{k: v for k, v in r.items() if k not in ("run", "ts")} for r in records] == (
        written.records
    )
    # The sealed fields, from a relative path run in the archive directory (as after
    # `aws s3 cp --recursive`).
    proc = subprocess.run(
        [
            sys.executable,
            str(script),
            str(written.keyfile),
            f"runs/{written.run_id}/index.json",
            "fields",
        ],
        cwd=written.root,
        capture_output=True,
        timeout=30,
        check=True,
    )
    assert json.loads(proc.stdout) == {"metadata": written.metadata, "result": written.result}
    # In a sealed export bundle: segments/ instead of seg/.
    bundle_index = written.bundle / "runs" / written.run_id / "index.json"
    assert not (written.bundle / "runs" / written.run_id / "records.jsonl").exists()
    pipeline = (
        f'"{sys.executable}" "{script}" "{written.keyfile}" "{bundle_index}" 3 '
        f'| "{_tool("zstd")}" -dc | "{_tool("jq")}" -c \'select(.type != "segment")\''
    )
    proc = subprocess.run(
        ["bash", "-o", "pipefail", "-c", pipeline], capture_output=True, timeout=30, check=True
    )
    assert [json.loads(line)["seq"] for line in proc.stdout.splitlines()] == [13]
    # A flipped byte of a stored segment: the snippet refuses it.
    seg = written.root / index["segments"][0]["key"]
    copy = tmp_path / "copy"
    shutil.copytree(written.root, copy, ignore=shutil.ignore_patterns(".tmp"))
    body = bytearray(seg.read_bytes())
    body[-1] ^= 1
    (copy / index["segments"][0]["key"]).write_bytes(bytes(body))
    proc = subprocess.run(
        [
            sys.executable,
            str(script),
            str(written.keyfile),
            str(copy / "runs" / written.run_id / "index.json"),
            "0",
        ],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode != 0
    assert not proc.stdout
