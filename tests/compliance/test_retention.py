"""Retention locks (S3 Object Lock) and encryption at rest (SSE), issue 5 items 4 and 7.

Against the real server (SeaweedFS over HTTP, buckets created with Object Lock) and
in-process moto. moto ignores a lock given at CreateMultipartUpload and lets a
COMPLIANCE retention be shortened; SeaweedFS does neither, so those behaviours are
asserted on SeaweedFS.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.config import Config
from moto import mock_aws
from support.backends import Backend, s3_settings
from support.servers import S3Server

from runarchive import Archive
from runarchive.config import load_config
from runarchive.errors import (
    ConfigError,
    ObjectLockedError,
    ObjectLockUnsupportedError,
    RunNotFoundError,
)
from runarchive.store import CountingStore, MemoryStore, Retention, S3Settings, S3Store
from runarchive.store.url import check_store_settings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

PREFIX = "agents"
DAY = dt.timedelta(days=1)


class LockBackend(Backend):
    """A Backend on an S3 bucket, plus a raw client to inspect what the server stored."""

    def __init__(
        self,
        name: str,
        bucket: str,
        settings: dict[str, object],
        tmp: Path,
        client: S3Client,
    ) -> None:
        super().__init__(name, f"s3://{bucket}/{PREFIX}", settings, tmp)
        self.bucket, self.client = bucket, client

    def keys(self, sub: str = "") -> list[str]:
        """Keys (relative to the archive prefix) of the current objects under ``sub``."""
        got = self.client.list_objects_v2(Bucket=self.bucket, Prefix=f"{PREFIX}/{sub}")
        return sorted(o["Key"][len(PREFIX) + 1 :] for o in got.get("Contents", []))

    def versions(self, sub: str) -> int:
        """Object versions and delete markers under ``sub`` (data still on the server)."""
        got = self.client.list_object_versions(Bucket=self.bucket, Prefix=f"{PREFIX}/{sub}")
        return len(got.get("Versions", [])) + len(got.get("DeleteMarkers", []))

    def head(self, key: str) -> Any:
        return self.client.head_object(Bucket=self.bucket, Key=f"{PREFIX}/{key}")


def _lock_backend(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, *, object_lock: bool
) -> Iterator[LockBackend]:
    if kind == "moto":
        with mock_aws():
            client: S3Client = boto3.client("s3", region_name="us-east-1")
            bucket = "runarchive-lock" if object_lock else "runarchive-nolock"
            if object_lock:
                client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
            else:
                client.create_bucket(Bucket=bucket)
            b = LockBackend(kind, bucket, {"region": "us-east-1"}, tmp_path, client)
            yield b
            b.close_all()
    else:
        server: S3Server = request.getfixturevalue("seaweed")
        bucket = server.make_bucket("lock" if object_lock else "nolock", object_lock=object_lock)
        b = LockBackend(kind, bucket, s3_settings(server), tmp_path, server.client())
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("AWS_ACCESS_KEY_ID", server.access_key)
            mp.setenv("AWS_SECRET_ACCESS_KEY", server.secret_key)
            yield b
            b.close_all()


BACKENDS = ["moto", pytest.param("seaweedfs", marks=pytest.mark.real_server)]


@pytest.fixture(params=BACKENDS)
def locked(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LockBackend]:
    """An empty archive in a bucket created with Object Lock enabled."""
    yield from _lock_backend(str(request.param), request, tmp_path, object_lock=True)


@pytest.fixture(params=BACKENDS)
def unlocked(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LockBackend]:
    """An empty archive in an ordinary bucket (no Object Lock, not versioned)."""
    yield from _lock_backend(str(request.param), request, tmp_path, object_lock=False)


@pytest.fixture(params=["seaweedfs"])
def seaweed_locked(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LockBackend]:
    yield from _lock_backend("seaweedfs", request, tmp_path, object_lock=True)


def _write_run(archive: Archive, flushes: int = 2) -> str:
    """A completed run of ``flushes`` segments; returns its id."""
    run = archive.start_run(agent="auditor", metadata={"case": "R-7"})
    for i in range(flushes):
        run.checkpoint("plan", {"step": i, "text": "x" * 200})
        run.event("tool_call", {"i": i})
        archive.flush()
    run.complete({"ok": True})
    archive.flush()
    return run.run_id


def _assert_retained(head: Any, mode: str, days: int = 1) -> None:
    assert head.get("ObjectLockMode") == mode
    until = head["ObjectLockRetainUntilDate"]
    expected = dt.datetime.now(dt.UTC) + dt.timedelta(days=days)
    assert abs((until - expected).total_seconds()) < 120, (until, expected)


# -- GOVERNANCE ------------------------------------------------------------------


def test_governance_locks_segments_only_and_delete_needs_bypass(locked: LockBackend) -> None:
    archive = locked.open(object_lock_mode="GOVERNANCE", object_lock_days=1)
    run_id = _write_run(archive)
    segs = locked.keys(f"runs/{run_id}/seg/")
    assert len(segs) == 2
    for key in segs:
        _assert_retained(locked.head(key), "GOVERNANCE")
    # The index and the manifest are rewritten by compare-and-swap: never locked.
    rewritable = [f"runs/{run_id}/index.json", *locked.keys("manifest/")]
    assert len(rewritable) >= 2
    for key in rewritable:
        head = locked.head(key)
        assert head.get("ObjectLockMode") is None
        assert head.get("ObjectLockRetainUntilDate") is None

    before = locked.keys(f"runs/{run_id}/")
    with pytest.raises(ObjectLockedError, match="GOVERNANCE retention") as info:
        archive.delete_run(run_id)
    assert "Nothing was deleted" in str(info.value)
    assert "bypass_governance=True" in str(info.value)
    assert info.value.key in segs
    assert locked.keys(f"runs/{run_id}/") == before
    assert archive.restore(run_id).index.status == "completed"

    assert archive.delete_run(run_id, bypass_governance=True) == len(before)
    assert locked.keys(f"runs/{run_id}/") == []
    assert locked.versions(f"runs/{run_id}/") == 0  # gone for good, not delete markers
    with pytest.raises(RunNotFoundError):
        archive.restore(run_id)
    assert [e.run_id for e in archive.list_runs()] == []


def test_plain_store_delete_of_a_governed_segment_is_refused_by_the_server(
    locked: LockBackend,
) -> None:
    """Our bypass really bypasses: without it, deleting the locked version is refused."""
    archive = locked.open(object_lock_mode="GOVERNANCE", object_lock_days=1)
    run_id = _write_run(archive, flushes=1)
    (seg,) = locked.keys(f"runs/{run_id}/seg/")
    version = locked.head(seg)["VersionId"]
    with pytest.raises(Exception, match="AccessDenied"):
        locked.client.delete_object(Bucket=locked.bucket, Key=f"{PREFIX}/{seg}", VersionId=version)
    archive.store.delete(seg, bypass_governance=True)
    assert locked.versions(seg) == 0


# -- COMPLIANCE ------------------------------------------------------------------


def test_compliance_needs_explicit_opt_in(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="allow_compliance_lock") as info:
        Archive.open(
            "s3://some-bucket/p",
            cache_dir=tmp_path / "c",
            object_lock_mode="COMPLIANCE",
            object_lock_days=1,
        )
    assert "RUNARCHIVE_ALLOW_COMPLIANCE_LOCK" in str(info.value)
    assert "irreversible" in str(info.value)
    assert not (tmp_path / "c").exists()  # refused before anything was created


def test_compliance_run_cannot_be_deleted_even_with_bypass(locked: LockBackend) -> None:
    archive = locked.open(
        object_lock_mode="COMPLIANCE", object_lock_days=1, allow_compliance_lock=True
    )
    run_id = _write_run(archive)
    segs = locked.keys(f"runs/{run_id}/seg/")
    for key in segs:
        _assert_retained(locked.head(key), "COMPLIANCE")
    before = locked.keys(f"runs/{run_id}/")
    for bypass in (False, True):
        with pytest.raises(ObjectLockedError, match="COMPLIANCE retention") as info:
            archive.delete_run(run_id, bypass_governance=bypass)
        assert "cannot be removed" in str(info.value)
        assert locked.keys(f"runs/{run_id}/") == before
    # The server refuses too, when asked directly (the check is not only ours).
    with pytest.raises(ObjectLockedError, match="COMPLIANCE"):
        archive.store.delete(segs[0], bypass_governance=True)
    assert locked.keys(f"runs/{run_id}/") == before
    assert len(archive.restore(run_id).checkpoints) == 2


# -- legal hold ------------------------------------------------------------------


def test_hold_and_release_a_run(locked: LockBackend) -> None:
    archive = locked.open()  # legal holds need an Object Lock bucket, not a lock mode
    run = archive.start_run(agent="auditor")
    run.checkpoint("a", {"n": 1})
    archive.flush()
    run.checkpoint("a", {"n": 2})  # pending: hold() flushes it first
    assert archive.hold(run.run_id) == 2
    segs = locked.keys(f"runs/{run.run_id}/seg/")
    assert len(segs) == 2
    for key in segs:
        head = locked.head(key)
        assert head.get("ObjectLockLegalHoldStatus") == "ON"
        assert head.get("ObjectLockMode") is None
    assert locked.head(f"runs/{run.run_id}/index.json").get("ObjectLockLegalHoldStatus") != "ON"

    # Segments flushed after the hold are not held (documented); holding again covers them.
    run.checkpoint("a", {"n": 3})
    archive.flush()
    (new_seg,) = set(locked.keys(f"runs/{run.run_id}/seg/")) - set(segs)
    assert locked.head(new_seg).get("ObjectLockLegalHoldStatus") != "ON"
    assert archive.hold(run.run_id) == 3
    assert locked.head(new_seg).get("ObjectLockLegalHoldStatus") == "ON"

    before = locked.keys(f"runs/{run.run_id}/")
    for bypass in (False, True):
        with pytest.raises(ObjectLockedError, match="legal hold") as info:
            archive.delete_run(run.run_id, bypass_governance=bypass)
        assert "release(run_id)" in str(info.value)
        assert locked.keys(f"runs/{run.run_id}/") == before

    assert archive.release(run.run_id) == 3
    for key in locked.keys(f"runs/{run.run_id}/seg/"):
        assert locked.head(key).get("ObjectLockLegalHoldStatus") == "OFF"
    assert archive.delete_run(run.run_id) == len(before)
    assert locked.keys(f"runs/{run.run_id}/") == []


def test_hold_on_a_completed_run_from_another_host(locked: LockBackend) -> None:
    run_id = _write_run(locked.open())
    other = locked.open()  # empty cache: the run is only in the bucket
    assert other.hold(run_id) == 2
    with pytest.raises(ObjectLockedError):
        other.delete_run(run_id)
    assert other.release(run_id) == 2
    with pytest.raises(RunNotFoundError):
        other.hold("no-such-run")


def test_hold_refused_where_nothing_can_be_locked(unlocked: LockBackend, tmp_path: Path) -> None:
    archive = unlocked.open()
    run_id = _write_run(archive, flushes=1)
    with pytest.raises(ObjectLockUnsupportedError, match="Object Lock enabled"):
        archive.hold(run_id)
    with pytest.raises(ObjectLockUnsupportedError):
        archive.store.set_legal_hold(unlocked.keys(f"runs/{run_id}/seg/")[0], True)
    with Archive.open((tmp_path / "dir").as_uri(), cache_dir=tmp_path / "fc") as local:
        local_id = _write_run(local, flushes=1)
        with pytest.raises(ObjectLockUnsupportedError, match="cannot place legal holds"):
            local.hold(local_id)


# -- refusals at open ------------------------------------------------------------


def test_lock_mode_on_a_bucket_without_object_lock_is_refused(unlocked: LockBackend) -> None:
    with pytest.raises(ConfigError, match="does not have S3 Object Lock enabled") as info:
        unlocked.open(object_lock_mode="GOVERNANCE", object_lock_days=1)
    assert "object_lock_mode" in str(info.value)
    assert unlocked.keys() == []  # refused before the probe wrote anything


def test_lock_mode_and_sse_on_file_archive_are_refused(tmp_path: Path) -> None:
    url = (tmp_path / "dir").as_uri()
    with pytest.raises(ConfigError, match=r"'object_lock_mode'.*cannot lock objects"):
        Archive.open(
            url, cache_dir=tmp_path / "c1", object_lock_mode="GOVERNANCE", object_lock_days=1
        )
    with pytest.raises(ConfigError, match=r"'sse'.*cannot encrypt"):
        Archive.open(url, cache_dir=tmp_path / "c2", sse="AES256")


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"object_lock_mode": "GOVERNANCE"}, "object_lock_days"),
        ({"object_lock_days": 3}, "object_lock_days"),
        ({"object_lock_mode": "COMPLIANCE", "object_lock_days": 1}, "allow_compliance_lock"),
        ({"object_lock_mode": "FOREVER", "object_lock_days": 1}, "object_lock_mode"),
        ({"object_lock_mode": "GOVERNANCE", "object_lock_days": 0}, "object_lock_days"),
        ({"sse": "rot13"}, "sse"),
        ({"sse_kms_key_id": "key-1"}, "sse_kms_key_id"),
        ({"sse": "AES256", "sse_kms_key_id": "key-1"}, "sse_kms_key_id"),
        ({"sse_kms_key_id": ""}, "sse_kms_key_id"),
    ],
)
def test_bad_settings_name_the_setting(
    tmp_path: Path, settings: dict[str, object], named: str
) -> None:
    with pytest.raises(ConfigError, match=f"'{named}' \\(RUNARCHIVE_{named.upper()}\\)"):
        Archive.open("s3://some-bucket/p", cache_dir=tmp_path / "c", **settings)
    assert not (tmp_path / "c").exists()


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNARCHIVE_OBJECT_LOCK_MODE", "governance")
    monkeypatch.setenv("RUNARCHIVE_OBJECT_LOCK_DAYS", "30")
    monkeypatch.setenv("RUNARCHIVE_SSE", "aws:kms")
    monkeypatch.setenv("RUNARCHIVE_SSE_KMS_KEY_ID", "alias/runs")
    cfg = load_config()
    assert (cfg.object_lock_mode, cfg.object_lock_days) == ("GOVERNANCE", 30)
    assert (cfg.sse, cfg.sse_kms_key_id, cfg.allow_compliance_lock) == (
        "aws:kms",
        "alias/runs",
        False,
    )
    monkeypatch.setenv("RUNARCHIVE_OBJECT_LOCK_MODE", "COMPLIANCE")
    with pytest.raises(ConfigError, match="allow_compliance_lock"):
        load_config()
    monkeypatch.setenv("RUNARCHIVE_ALLOW_COMPLIANCE_LOCK", "true")
    assert load_config().object_lock_mode == "COMPLIANCE"


def test_open_checks_object_lock_with_one_request() -> None:
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(
            Bucket="count-lock", ObjectLockEnabledForBucket=True
        )
        settings = S3Settings(
            bucket="count-lock",
            prefix=PREFIX,
            region="us-east-1",
            object_lock_mode="GOVERNANCE",
            object_lock_days=1,
        )
        counting = CountingStore(S3Store(settings))
        check_store_settings(
            load_config(
                url="s3://count-lock/agents", object_lock_mode="GOVERNANCE", object_lock_days=1
            ),
            counting,
        )
        assert dict(counting.counts) == {"lock_config": 1}


def test_store_passed_without_the_retention_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="applies no retention"):
        Archive.open(
            store=MemoryStore(),
            cache_dir=tmp_path / "c",
            object_lock_mode="GOVERNANCE",
            object_lock_days=2,
        )


# -- encryption at rest ----------------------------------------------------------


def test_sse_s3_on_every_object(unlocked: LockBackend) -> None:
    archive = unlocked.open(sse="AES256")
    run_id = _write_run(archive)
    keys = unlocked.keys()
    segs = [k for k in keys if "/seg/" in k]
    assert len(segs) == 2
    assert f"runs/{run_id}/index.json" in keys
    assert any(k.startswith("manifest/") for k in keys)
    for key in keys:
        assert unlocked.head(key).get("ServerSideEncryption") == "AES256", key
    restored = Archive.open(unlocked.url, cache_dir=unlocked.tmp / "fresh", **unlocked.settings)
    try:
        assert [c.state["step"] for c in restored.restore(run_id).checkpoints] == [0, 1]
    finally:
        restored.close()


def test_sse_kms_key_id_is_passed_through(tmp_path: Path) -> None:
    """moto only: SeaweedFS here has no KMS."""
    key_id = "arn:aws:kms:us-east-1:123456789012:key/runarchive-test"
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="kms-bucket")
        with Archive.open(
            "s3://kms-bucket/agents",
            cache_dir=tmp_path / "c",
            region="us-east-1",
            sse="aws:kms",
            sse_kms_key_id=key_id,
        ) as archive:
            _write_run(archive, flushes=1)
        objects = client.list_objects_v2(Bucket="kms-bucket")["Contents"]
        assert len(objects) >= 3  # segment, index, manifest shards
        for obj in objects:
            head = client.head_object(Bucket="kms-bucket", Key=obj["Key"])
            assert head.get("ServerSideEncryption") == "aws:kms", obj["Key"]
            assert head.get("SSEKMSKeyId") == key_id, obj["Key"]


# -- the S3 requests themselves --------------------------------------------------


def _recording_store(
    server: S3Server, bucket: str, **settings: Any
) -> tuple[S3Store, list[tuple[str, dict[str, str]]]]:
    """An S3Store whose client records (operation, lock/SSE/integrity headers) sent."""
    checksum = settings.pop("request_checksum_calculation", "when_supported")
    client = server.client(Config(request_checksum_calculation=checksum))
    sent: list[tuple[str, dict[str, str]]] = []

    def record(request: Any, event_name: str, **_: Any) -> None:
        wanted = ("content-md5", "x-amz-object-lock", "x-amz-server-side-encryption")
        headers = {
            k.lower(): v.decode() if isinstance(v, bytes) else str(v)
            for k, v in request.headers.items()
            if k.lower().startswith(wanted)
        }
        sent.append((event_name.rsplit(".", maxsplit=1)[-1], headers))

    client.meta.events.register("before-send.s3.*", record)
    store = S3Store(
        S3Settings(
            bucket=bucket,
            prefix=PREFIX,
            endpoint_url=server.endpoint_url,
            region=server.region,
            addressing_style="path",
            request_checksum_calculation=checksum,
            **settings,
        ),
        client=client,
    )
    return store, sent


@pytest.mark.real_server
@pytest.mark.parametrize("checksum", ["when_supported", "when_required"])
def test_locked_puts_carry_content_md5_single_and_multipart(
    seaweed: S3Server, checksum: str
) -> None:
    bucket = seaweed.make_bucket("md5", object_lock=True)
    store, sent = _recording_store(
        seaweed,
        bucket,
        object_lock_mode="GOVERNANCE",
        object_lock_days=1,
        sse="AES256",
        multipart_threshold=1024 * 1024,
        multipart_part_size=5 * 1024 * 1024,
        request_checksum_calculation=checksum,
    )
    client = seaweed.client()
    small, big = b"s" * 1000, bytes(range(256)) * (6 * 4096)  # 6 MiB: 2 parts of >= 5 MiB
    store.put("runs/r/seg/small", small, mode="create", immutable=True)
    store.put("runs/r/seg/big", big, mode="create", immutable=True)
    store.put("runs/r/index.json", b"{}", mode="create")  # not immutable: no lock
    ops = [op for op, _ in sent]
    assert ops == [
        "PutObject",
        "CreateMultipartUpload",
        "UploadPart",
        "UploadPart",
        "CompleteMultipartUpload",
        "PutObject",
    ]
    put_small, create, part1, part2, _, put_index = (h for _, h in sent)
    for headers in (put_small, create):
        assert headers["x-amz-object-lock-mode"] == "GOVERNANCE"
        assert headers["x-amz-server-side-encryption"] == "AES256"
    for headers in (put_small, part1, part2):
        assert "content-md5" in headers
    assert "x-amz-object-lock-mode" not in put_index
    assert "content-md5" not in put_index
    assert put_index["x-amz-server-side-encryption"] == "AES256"
    for key, body in (("small", small), ("big", big)):
        full = f"{PREFIX}/runs/r/seg/{key}"
        head = client.head_object(Bucket=bucket, Key=full)
        _assert_retained(head, "GOVERNANCE")
        assert head.get("ServerSideEncryption") == "AES256"
        assert client.get_object(Bucket=bucket, Key=full)["Body"].read() == body
    assert (
        client.head_object(Bucket=bucket, Key=f"{PREFIX}/runs/r/index.json").get("ObjectLockMode")
        is None
    )
    state = store.lock_state("runs/r/seg/big")
    assert state is not None
    assert state.mode == "GOVERNANCE"
    assert state.retained()
    assert store.lock_reason("runs/r/seg/big", bypass_governance=True) is None
    assert "GOVERNANCE" in (store.lock_reason("runs/r/seg/big") or "")
    store.close()


@pytest.mark.real_server
def test_wrong_content_md5_is_rejected_by_the_server(seaweed_locked: LockBackend) -> None:
    """The integrity header is checked by SeaweedFS (moto would accept a wrong one)."""
    wrong = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    with pytest.raises(Exception, match="BadDigest"):
        seaweed_locked.client.put_object(
            Bucket=seaweed_locked.bucket,
            Key=f"{PREFIX}/x",
            Body=b"body",
            ContentMD5=wrong,
            ObjectLockMode="GOVERNANCE",
            ObjectLockRetainUntilDate=dt.datetime.now(dt.UTC) + DAY,
        )


# -- the memory store's emulation ------------------------------------------------


def test_memory_store_emulates_object_lock(tmp_path: Path) -> None:
    store = MemoryStore(retention=Retention("GOVERNANCE", 1))
    store.put("runs/r/seg/a", b"a", mode="create", immutable=True)
    store.put("runs/r/index.json", b"{}", mode="create")
    state = store.lock_state("runs/r/seg/a")
    assert state is not None
    assert state.mode == "GOVERNANCE"
    assert state.retained()
    assert store.lock_reason("runs/r/index.json") is None
    with pytest.raises(ObjectLockedError):
        store.delete("runs/r/seg/a")
    with pytest.raises(ObjectLockedError):
        store.put("runs/r/seg/a", b"b")
    store.set_legal_hold("runs/r/index.json", True)
    with pytest.raises(ObjectLockedError, match="legal hold"):
        store.delete("runs/r/index.json", bypass_governance=True)
    store.set_legal_hold("runs/r/index.json", False)
    store.delete("runs/r/index.json")
    store.delete("runs/r/seg/a", bypass_governance=True)
    assert list(store.list()) == []

    with Archive.open(
        store=MemoryStore(retention=Retention("GOVERNANCE", 1)),
        cache_dir=tmp_path / "c",
        object_lock_mode="GOVERNANCE",
        object_lock_days=1,
    ) as archive:
        run_id = _write_run(archive)
        with pytest.raises(ObjectLockedError):
            archive.delete_run(run_id)
        assert archive.hold(run_id) == 2
        with pytest.raises(ObjectLockedError, match="legal hold"):
            archive.delete_run(run_id, bypass_governance=True)
        assert archive.release(run_id) == 2
        assert archive.delete_run(run_id, bypass_governance=True) == 3


def test_bucket_default_retention_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="default-lock", ObjectLockEnabledForBucket=True)
        client.put_object_lock_configuration(
            Bucket="default-lock",
            ObjectLockConfiguration={
                "ObjectLockEnabled": "Enabled",
                "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}},
            },
        )
        with (
            caplog.at_level("WARNING", logger="runarchive.store._s3"),
            Archive.open(
                "s3://default-lock/agents",
                cache_dir=tmp_path / "c",
                region="us-east-1",
                object_lock_mode="GOVERNANCE",
                object_lock_days=1,
            ),
        ):
            pass
    assert "default Object Lock retention rule" in caplog.text
    assert "testing" not in caplog.text  # no credentials in logs


@pytest.mark.parametrize("backend", ["moto", "seaweedfs"], indirect=True)
@pytest.mark.parametrize("tag", [True, False])
def test_segments_are_tagged_for_lifecycle_rules_and_nothing_else(
    backend: Backend, tag: bool
) -> None:
    """A lifecycle rule can select segments exactly by the tag (docs/deploy.md);
    the index and the manifest, which must never transition, carry none."""
    mib = 1024 * 1024
    archive = backend.open(
        tag_segments=tag, multipart_threshold=5 * mib, multipart_part_size=5 * mib
    )
    run = archive.start_run(agent="t", run_id="tagged")
    run.checkpoint("small", {"x": 1})
    run.flush()
    run.checkpoint("big", {"blob": base64.b64encode(os.urandom(6 * mib)).decode()})
    run.complete()
    inner = archive.store.inner
    assert isinstance(inner, S3Store)
    client, bucket = inner._client, inner.settings.bucket

    def tags(key: str) -> list[dict[str, str]]:
        full = inner._full(key)
        return list(client.get_object_tagging(Bucket=bucket, Key=full)["TagSet"])

    segments = archive.index("tagged").segments
    assert len(segments) == 2
    big = archive.store.head(segments[1].key)
    assert big is not None
    assert big.etag.strip('"').endswith("-2")  # the tag also rides on a multipart upload
    want = [{"Key": "runarchive-object", "Value": "segment"}] if tag else []
    for seg in segments:
        assert tags(seg.key) == want
    assert tags("runs/tagged/index.json") == []
    for meta in archive.store.list("manifest/"):
        assert tags(meta.key) == []
