"""Client-side encryption: round trips on every store, rotation, wrong keys, tampering,
what the bucket may contain, export (docs/encryption.md)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import orjson
import pytest
import zstandard
from moto import mock_aws
from support.backends import Backend
from support.servers import S3Server

from runarchive import Archive, Reader
from runarchive.cli.main import main as cli_main
from runarchive.compliance.export import verify_export
from runarchive.crypto.keyring import Keyring
from runarchive.crypto.providers import KmsKeyProvider, LocalKeyProvider, add_key_to_file
from runarchive.crypto.sealing import seal_segment
from runarchive.errors import (
    ConfigError,
    CorruptObjectError,
    DecryptionError,
    EncryptionError,
    KeyUnavailableError,
)
from runarchive.format.codec import index_key
from runarchive.format.model import DataKey, SegmentRef, utcnow
from runarchive.store import Store

MARKERS = {
    "state": "MARKER-STATE-7f3a",
    "name": "MARKER-NAME-91bc",
    "meta": "MARKER-META-22d0",
    "kind": "MARKER-KIND-5e11",
    "data": "MARKER-DATA-c0de",
    "result": "MARKER-RESULT-0b0e",
    "error": "MARKER-ERROR-aa77",
}


def key_b64() -> str:
    return base64.b64encode(os.urandom(32)).decode()


K1, K2 = key_b64(), key_b64()


def write_run(archive: Archive, n: int = 40, fail: bool = False) -> str:
    """A run whose every agent-data field carries a marker; flushed in 2+ segments."""
    run = archive.start_run(
        agent="bot", metadata={"note": MARKERS["meta"], "labels": [MARKERS["meta"]]}
    )
    for i in range(n):
        run.checkpoint(f"{MARKERS['name']}-{i % 3}", {"x": MARKERS["state"], "i": i})
        run.event(MARKERS["kind"], {"d": MARKERS["data"], "i": i})
        if i == n // 2:
            run.flush()
    if fail:
        run.fail(f"boom {MARKERS['error']}")
    else:
        run.complete({"r": MARKERS["result"]})
    return run.run_id


def all_plain_bytes(store: Store) -> dict[str, bytes]:
    """Every object of the bucket, zstd frames decompressed (a grep of what is stored)."""
    out = {}
    for meta in store.list(""):
        body = store.get(meta.key).body
        with contextlib.suppress(zstandard.ZstdError):
            body = zstandard.ZstdDecompressor().decompress(body)
        out[meta.key] = body
    return out


def assert_no_markers(blobs: dict[str, bytes]) -> None:
    assert blobs
    for key, body in blobs.items():
        for marker in MARKERS.values():
            assert marker.encode() not in body, f"{marker} in {key}"
            assert marker[:10].encode() not in body, f"{marker[:10]} in {key}"


def index_segments(archive: Reader, run_id: str) -> list[SegmentRef]:
    return list(archive.index(run_id, decrypt=False).segments)


def check_restored(reader: Reader, run_id: str, n: int = 40) -> None:
    restored = reader.restore(run_id)
    assert restored.index.metadata == {"note": MARKERS["meta"], "labels": [MARKERS["meta"]]}
    assert restored.index.result == {"r": MARKERS["result"]}
    assert len(restored.events) == n
    assert {e.kind for e in restored.events} == {MARKERS["kind"]}
    assert restored.events[-1].data == {"d": MARKERS["data"], "i": n - 1}
    latest = restored.latest()
    assert latest is not None
    assert latest.state == {"x": MARKERS["state"], "i": n - 1}
    assert latest.name == f"{MARKERS['name']}-{(n - 1) % 3}"


def test_round_trip_and_nothing_readable_in_the_bucket(backend: Backend) -> None:
    archive = backend.open(encryption="local", encryption_keys=f"k1={K1}")
    run_id = write_run(archive)
    archive.flush()
    index = archive.index(run_id, decrypt=False)
    assert index.format == 3
    assert [k.kek for k in index.keys] == ["local:k1"]
    assert len(index.segments) >= 2
    assert all(s.dek == index.keys[0].id and s.key.endswith(".sealed") for s in index.segments)
    assert index.metadata == {}
    assert index.result is None
    assert set(index.sealed) == {"metadata", "result"}
    assert_no_markers(all_plain_bytes(archive.store))
    # A fresh host with the key reads everything back; verify decrypts every segment.
    fresh = backend.open(encryption_keys=f"k1={K1}")
    check_restored(fresh, run_id)
    report = fresh.verify(run_id)
    assert report.ok
    assert not report.problems
    assert report.records == 80
    [entry] = fresh.list_runs()
    assert entry.metadata["note"] == MARKERS["meta"]


def test_failed_run_error_is_sealed(backend: Backend) -> None:
    archive = backend.open(encryption="local", encryption_keys=f"k1={K1}")
    run_id = write_run(archive, n=5, fail=True)
    archive.flush()
    assert_no_markers(all_plain_bytes(archive.store))
    assert archive.index(run_id).error == f"boom {MARKERS['error']}"
    assert archive.index(run_id, decrypt=False).error is None


def test_missing_and_wrong_key_name_the_key(backend: Backend) -> None:
    archive = backend.open(encryption="local", encryption_keys=f"k1={K1}")
    run_id = write_run(archive, n=5)
    archive.flush()
    nokey = backend.open()
    with pytest.raises(KeyUnavailableError, match="local:k1") as info:
        nokey.restore(run_id)
    assert info.value.key_id == "local:k1"
    # Listing never fails on a missing key: the metadata stays sealed.
    [entry] = nokey.list_runs()
    assert entry.metadata == {}
    assert entry.sealed_metadata is not None
    wrong = backend.open(encryption_keys=f"k1={K2}")
    with pytest.raises(KeyUnavailableError, match="does not unwrap") as info:
        wrong.restore(run_id)
    assert info.value.key_id == "local:k1"
    other_id = backend.open(encryption_keys=f"k9={K1}")
    with pytest.raises(KeyUnavailableError, match="not among the configured local keys"):
        other_id.index(run_id)
    assert nokey.stats(run_id).stored_bytes > 0  # figures need no key
    # verify without the key checks what it can and says which key it lacks
    report = nokey.verify(run_id)
    assert report.ok
    assert {p.kind for p in report.problems} == {"not-decrypted"}
    assert all("local:k1" in p.message for p in report.problems)


def test_rotation_segments_under_two_keys_then_rekey_and_compact(
    backend: Backend, tmp_path: Path
) -> None:
    keyfile = tmp_path / "keys.json"
    first = add_key_to_file(keyfile, "k1")
    assert first == "local:k1"
    assert oct(keyfile.stat().st_mode & 0o777) == "0o600"
    cache = tmp_path / "rot-cache"
    archive = backend.open(encryption="local", encryption_key_file=keyfile, cache_dir=cache)
    run = archive.start_run(agent="bot", metadata={"note": MARKERS["meta"]})
    for i in range(10):
        run.checkpoint("step", {"x": MARKERS["state"], "i": i})
    run.flush()
    archive.close()
    # Rotate: a new key becomes current; the old one stays for reading.
    assert add_key_to_file(keyfile, "k2") == "local:k2"
    archive = backend.open(encryption="local", encryption_key_file=keyfile, cache_dir=cache)
    run = archive.run(run.run_id)
    for i in range(10, 20):
        run.checkpoint("step", {"x": MARKERS["state"], "i": i})
    run.complete({"r": MARKERS["result"]})
    archive.flush()
    index = archive.index(run.run_id, decrypt=False)
    keks = {k.id: k.kek for k in index.keys}
    assert sorted(keks.values()) == ["local:k1", "local:k2"]
    assert [keks[s.dek or ""] for s in index.segments] == ["local:k1", "local:k2"]
    assert index.sealed["result"].dek != index.sealed["metadata"].dek  # sealed after rotation
    reader = backend.open(encryption_key_file=keyfile)
    restored = reader.restore(run.run_id)
    assert [c.state["i"] for c in restored.checkpoints] == list(range(20))
    assert restored.index.metadata == {"note": MARKERS["meta"]}
    # rekey: every data key now wrapped by k2; bodies untouched
    before = {s.key for s in index.segments}
    [result] = archive.rekey(run.run_id)
    assert (result.keys, result.rewrapped, result.from_keks) == (2, 1, ("local:k1",))
    rekeyed = archive.index(run.run_id, decrypt=False)
    assert {k.kek for k in rekeyed.keys} == {"local:k2"}
    assert {s.key for s in rekeyed.segments} == before
    assert archive.rekey(run.run_id)[0].rewrapped == 0  # idempotent
    k2_only = backend.open(encryption_keys=f"k2={_key_from_file(keyfile, 'k2')}")
    assert [c.state["i"] for c in k2_only.restore(run.run_id).checkpoints] == list(range(20))
    assert k2_only.list_runs()[0].metadata == {"note": MARKERS["meta"]}  # manifest copy too
    # compaction re-encrypts under a new data key: new bodies, the old data keys (which
    # k1 once wrapped) pruned from the index
    [compacted] = archive.compact(run.run_id, reencrypt=True)
    assert compacted.done
    after = archive.index(run.run_id, decrypt=False)
    assert not {k.id for k in after.keys} & {k.id for k in rekeyed.keys}
    assert len(after.keys) == 1
    assert after.keys[0].kek == "local:k2"
    assert {s.dek for s in after.segments} == {after.keys[0].id}
    assert {s.key for s in after.segments}.isdisjoint(before)
    assert {v.dek for v in after.sealed.values()} == {after.keys[0].id}
    assert [c.state["i"] for c in k2_only.restore(run.run_id).checkpoints] == list(range(20))
    assert k2_only.verify(run.run_id).ok


def _key_from_file(path: Path, kid: str) -> str:
    return str(orjson.loads(path.read_bytes())["keys"][kid])


def test_compact_all_skips_encrypted_runs_without_a_key_and_reencrypt_needs_one(
    backend: Backend, capsys: Any
) -> None:
    enc = backend.open(encryption="local", encryption_keys=f"k1={K1}")
    sealed_run = write_run(enc, n=4)
    enc.flush()
    plain = backend.open()
    plain_run = write_run(plain, n=4)
    plain.flush()
    results = {r.plan.run_id: r for r in plain.compact()}
    assert results[sealed_run].skipped == "encrypted; no key to encrypt"
    assert not results[sealed_run].done
    assert results[plain_run].skipped is None
    assert results[plain_run].done  # 2 segments -> 1
    with pytest.raises(ConfigError, match="reencrypt"):
        plain.compact(plain_run, reencrypt=True)
    # a second compaction with reencrypt: a new data key even though nothing else changes
    first = enc.compact(sealed_run)[0]
    assert first.done
    keys_before = {k.id for k in enc.index(sealed_run, decrypt=False).keys}
    assert not enc.compact(sealed_run)[0].done  # nothing to do without reencrypt
    assert enc.compact(sealed_run, reencrypt=True)[0].done
    assert not {k.id for k in enc.index(sealed_run, decrypt=False).keys} & keys_before
    check_restored(enc, sealed_run, n=4)


def test_plaintext_run_stays_readable_and_compaction_encrypts_it(backend: Backend) -> None:
    plain = backend.open()
    run_id = write_run(plain, n=6)
    plain.flush()
    assert plain.index(run_id).format == 2
    enc = backend.open(encryption="local", encryption_keys=f"k1={K1}")
    check_restored(enc, run_id, n=6)
    assert enc.rekey(run_id)[0].keys == 0  # nothing to re-wrap in a plaintext run
    [done] = enc.compact(run_id)
    assert done.done
    assert done.plan.reencrypt
    index = enc.index(run_id, decrypt=False)
    assert index.format == 3
    assert all(s.dek for s in index.segments)
    assert_no_markers({k: v for k, v in all_plain_bytes(enc.store).items() if "/index" in k})
    check_restored(enc, run_id, n=6)


def test_a_writer_without_a_key_never_writes_an_encrypted_run_in_plaintext(
    backend: Backend, tmp_path: Path
) -> None:
    cache = tmp_path / "same-host"
    enc = backend.open(encryption="local", encryption_keys=f"k1={K1}", cache_dir=cache)
    run = enc.start_run(agent="bot", metadata={"m": 1})
    run.checkpoint("a", {"x": MARKERS["state"]})
    run.flush()
    enc.close()  # still running; the agent restarts, its encryption setting forgotten
    again = backend.open(encryption_keys=f"k1={K1}", cache_dir=cache)  # reads, cannot seal
    handle = again.run(run.run_id)
    handle.checkpoint("b", {"x": MARKERS["state"]})
    with pytest.raises(EncryptionError, match="plaintext"):
        handle.flush()
    assert not [m.key for m in again.store.list("") if m.key.endswith(".jsonl.zst")]
    assert_no_markers(all_plain_bytes(again.store))
    other_host = backend.open(encryption_keys=f"k1={K1}")
    with pytest.raises(EncryptionError, match="plaintext"):
        other_host.resume(run.run_id)
    writer = backend.open(encryption="local", encryption_keys=f"k1={K1}")
    ended = write_run(writer, n=4)
    writer.flush()
    with pytest.raises(EncryptionError, match="plaintext"):
        other_host.compact(ended)
    # closing flushes: it refuses too, and the record stays in the cache
    with pytest.raises(EncryptionError, match="stay in"):
        again.close()
    assert again.closed


def test_flipped_ciphertext_byte_fails_authentication(backend: Backend) -> None:
    archive = backend.open(encryption="local", encryption_keys=f"k1={K1}")
    run_id = write_run(archive, n=6)
    archive.flush()
    store = archive.store
    index = archive.index(run_id, decrypt=False)
    last = index.segments[-1]
    body = bytearray(store.get(last.key).body)
    body[-20] ^= 0x01  # inside the ciphertext, past the header line
    # A careful attacker also fixes the stored SHA-256 and the chain head in the index:
    # only the AES-GCM tag can then tell.
    new_sha = __import__("hashlib").sha256(bytes(body)).hexdigest()
    forged = index.model_copy(
        update={
            "segments": (*index.segments[:-1], last.model_copy(update={"sha256": new_sha})),
            "chain_head": new_sha,
        }
    )
    store.put(last.key, bytes(body), mode="overwrite")
    store.put(index_key(run_id), forged.model_dump_json().encode(), mode="overwrite")
    reader = backend.open(encryption_keys=f"k1={K1}")
    with pytest.raises(DecryptionError, match="authentication") as info:
        reader.restore(run_id)
    assert info.value.key == last.key
    assert info.value.key_id == "local:k1"
    assert isinstance(info.value, CorruptObjectError)
    report = reader.verify(run_id)
    assert not report.ok
    errors = [(p.kind, p.key) for p in report.problems if p.severity == "error"]
    # (the manifest entry still names the true chain head: that disagreement is found too)
    assert ("tampered", last.key) in errors
    assert {kind for kind, _ in errors} <= {"tampered", "out-of-chain"}


def test_tampered_sealed_metadata_is_refused(backend: Backend) -> None:
    archive = backend.open(encryption="local", encryption_keys=f"k1={K1}")
    run_id = write_run(archive, n=3)
    archive.flush()
    index = archive.index(run_id, decrypt=False)
    meta = index.sealed["metadata"]
    ct = bytearray(base64.b64decode(meta.ct))
    ct[0] ^= 0x80
    bad = meta.model_copy(update={"ct": base64.b64encode(bytes(ct)).decode()})
    forged = index.model_copy(update={"sealed": {**index.sealed, "metadata": bad}})
    archive.store.put(index_key(run_id), forged.model_dump_json().encode(), mode="overwrite")
    reader = backend.open(encryption_keys=f"k1={K1}")
    with pytest.raises(DecryptionError, match="metadata"):
        reader.index(run_id)
    report = reader.verify(run_id)
    assert [(p.kind, p.key) for p in report.problems if p.severity == "error"] == [
        ("tampered", index_key(run_id))
    ]
    # and a blob moved to another field fails too (the field name is associated data)
    moved = index.model_copy(update={"sealed": {**index.sealed, "result": meta}})
    archive.store.put(index_key(run_id), moved.model_dump_json().encode(), mode="overwrite")
    with pytest.raises(DecryptionError, match="result"):
        backend.open(encryption_keys=f"k1={K1}").index(run_id)


def test_sealing_is_deterministic_per_data_key_so_retries_reuse_the_key() -> None:
    plain = os.urandom(32)
    key = DataKey(id="d1", kek="local:k1", wrapped="AA==", created_at=utcnow())
    one = seal_segment("r", 1, 5, b'{"a":1}\n', key, plain, 3)
    two = seal_segment("r", 1, 5, b'{"a":1}\n', key, plain, 3)
    three = seal_segment("r", 1, 5, b'{"a":2}\n', key, plain, 3)
    assert one.body == two.body
    assert one.sha256 == two.sha256
    assert three.body != one.body
    # the same records compressed at another level: another frame, so another nonce
    other_level = seal_segment("r", 1, 5, b'{"a":1}\n' * 50, key, plain, 19)
    same_records = seal_segment("r", 1, 5, b'{"a":1}\n' * 50, key, plain, 1)
    assert other_level.body.split(b"\n", 1)[0] != same_records.body.split(b"\n", 1)[0]
    # and a keyring hands out the same fresh data key until an index holds it
    ring = Keyring([LocalKeyProvider({"k1": os.urandom(32)})], None)
    ring.writer = ring.providers[0]
    a, b = ring.write_key("r", ()), ring.write_key("r", ())
    assert a[0].id == b[0].id
    assert a[1] == b[1]
    ring.persisted("r", (a[0],))
    assert ring.write_key("r", (a[0],))[0].id == a[0].id


def test_export_sealed_and_decrypted(backend: Backend, tmp_path: Path) -> None:
    archive = backend.open(encryption="local", encryption_keys=f"k1={K1}")
    run_id = write_run(archive, n=8)
    archive.flush()
    sealed = tmp_path / "sealed.tar"
    archive.export(run_id, dest=sealed)
    with tarfile.open(sealed) as tar:
        names = tar.getnames()
        files = {
            m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile()
        }
    assert not any(n.endswith("records.jsonl") for n in names)
    assert any(n.endswith(".sealed") for n in names)
    assert_no_markers(files)
    run_json = orjson.loads(next(v for k, v in files.items() if k.endswith("run.json")))
    assert run_json["encryption"]["decrypted"] is False
    assert run_json["encryption"]["keys"][0]["kek"] == "local:k1"
    readme = next(v for k, v in files.items() if k.endswith("/README")).decode()
    assert "ENCRYPTED RUNS (1: " + run_id in readme
    # The README's steps 1-2 (hashes, chain), run as written, hold for sealed segments.
    steps = readme[readme.index("  # 1. each segment") : readme.index("  # 3. each segment")]
    unpacked = tmp_path / "unpacked"
    with tarfile.open(sealed) as tar:
        tar.extractall(unpacked, filter="data")
    run_dir = next(unpacked.glob(f"*/runs/{run_id}"))
    out = subprocess.run(
        ["bash", "-c", "set -e\n" + steps],
        cwd=run_dir,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "BAD" not in out.stdout
    assert out.stdout.count("OK ") == len(index_segments(archive, run_id))
    assert out.stdout.rstrip().endswith("true")
    export_json = orjson.loads(next(v for k, v in files.items() if k.endswith("export.json")))
    assert export_json["runs"][0]["sealed"] is True
    assert verify_export(sealed) == []  # without the key: hashes, headers, chain
    assert verify_export(sealed, keyring=archive.keyring) == []  # with it: records too
    clear = tmp_path / "clear"
    archive.export(run_id, dest=clear, decrypt=True)
    records = (clear / "runs" / run_id / "records.jsonl").read_bytes()
    assert MARKERS["state"].encode() in records
    assert MARKERS["kind"].encode() in records
    doc = orjson.loads((clear / "runs" / run_id / "run.json").read_bytes())
    assert doc["metadata"]["note"] == MARKERS["meta"]
    assert doc["encryption"]["decrypted"]
    assert verify_export(clear) == []
    assert verify_export(clear, keyring=archive.keyring) == []
    # a keyring without this run's key (what the CLI has with no keys set): as without
    stranger = backend.open(encryption_keys=f"k7={K2}").keyring
    assert verify_export(clear, keyring=stranger) == []
    assert verify_export(sealed, keyring=stranger) == []
    assert cli_main(["verify-export", str(sealed)]) == 0
    assert cli_main(["verify-export", str(clear)]) == 0
    # a decrypted bundle whose records were altered fails against the segments
    (clear / "runs" / run_id / "records.jsonl").write_bytes(records.replace(b"i", b"j", 1))
    problems = verify_export(clear, keyring=archive.keyring)
    assert any("records.jsonl" in p.path for p in problems)
    # decrypting needs the key
    nokey = backend.open()
    with pytest.raises(KeyUnavailableError, match="local:k1"):
        nokey.export(run_id, dest=tmp_path / "x.tar", decrypt=True)
    assert not (tmp_path / "x.tar").exists()


def test_config_errors_name_the_setting(tmp_path: Path) -> None:
    url = (tmp_path / "b").as_uri()
    with pytest.raises(ConfigError, match="RUNARCHIVE_ENCRYPTION_KEYS"):
        Archive.open(url, cache_dir=tmp_path / "c", encryption="local")
    with pytest.raises(ConfigError, match="RUNARCHIVE_ENCRYPTION_KMS_KEY_ID"):
        Archive.open(url, cache_dir=tmp_path / "c", encryption="kms")
    with pytest.raises(ConfigError, match="32 random bytes"):
        Archive.open(url, cache_dir=tmp_path / "c", encryption_keys="k1=" + "QUJD")
    with pytest.raises(ConfigError, match="base64"):
        Archive.open(url, cache_dir=tmp_path / "c", encryption_keys="k1=***")
    with pytest.raises(ConfigError, match="does not exist"):
        Archive.open(url, cache_dir=tmp_path / "c", encryption_key_file=tmp_path / "nope.json")
    assert not (tmp_path / "b").exists() or not any((tmp_path / "b").rglob("index.json"))


def test_cli_keygen_rekey_show_and_key_errors(tmp_path: Path, capsys: Any) -> None:
    url = (tmp_path / "bucket").as_uri()
    keyfile = tmp_path / "keys.json"
    assert cli_main(["keygen", "--file", str(keyfile), "--id", "k1"]) == 0
    settings = {"encryption": "local", "encryption_key_file": keyfile}
    with Archive.open(url, cache_dir=tmp_path / "c1", **settings) as archive:
        run_id = write_run(archive, n=4)
    capsys.readouterr()
    assert cli_main(["--url", url, "show", run_id]) == 2  # no key in the environment
    assert "local:k1" in capsys.readouterr().err
    os.environ["RUNARCHIVE_ENCRYPTION_KEY_FILE"] = str(keyfile)
    try:
        assert cli_main(["--url", url, "show", run_id]) == 0
        out = capsys.readouterr().out
        assert "under local:k1" in out
        assert MARKERS["meta"] in out
        assert cli_main(["keygen", "--file", str(keyfile), "--id", "k2"]) == 0
        os.environ["RUNARCHIVE_ENCRYPTION"] = "local"
        capsys.readouterr()
        assert cli_main(["--url", url, "rekey", "--all"]) == 0
        assert "1 data keys now under local:k2" in capsys.readouterr().out
        assert cli_main(["--url", url, "verify", "--all"]) == 0
    finally:
        os.environ.pop("RUNARCHIVE_ENCRYPTION_KEY_FILE", None)
        os.environ.pop("RUNARCHIVE_ENCRYPTION", None)
    capsys.readouterr()
    assert cli_main(["keygen"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("k1=")
    assert len(base64.b64decode(line[3:])) == 32


# -- AWS KMS (moto) -----------------------------------------------------------------


@pytest.fixture
def kms_over_http(moto_server: S3Server) -> Iterator[dict[str, Any]]:
    """moto's server speaks KMS too: two keys, reached over HTTP like AWS."""
    kms = boto3.client("kms", endpoint_url=moto_server.endpoint_url, region_name="us-east-1")
    k1 = kms.create_key(Description="runarchive test 1")["KeyMetadata"]["KeyId"]
    k2 = kms.create_key(Description="runarchive test 2")["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName=f"alias/ra-{k1[:8]}", TargetKeyId=k1)
    return {"endpoint": moto_server.endpoint_url, "k1": f"alias/ra-{k1[:8]}", "k2": k2}


def test_kms_round_trip_rotation_and_rekey(
    shared_backend: Backend, kms_over_http: dict[str, Any]
) -> None:
    kms = {"kms_endpoint_url": kms_over_http["endpoint"], "region": "us-east-1"}
    archive = shared_backend.open(
        encryption="kms", encryption_kms_key_id=kms_over_http["k1"], **kms
    )
    writer_calls: list[str] = []
    assert isinstance(archive.keyring.writer, KmsKeyProvider)
    archive.keyring.writer.client().meta.events.register(
        "before-call.kms.*", lambda model, **_: writer_calls.append(model.name)
    )
    run_id = write_run(archive, n=10)
    archive.flush()
    index = archive.index(run_id, decrypt=False)
    assert len(index.segments) >= 2
    assert writer_calls == ["GenerateDataKey"]  # one per run and key, however many flushes
    assert {k.kek for k in index.keys} == {f"kms:{kms_over_http['k1']}"}
    assert_no_markers(all_plain_bytes(archive.store))
    # Listing stays local: under KMS the metadata is listed sealed unless asked for.
    lister = shared_backend.open(**kms)
    [entry] = lister.list_runs()
    assert entry.metadata == {}
    assert entry.sealed_metadata is not None
    [entry] = lister.list_runs(decrypt_metadata=True)
    assert entry.metadata["note"] == MARKERS["meta"]
    # A fresh host reads with AWS credentials only (KMS finds the key itself).
    reader = shared_backend.open(**kms)
    check_restored(reader, run_id, n=10)
    assert reader.verify(run_id).ok
    # Rotation to another KMS key: ReEncrypt, never a plaintext data key here.
    rotated = shared_backend.open(
        encryption="kms", encryption_kms_key_id=kms_over_http["k2"], **kms
    )
    calls: list[str] = []
    provider = rotated.keyring.writer
    assert isinstance(provider, KmsKeyProvider)
    provider.client().meta.events.register(
        "before-call.kms.*", lambda model, **_: calls.append(model.name)
    )
    [result] = rotated.rekey(run_id)
    assert result.rewrapped == 1
    assert calls == ["ReEncrypt"]
    assert {k.kek for k in rotated.index(run_id, decrypt=False).keys} == {
        f"kms:{kms_over_http['k2']}"
    }
    check_restored(shared_backend.open(**kms), run_id, n=10)


def test_kms_refusal_names_the_key(tmp_path: Path) -> None:
    with mock_aws():
        archive = Archive.open(
            (tmp_path / "b").as_uri(),
            cache_dir=tmp_path / "c",
            encryption="kms",
            encryption_kms_key_id="alias/does-not-exist",
            region="us-east-1",
        )
        run = archive.start_run(agent="bot")
        run.checkpoint("a", {"x": 1})
        with pytest.raises(KeyUnavailableError, match="alias/does-not-exist"):
            run.flush()
        with pytest.raises(KeyUnavailableError, match="alias/does-not-exist"):
            archive.close()  # the checkpoint stays in the cache
        assert not list(archive.store.list("runs/"))


def test_segment_ref_of_a_sealed_segment_round_trips() -> None:
    ref = SegmentRef(
        key="runs/r/seg/x.sealed",
        first_seq=1,
        last_seq=2,
        records=2,
        checkpoints=1,
        events=1,
        stored_bytes=10,
        raw_bytes=20,
        sha256="0" * 64,
        first_ts=utcnow(),
        last_ts=utcnow(),
        format=3,
        dek="d1",
    )
    assert SegmentRef.model_validate_json(ref.model_dump_json()) == ref


def test_nothing_decrypted_or_secret_reaches_the_logs(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    archive = backend.open(encryption="local", encryption_keys=f"k1={K1}")
    run_id = write_run(archive, n=12)
    archive.flush()
    plain_keys = [archive.keyring.plaintext(run_id, k) for k in archive.index(run_id).keys]
    check_restored(backend.open(encryption_keys=f"k1={K1}"), run_id, n=12)
    with pytest.raises(KeyUnavailableError):
        backend.open(encryption_keys=f"k1={K2}").restore(run_id)
    text = "\n".join(
        r.getMessage() + (str(r.exc_info[1]) if r.exc_info else "") for r in caplog.records
    )
    assert caplog.records  # the workload logged something at DEBUG
    secrets_ = [K1, K2, *(base64.b64encode(k).decode() for k in plain_keys)]
    for needle in [*MARKERS.values(), *secrets_]:
        assert needle not in text
    for pk in plain_keys:
        assert pk.hex() not in text


def test_encryption_required_refuses_plaintext_put_in_place_of_an_encrypted_run(
    backend: Backend,
) -> None:
    enc = backend.open(encryption="local", encryption_keys=f"k1={K1}")
    run_id = write_run(enc, n=4)
    enc.flush()
    # Someone with write access to the bucket replaces the run with a plaintext one.
    forger = backend.open()
    fake = forger.start_run(agent="bot", metadata={"note": "forged"})
    fake.checkpoint("x", {"x": "forged"})
    fake.complete()
    forger.flush()
    body = forger.store.get(index_key(fake.run_id)).body
    seg = forger.index(fake.run_id).segments[0]
    # The segment's header and records are rewritten too (a segment that names another
    # run is refused by every reader), and its hash in the index forged to match.
    raw = zstandard.ZstdDecompressor().decompress(forger.store.get(seg.key).body)
    raw = raw.replace(fake.run_id.encode(), run_id.encode())
    sha = hashlib.sha256(raw).hexdigest()
    forged = body.replace(fake.run_id.encode(), run_id.encode())
    forged = forged.replace(seg.sha256.encode(), sha.encode())
    seg_body = zstandard.ZstdCompressor(write_checksum=True).compress(raw)
    forger.store.put(seg.key.replace(fake.run_id, run_id), seg_body, mode="overwrite")
    forger.store.put(index_key(run_id), forged, mode="overwrite")
    # Without the setting the forgery reads as a plaintext run (the documented gap)...
    lax = backend.open(encryption_keys=f"k1={K1}")
    assert lax.restore(run_id).index.metadata == {"note": "forged"}
    # ...with it, reading, resuming and verifying refuse it.
    strict = backend.open(encryption="local", encryption_keys=f"k1={K1}", encryption_required=True)
    with pytest.raises(EncryptionError, match="not encrypted"):
        strict.restore(run_id)
    report = strict.verify(run_id)
    assert "plaintext" in {p.kind for p in report.problems if p.severity == "error"}
    with pytest.raises(ConfigError, match="RUNARCHIVE_ENCRYPTION_REQUIRED"):
        backend.open(encryption_keys=f"k1={K1}", encryption_required=True)
