"""OpenTelemetry (runarchive[otel]): spans and metrics with the SDK's in-memory exporter
and reader, on explicit providers (no global provider is set, nothing leaks between
tests); and without the package: nothing imported, every hook a no-op."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from support.backends import s3_settings
from support.faultproxy import FaultProxy
from support.servers import S3Server

from runarchive import Archive, PreconditionFailedError, telemetry
from runarchive.engine.manifest.core import Manifest
from runarchive.format.codec import index_key
from runarchive.store import FileStore, IfMatch, S3Settings, S3Store


@dataclass
class Otel:
    spans: InMemorySpanExporter
    reader: InMemoryMetricReader

    def finished(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans.get_finished_spans() if s.name == name]

    def points(self, name: str) -> dict[tuple[tuple[str, Any], ...], Any]:
        """The metric's data points: sorted attribute items -> value."""
        data = self.reader.get_metrics_data()
        out: dict[tuple[tuple[str, Any], ...], Any] = {}
        if data is None:
            return out
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name == name:
                        for p in metric.data.data_points:
                            out[tuple(sorted((p.attributes or {}).items()))] = p.value
        return out

    def value(self, name: str, **attrs: Any) -> Any:
        return self.points(name).get(tuple(sorted(attrs.items())), 0)


@pytest.fixture
def otel() -> Iterator[Otel]:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    telemetry.configure(tracer_provider, meter_provider)
    try:
        yield Otel(spans, reader)
    finally:
        telemetry.reset()
        meter_provider.shutdown()
        tracer_provider.shutdown()


def test_a_workload_reports_every_span_and_metric(otel: Otel, tmp_path: Path) -> None:
    bucket = tmp_path / "bucket"
    archive = Archive.open(bucket.as_uri(), cache_dir=tmp_path / "c", flush_age=3600)
    run = archive.start_run(agent="t")
    for i in range(5):
        run.checkpoint("c", {"i": i})
    for i in range(3):
        run.event("e", {"i": i})
    run.flush()  # seqs 1-8
    run.checkpoint("c", {"i": 5})
    run.complete()  # seq 9 and the status
    index = archive.index(run.run_id)
    assert [(s.first_seq, s.last_seq) for s in index.segments] == [(1, 8), (9, 9)]

    flushes = [dict(s.attributes or {}) for s in otel.finished("runarchive.flush")]
    assert flushes == [
        {
            "run_id": run.run_id,
            "first_seq": seg.first_seq,
            "last_seq": seg.last_seq,
            "records": seg.records,
            "stored_bytes": seg.stored_bytes,
        }
        for seg in index.segments
    ]
    assert otel.value("runarchive.appends", type="checkpoint") == 6
    assert otel.value("runarchive.appends", type="event") == 3
    assert otel.value("runarchive.flushed_bytes") == index.stored_bytes

    manifest_spans = otel.finished("runarchive.manifest.update")
    assert {(dict(s.attributes or {})["kind"]) for s in manifest_spans} == {"live", "done"}
    for s in manifest_spans:
        assert dict(s.attributes or {})["attempts"] >= 1

    restored = archive.restore(run.run_id)
    (restore,) = otel.finished("runarchive.restore")
    assert dict(restore.attributes or {}) == {
        "run_id": run.run_id,
        "segments": 2,
        "records": len(restored.records),
    }
    assert len(restored.records) == 9

    # Another host patches the run's entry, also where this process keeps it after
    # the finish (its live object's `ended`): this archive's next write of that
    # object (from the ETag it wrote last) meets a 412, re-reads and succeeds.
    Manifest(FileStore(bucket)).patch_done(run.run_id, {"records": 10})
    other = archive.start_run(agent="t2")
    other.event("e", {"i": 0})
    other.flush()  # listing it is a write of this process's live object
    assert otel.value("runarchive.conflicts", object="manifest") == 1
    assert otel.value("runarchive.retries", source="manifest") == 1
    patch = otel.finished("runarchive.manifest.update")[-1]
    assert dict(patch.attributes or {}) == {"kind": "live", "attempts": 2}

    (result,) = archive.compact(run.run_id)
    assert result.done
    (compact,) = otel.finished("runarchive.compact")
    assert dict(compact.attributes or {}) == {
        "run_id": run.run_id,
        "segments_before": 2,
        "segments_after": 1,
    }

    # A forced 412 on the run index counts a conflict on the index.
    with pytest.raises(PreconditionFailedError):
        archive.store.put(index_key(run.run_id), b"{}", mode=IfMatch('"' + "0" * 32 + '"'))
    assert otel.value("runarchive.conflicts", object="index") == 1

    # Requests by kind are exactly what the archive's CountingStore counted.
    requests = {dict(k)["kind"]: v for k, v in otel.points("runarchive.requests").items()}
    assert requests == dict(archive.store.counts)
    assert requests["put"] >= 6
    assert requests["get"] >= 3
    archive.close()


