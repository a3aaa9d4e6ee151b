"""Bad input, bad configuration and a bad bucket: clear errors, nothing written, nothing lost."""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path
from typing import Any

import pytest
from support.backends import Backend, s3_settings
from support.servers import S3Server, SeaweedFS

from runarchive import Archive, Reader
from runarchive.errors import (
    AccessDeniedError,
    BucketNotFoundError,
    CacheError,
    ConditionalWritesUnsupportedError,
    ConfigError,
    CorruptObjectError,
    FormatVersionError,
    InvalidInputError,
    RecordTooLargeError,
    RunStateError,
    StateNotSerializableError,
    StoreUnavailableError,
)
from runarchive.format.codec import index_key
from runarchive.store import MemoryStore, PutMode


class IgnoresPreconditions(MemoryStore):
    """Like s3rver or `rclone serve s3`: accepts If-None-Match / If-Match and ignores them."""

    def put(self, key: str, body: bytes, *, mode: PutMode = "overwrite") -> str:
        return super().put(key, body, mode="overwrite")


def test_bucket_that_ignores_conditional_writes_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConditionalWritesUnsupportedError, match="does not enforce S3 conditional"):
        Archive.open(cache_dir=tmp_path / "c", store=IgnoresPreconditions())
    assert not (tmp_path / "c").exists()  # refused before the cache was created


def test_unreachable_endpoint_fails_at_open_with_a_clear_error(tmp_path: Path) -> None:
    began = time.monotonic()
    with pytest.raises(
        StoreUnavailableError, match=r"cannot reach s3://some-bucket/.*127\.0\.0\.1:9"
    ):
        Archive.open(
            "s3://some-bucket/p",
            cache_dir=tmp_path / "c",
            endpoint_url="http://127.0.0.1:9",
            max_attempts=1,
            connect_timeout=0.5,
            region="us-east-1",
        )
    assert time.monotonic() - began < 20


def test_missing_bucket(moto_server: S3Server, tmp_path: Path) -> None:
    # Over HTTP against moto's server: SeaweedFS creates a missing bucket on first PUT.
    with pytest.raises(BucketNotFoundError, match="bucket does not exist"):
        Archive.open(
            moto_server.url("no-such-bucket-here"),
            cache_dir=tmp_path / "c",
            **s3_settings(moto_server),
        )
    assert not (tmp_path / "c").exists()


def test_wrong_credentials(
    seaweed: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweed.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with pytest.raises(AccessDeniedError) as info:
        Archive.open(seaweed.url(seaweed.make_bucket()), cache_dir=tmp_path, **s3_settings(seaweed))
    assert "not-the-secret" not in str(info.value)  # never echo credentials


@pytest.mark.real_server
def test_outage_mid_run_keeps_data_in_cache_and_drains_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weed = SeaweedFS(tmp_path / "own-server")  # its own server: this test stops it
    server = weed.start()
    try:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", server.access_key)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", server.secret_key)
        url = server.url(server.make_bucket(), "outage")
        settings: dict[str, Any] = {
            **s3_settings(server),
            "max_attempts": 1,
            "connect_timeout": 0.5,
            "flush_age": 0.1,
            "cache_dir": tmp_path / "cache",
        }
        archive = Archive.open(url, **settings)
        run = archive.start_run(agent="outage")
        run.checkpoint("before", {"i": 0})
        run.flush()

        weed.stop()
        for i in range(1, 6):  # appends keep succeeding against the local cache
            run.checkpoint("during", {"i": i})
        with pytest.raises(StoreUnavailableError, match="Appended records stay in the local cache"):
            run.flush()
        deadline = time.monotonic() + 10
        while run.run_id not in archive.flush_errors and time.monotonic() < deadline:
            time.sleep(0.05)
        assert isinstance(archive.flush_errors[run.run_id].error, StoreUnavailableError)
        latest = run.latest()
        assert latest is not None
        assert latest.state == {"i": 5}
        with pytest.raises(StoreUnavailableError):
            archive.close()  # cannot flush: raises, and the records stay in the cache

        weed.restart()
        reopened = Archive.open(url, **settings)  # same cache: drains the backlog
        reopened.close()
        restored = Reader.open(url, **s3_settings(server)).restore(run.run_id)
        assert [c.state["i"] for c in restored.checkpoints] == [0, 1, 2, 3, 4, 5]
    finally:
        weed.stop()


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"flush_records": 0}, "'flush_records' (RUNARCHIVE_FLUSH_RECORDS)"),
        ({"flush_age": -1}, "'flush_age'"),
        ({"durability": "maybe"}, "'durability'"),
        ({"compression_level": 40}, "'compression_level'"),
        ({"policy": {"keep_last": -3}}, "'policy.keep_last' (RUNARCHIVE_POLICY__KEEP_LAST)"),
        ({"flush_recrods": 5}, "'flush_recrods'"),
        ({"url": "ftp://host/x"}, "unsupported archive URL"),
        ({"url": "s3://Bad_Bucket/x"}, "invalid bucket name"),
    ],
)
def test_bad_configuration_names_the_setting(
    tmp_path: Path, settings: dict[str, Any], named: str
) -> None:
    with pytest.raises(ConfigError, match="invalid configuration") as info:
        Archive.open(cache_dir=tmp_path / "c", **settings)
    assert named in str(info.value)
    assert not (tmp_path / "c").exists()


def test_settings_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNARCHIVE_URL", (tmp_path / "envbucket").as_uri())
    monkeypatch.setenv("RUNARCHIVE_CACHE_DIR", str(tmp_path / "envcache"))
    monkeypatch.setenv("RUNARCHIVE_POLICY__KEEP_LAST", "5")
    monkeypatch.setenv("RUNARCHIVE_FLUSH_RECORDS", "7")
    with Archive.open() as archive:
        assert archive.url == (tmp_path / "envbucket").as_uri()
        assert (archive.config.policy.keep_last, archive.config.flush_records) == (5, 7)
        assert archive.cache.directory == tmp_path / "envcache"
    monkeypatch.setenv("RUNARCHIVE_FLUSH_AGE", "soon")
    with pytest.raises(ConfigError, match="RUNARCHIVE_FLUSH_AGE"):
        Archive.open()


def test_embedded_default_lives_under_dot_runarchive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with Archive.open() as archive:
        archive.start_run(agent="default").checkpoint("c", {"x": 1})
        assert archive.url == (tmp_path / ".runarchive" / "archive").as_uri()
    assert list((tmp_path / ".runarchive" / "archive" / "runs").iterdir())
    assert (tmp_path / ".runarchive" / "cache" / "cache.sqlite3").exists()


def test_cache_dir_is_owned_by_one_process_and_one_archive(tmp_path: Path) -> None:
    url = (tmp_path / "b").as_uri()
    with (
        Archive.open(url, cache_dir=tmp_path / "c"),
        pytest.raises(CacheError, match=rf"in use by another process \(pid {os.getpid()}\)"),
    ):
        Archive.open(url, cache_dir=tmp_path / "c")
    with pytest.raises(CacheError, match="belongs to archive"):
        Archive.open((tmp_path / "other").as_uri(), cache_dir=tmp_path / "c")


@pytest.mark.parametrize("run_id", ["", "a" * 129, "../etc", "a/b", "with space", "..", ".", "é"])
def test_invalid_run_ids(backend: Backend, run_id: str) -> None:
    archive = backend.open()
    with pytest.raises(InvalidInputError, match="invalid run_id"):
        archive.start_run(agent="x", run_id=run_id)
    with pytest.raises(InvalidInputError):
        archive.restore(run_id)


def test_wrong_types_and_bad_state_write_nothing(backend: Backend) -> None:
    archive = backend.open()
    run = archive.start_run(agent="x")
    run.checkpoint("ok", {"a": 1})
    bad_calls = [
        lambda: run.checkpoint(123, {}),  # type: ignore[arg-type]
        lambda: run.checkpoint("", {}),
        lambda: run.event(None, {}),  # type: ignore[arg-type]
        lambda: run.event("k", {}, lane=""),
        lambda: run.checkpoint("c", {"blob": b"\x00"}),
        lambda: run.checkpoint("c", {"s": {1}}),
        lambda: run.checkpoint("c", {"x": float("nan")}),
        lambda: run.checkpoint("c", {1: "int key"}),
        lambda: run.checkpoint("c", {}, metadata={"when": object()}),
        lambda: run.event("k", {"deep": [{"deeper": {"b": bytearray(2)}}]}),
        lambda: archive.start_run(agent=7),  # type: ignore[arg-type]
        lambda: archive.start_run(agent="x", metadata={"m": {1, 2}}),
    ]
    for call in bad_calls:
        with pytest.raises(InvalidInputError):
            call()
    with pytest.raises(StateNotSerializableError, match=r'data\["deep"\]\[0\]\["deeper"\]\["b"\]'):
        run.event("k", {"deep": [{"deeper": {"b": bytearray(2)}}]})
    assert run.last_seq == 1
    assert [r.seq for r in archive.cache.records(run.run_id)] == [1]
    run.complete()
    assert [r.seq for r in archive.restore(run.run_id).records] == [1]