def test_backlog_gauges_read_the_flusher_and_the_cache(otel: Otel, tmp_path: Path) -> None:
    archive = Archive.open((tmp_path / "b").as_uri(), cache_dir=tmp_path / "c", flush_age=3600)
    run = archive.start_run(agent="t")
    for i in range(3):
        run.checkpoint("c", {"i": i, "pad": "x" * 100})
    assert otel.value("runarchive.backlog.records") == 3
    assert otel.value("runarchive.backlog.bytes") == archive.appended_bytes
    assert otel.value("runarchive.backlog.bytes") == archive.cache.unflushed_bytes()
    assert 0 < otel.value("runarchive.backlog.age") < 60
    run.flush()
    assert otel.value("runarchive.backlog.records") == 0
    assert otel.value("runarchive.backlog.bytes") == 0
    archive.close()
    assert otel.points("runarchive.backlog.records") == {}  # a closed archive reports nothing


def test_an_archive_with_telemetry_off_reports_no_requests_nor_backlog(
    otel: Otel, tmp_path: Path
) -> None:
    archive = Archive.open(
        (tmp_path / "b").as_uri(), cache_dir=tmp_path / "c", flush_age=3600, telemetry=False
    )
    run = archive.start_run(agent="t")
    run.checkpoint("c", {"i": 1})
    assert archive.store.observer is None
    assert otel.points("runarchive.requests") == {}
    assert otel.points("runarchive.backlog.records") == {}
    archive.close()


@pytest.mark.real_server
def test_botocore_retries_and_cut_bodies_are_counted(
    otel: Otel, seaweed: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweed.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweed.secret_key)
    with FaultProxy(seaweed.endpoint_url, seed=3) as proxy:
        archive = Archive.open(
            seaweed.url(seaweed.make_bucket(), "agents"),
            **{**s3_settings(seaweed), "endpoint_url": proxy.endpoint_url},
            cache_dir=tmp_path / "c",
            flush_age=3600,
        )
        run = archive.start_run(agent="t")
        run.checkpoint("c", {"i": 1})
        # One 503 on the index PUT: botocore retries it once, and the flush succeeds.
        proxy.set_rate(1.0, ("503",), only=lambda m, p: m == "PUT" and "index.json" in p, budget=1)
        run.flush()
        assert proxy.counts["503"] == 1
        assert otel.value("runarchive.retries", source="botocore") == 1
        # One segment GET whose body is cut: S3Store reads it again.
        proxy.set_rate(1.0, ("truncated",), only=lambda m, p: m == "GET" and "/seg/" in p, budget=1)
        assert len(archive.restore(run.run_id).records) == 1
        assert proxy.counts["truncated"] == 1
        assert otel.value("runarchive.retries", source="body") == 1
        archive.close()


def test_s3_store_reports_retries_of_client_errors_too() -> None:
    """botocore's RetryAttempts is read from answers and from ClientError answers."""
    import botocore.exceptions  # noqa: PLC0415

    seen: list[tuple[int, str]] = []

    class Observer:
        def request(self, op: str) -> None: ...
        def retries(self, count: int, source: str) -> None:
            seen.append((count, source))

        def conflict(self, key: str) -> None: ...

    class Client:
        def get_object(self, **_: Any) -> dict[str, Any]:
            meta = {"RetryAttempts": 2, "HTTPStatusCode": 200}
            return {"Body": io.BytesIO(b"x"), "ETag": '"e"', "ResponseMetadata": meta}

        def put_object(self, **_: Any) -> dict[str, Any]:
            raise botocore.exceptions.ClientError(
                {
                    "Error": {"Code": "PreconditionFailed"},
                    "ResponseMetadata": {"HTTPStatusCode": 412, "RetryAttempts": 3},
                },
                "PutObject",
            )

    store = S3Store(S3Settings(bucket="b"), client=Client())  # type: ignore[arg-type]
    store.set_observer(Observer())
    assert store.get("k").body == b"x"
    with pytest.raises(PreconditionFailedError):
        store.put("k", b"y", mode="create")
    assert seen == [(2, "botocore"), (3, "botocore")]


def test_without_the_hooks_the_functions_run_undecorated_and_counters_are_shared() -> None:
    assert telemetry.hooks is telemetry.NOOP or telemetry.hooks.active
    noop = telemetry.NOOP
    assert noop.flushed_bytes is noop.requests is telemetry.NOOP_COUNTER
    with noop.span("x", {"a": 1}) as span:
        span.set_attribute("b", 2)
    assert noop.span("y") is telemetry.NOOP_SPAN


_HIDDEN = """
import json, sys, tempfile
sys.modules["opentelemetry"] = None  # as if runarchive[otel] were not installed
from runarchive import Archive, telemetry
d = tempfile.mkdtemp()
with Archive.open("file://" + d + "/b", cache_dir=d + "/c") as archive:
    with archive.start_run(agent="t") as run:
        run.checkpoint("c", {"i": 1})
        run.event("e", {"i": 2})
    archive.restore(run.run_id)
    archive.compact(run.run_id)
print(json.dumps({
    "modules": sorted(m for m in sys.modules if m.startswith("opentelemetry")),
    "available": telemetry.available(),
    "noop": telemetry.hooks is telemetry.NOOP,
    "append_hook": telemetry.count_append is telemetry._noop_count_append,
    "observer": archive.store.observer is None,
}))
"""

_OFF = """
import json, sys, tempfile
from runarchive import Archive, telemetry
after_import = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
d = tempfile.mkdtemp()
with Archive.open("file://" + d + "/b", cache_dir=d + "/c") as archive:
    with archive.start_run(agent="t") as run:
        run.checkpoint("c", {"i": 1})
    archive.restore(run.run_id)
print(json.dumps({
    "after_import": after_import,
    "modules": sorted(m for m in sys.modules if m.startswith("opentelemetry")),
    "noop": telemetry.hooks is telemetry.NOOP,
}))
"""


def _child(script: str, **env: str) -> dict[str, Any]:
    import os  # noqa: PLC0415

    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **env},
    )
    assert proc.returncode == 0, proc.stderr
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def test_without_opentelemetry_nothing_is_imported_and_every_hook_is_a_noop() -> None:
    got = _child(_HIDDEN)
    assert got == {
        "modules": ["opentelemetry"],  # only the blocker this script put there
        "available": False,
        "noop": True,
        "append_hook": True,
        "observer": True,
    }


@pytest.mark.slow
def test_importing_runarchive_or_turning_telemetry_off_imports_no_opentelemetry() -> None:
    got = _child(_OFF, RUNARCHIVE_TELEMETRY="false")
    assert got == {"after_import": [], "modules": [], "noop": True}