def test_closed_archive_refuses_work(backend: Backend) -> None:
    archive = backend.open()
    run = archive.start_run(agent="x")
    archive.close()
    with pytest.raises(RunStateError, match="archive is closed"):
        run.checkpoint("c", {})
    with pytest.raises(RunStateError, match="archive is closed"):
        archive.start_run(agent="x")


def test_corrupt_and_missing_segments_are_named(tmp_path: Path) -> None:
    root = tmp_path / "bucket"
    with Archive.open(root.as_uri(), cache_dir=tmp_path / "c", flush_records=3) as archive:
        with archive.start_run(agent="x") as run:
            for i in range(9):
                run.event("e", i)
                if i % 3 == 2:  # 3 segments, however the background flusher keeps up
                    run.flush()
        index = archive.index(run.run_id)
    reader = Reader.open(root.as_uri())
    first, second = (root / s.key for s in index.segments[:2])
    body = bytearray(first.read_bytes())
    body[len(body) // 2] ^= 0xFF
    first.write_bytes(bytes(body))
    with pytest.raises(CorruptObjectError, match=index.segments[0].key):
        reader.restore(run.run_id)
    second.unlink()
    first.unlink()
    with pytest.raises(CorruptObjectError, match="missing") as info:
        reader.restore(run.run_id)
    assert info.value.key in (index.segments[0].key, index.segments[1].key)


def test_index_from_a_newer_format_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "bucket"
    with Archive.open(root.as_uri(), cache_dir=tmp_path / "c") as archive:
        run = archive.start_run(agent="x")
        run.complete()
    path = root / index_key(run.run_id)
    path.write_bytes(path.read_bytes().replace(b'"format":2', b'"format":5', 1))
    with pytest.raises(FormatVersionError, match=r"format version 5.*Upgrade runarchive"):
        Reader.open(root.as_uri()).restore(run.run_id)


@pytest.mark.parametrize("backend", ["moto", "seaweedfs"], indirect=True)
def test_large_segments_go_up_as_multipart(backend: Backend) -> None:
    archive = backend.open(multipart_threshold=5 * 1024 * 1024, multipart_part_size=5 * 1024 * 1024)
    blob = base64.b64encode(os.urandom(6 * 1024 * 1024)).decode()  # incompressible, 8 MiB
    run = archive.start_run(agent="big")
    run.checkpoint("huge", {"blob": blob})
    run.complete()
    index = archive.index(run.run_id)
    assert index.segments[0].stored_bytes > 5 * 1024 * 1024
    meta = archive.store.head(index.segments[0].key)
    assert meta is not None
    assert meta.etag.strip('"').endswith("-2")  # the ETag of a 2-part multipart upload
    restored = backend.open().restore(run.run_id)
    assert restored.checkpoints[0].state["blob"] == blob


@pytest.mark.real_server
@pytest.mark.parametrize("backend", ["seaweedfs"], indirect=True)
def test_a_100_mb_state_goes_up_as_multipart_and_comes_back(backend: Backend) -> None:
    archive = backend.open()  # defaults: 64 MiB multipart threshold, 16 MiB parts
    blob = base64.b64encode(os.urandom(75 * 1024 * 1024)).decode()  # 100 MiB, incompressible
    run = archive.start_run(agent="huge")
    run.checkpoint("huge", {"blob": blob})
    run.complete()
    (seg,) = archive.index(run.run_id).segments
    assert seg.raw_bytes > 100 * 1024 * 1024
    assert seg.stored_bytes > 64 * 1024 * 1024
    meta = archive.store.head(seg.key)
    assert meta is not None
    assert meta.etag.strip('"').endswith("-5")  # 5 parts of 16 MiB
    restored = backend.open().restore(run.run_id)
    assert restored.checkpoints[0].state["blob"] == blob


def test_a_record_over_max_record_bytes_is_refused_and_nothing_is_written(
    tmp_path: Path,
) -> None:
    with Archive.open(
        (tmp_path / "b").as_uri(), cache_dir=tmp_path / "c", max_record_bytes=1024 * 1024
    ) as archive:
        run = archive.start_run(agent="x")
        run.checkpoint("small", {"x": 1})
        with pytest.raises(RecordTooLargeError, match="max_record_bytes") as info:
            run.checkpoint("big", {"blob": "x" * 2 * 1024 * 1024})
        assert isinstance(info.value, InvalidInputError)
        with pytest.raises(RecordTooLargeError):
            run.event("big", "y" * 2 * 1024 * 1024)
        assert run.last_seq == 1
        assert run.checkpoint("next", {}).seq == 2
