"""Core benchmark of runarchive against its floor and a per-checkpoint S3 checkpointer.

Run with ``make bench`` or ``.venv/bin/python bench/bench_core.py [--quick] [--json [PATH]]
[--encryption-only | --no-encryption]``.

It starts its own SeaweedFS (``tests/support/servers.py``) in a temporary directory, measures
sections 1-3 side by side in one process, stops the server, runs section 4 on file://
archives, and prints a table and a targets section. Nothing is written into the
repository.

1. Append latency of ``run.checkpoint(name, state)`` at the defaults (durability
   "local", archive on the SeaweedFS bucket, background flusher live) against
   the floor (``json.dumps`` + one SQLite INSERT/commit in WAL mode with
   ``synchronous=FULL`` on the same disk), a stricter floor with ``orjson.dumps`` (the
   serialiser runarchive uses) and one boto3 ``put_object`` per checkpoint. All run on
   the same "growing transcript" states, interleaved step by step with the order
   rotated, warm-up steps excluded; the background flusher runs throughout.
2. S3 requests and stored bytes for 1,000 checkpoints + 100 events of the same workload.
3. Time to restore a 10,000-record run from the bucket alone (fresh Reader, no cache)
   against per-record GETs and a one-object transfer floor.
4. Encryption off vs on (``encryption="local"``), two file:// archives, same workload,
   interleaved: append latency at the defaults and of a 10,000-checkpoint backlog,
   ``archive.flush()`` of that backlog (records/s, MB/s of raw JSON), stored bytes,
   restore on a fresh Reader, and the in-memory encode/open of the same segments.
"""

from __future__ import annotations

import argparse
import base64
import gc
import json
import os
import platform
import random
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import zstandard

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from common import aws_env, kib, mib, pct, warm_bucket  # noqa: E402
from support.servers import S3Server, SeaweedFS  # noqa: E402

from runarchive import Archive, ArchiveConfig, Reader  # noqa: E402
from runarchive.crypto.sealing import seal_segment, segment_raw  # noqa: E402
from runarchive.format.codec import (  # noqa: E402
    decode_segment,
    encode_segment,
    index_key,
    join_lines,
    split_header,
)
from runarchive.format.jsonvalue import check_json_value  # noqa: E402
from runarchive.format.model import SEALED_FORMAT, RunIndex, SegmentRef  # noqa: E402

NAMES = ("plan", "act", "observe", "reflect")
ROLES = ("user", "assistant", "tool")
TARGET_FLOOR_RATIO = 2.0
TARGET_REQUESTS_PER_1000 = 10
TARGET_STORED_PCT = 2.0

_WORDS_TEXT = (
    "agent plan search result tool call observe reflect answer question context memory "
    "token model prompt reply user assistant function argument value error retry timeout "
    "file path read write list update delete create index segment bucket object cache "
    "flush restore checkpoint event lane seq state message history summary step goal "
    "task subtask budget cost latency throughput request response header body json "
    "schema field record table query filter sort limit offset page cursor batch stream "
    "chunk buffer queue worker thread process lock mutex signal clock time date zone "
    "city weather forecast price stock market report chart figure number total average "
    "median percentile ratio target metric benchmark baseline floor ceiling estimate "
    "the a an of to in on for with by from at as is are was were be been being have has "
    "had do does did will would should could may might must can not no yes ok done next "
    "first last before after then now later soon again still also only just very more "
    "less most least many few some any each every all both either neither other same "
    "different new old good bad high low fast slow big small long short open close start "
    "stop run wait check verify confirm compare measure count parse encode decode compress "
    "upload download fetch send receive store load save commit rollback merge split join"
)
WORDS = tuple(_WORDS_TEXT.split())


# --------------------------------------------------------------------------
# workload
# --------------------------------------------------------------------------


class Transcript:
    """A growing agent transcript: one message of 150-400 chars of varied words per step."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.messages: list[dict[str, Any]] = []

    def _text(self) -> str:
        target = self.rng.randint(150, 400)
        words: list[str] = []
        size = 0
        while size < target:
            word = self.rng.choice(WORDS)
            if self.rng.random() < 0.08:
                word = f"{word}-{self.rng.randint(0, 99999)}"  # ids, numbers: less repetitive
            words.append(word)
            size += len(word) + 1
        text = " ".join(words)[:target]
        return text[0].upper() + text[1:] + "."

    def step(self, i: int) -> tuple[str, dict[str, Any]]:
        """Append a message and return (checkpoint name, state holding the whole history)."""
        role = ROLES[i % len(ROLES)]
        msg: dict[str, Any] = {"role": role, "content": self._text()}
        if role == "tool":
            msg["tool_call_id"] = f"call_{i:06d}"
        self.messages.append(msg)
        state = {"step": i, "goal": "answer the user's question", "messages": self.messages}
        return NAMES[i % len(NAMES)], state

    def event_data(self, i: int) -> dict[str, Any]:
        """A small tool-call event."""
        return {
            "tool": self.rng.choice(("search", "read_file", "python", "http_get")),
            "args": {"q": " ".join(self.rng.choices(WORDS, k=5))},
            "ms": self.rng.randint(5, 2000),
            "step": i,
        }


def small_state(i: int, rng: random.Random) -> dict[str, Any]:
    """A small-ish checkpoint state (~0.5 KB) for the restore run."""
    return {
        "step": i,
        "plan": [" ".join(rng.choices(WORDS, k=6)) for _ in range(3)],
        "last_message": {"role": ROLES[i % 3], "content": " ".join(rng.choices(WORDS, k=40))},
        "scores": [round(rng.random(), 4) for _ in range(5)],
    }


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


@dataclass
class Stat:
    """Summary of latency samples, in milliseconds."""

    n: int
    p50: float
    p90: float
    p99: float
    mean: float
    max: float
    over_50ms: int

    @classmethod
    def of(cls, seconds: list[float]) -> Stat:
        ms = [s * 1e3 for s in seconds]
        return cls(
            len(ms),
            pct(ms, 50),
            pct(ms, 90),
            pct(ms, 99),
            statistics.fmean(ms),
            max(ms),
            sum(1 for m in ms if m > 50),
        )


def open_archive(server: S3Server, bucket: str, prefix: str, cache: Path, **extra: Any) -> Archive:
    return Archive.open(
        server.url(bucket, prefix),
        cache_dir=cache,
        endpoint_url=server.endpoint_url,
        addressing_style="path",
        **extra,
    )


# --------------------------------------------------------------------------
# 1. append latency
# --------------------------------------------------------------------------


@dataclass
class LatencyResult:
    warmup: int
    samples: int
    state_bytes_p50: float
    state_bytes_max: int
    runarchive: Stat
    floor: Stat
    floor_orjson: Stat
    put_object: Stat
    floor_ratio_p50: float
    floor_ratio_p99: float
    orjson_floor_ratio_p50: float
    put_ratio_p50: float
    put_ratio_p99: float
    breakdown: dict[str, Stat]
    flush_segments: int
    flush_index_writes: int
    flush_errors: int


def bench_latency(server: S3Server, tmp: Path, warmup: int, samples: int) -> LatencyResult:
    bucket = server.make_bucket("bench-lat")
    base_bucket = server.make_bucket("bench-put")
    warm_bucket(server, bucket)
    warm_bucket(server, base_bucket)
    client = server.client()

    archive = open_archive(server, bucket, "bench", tmp / "lat-cache")
    run = archive.start_run(agent="bench-latency")

    floor_dir = tmp / "floor"
    floor_dir.mkdir()

    def floor_db(name: str) -> sqlite3.Connection:
        conn = sqlite3.connect(floor_dir / name, isolation_level=None)  # autocommit
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")  # as runarchive's cache
        conn.execute("CREATE TABLE records (id INTEGER PRIMARY KEY, body BLOB NOT NULL)")
        return conn

    db = floor_db("floor.sqlite3")
    db2 = floor_db("floor-orjson.sqlite3")
    put_prefix = f"per-checkpoint/{uuid.uuid4().hex[:8]}"

    def do_runarchive(i: int, name: str, state: dict[str, Any]) -> None:
        run.checkpoint(name, state)

    def do_floor(i: int, name: str, state: dict[str, Any]) -> None:
        db.execute("INSERT INTO records (body) VALUES (?)", (json.dumps(state),))

    def do_floor_orjson(i: int, name: str, state: dict[str, Any]) -> None:
        db2.execute("INSERT INTO records (body) VALUES (?)", (orjson.dumps(state),))

    def do_put(i: int, name: str, state: dict[str, Any]) -> None:
        client.put_object(
            Bucket=base_bucket, Key=f"{put_prefix}/{i:06d}-{name}.json", Body=json.dumps(state)
        )

    methods: list[Callable[[int, str, dict[str, Any]], None]] = [
        do_runarchive,
        do_floor,
        do_floor_orjson,
        do_put,
    ]
    times: list[list[float]] = [[] for _ in methods]
    sizes: list[int] = []
    transcript = Transcript(seed=1)
    perf = time.perf_counter
    for i in range(warmup + samples):
        name, state = transcript.step(i)
        for k in range(len(methods)):  # rotate the order so no method always runs first
            m = (i + k) % len(methods)
            t0 = perf()
            methods[m](i, name, state)
            dt = perf() - t0
            if i >= warmup:
                times[m].append(dt)
        if i >= warmup:
            sizes.append(len(json.dumps(state)))

    run.complete()
    stats = archive.engine.stats
    errors = len(archive.flush_errors)
    archive.close()
    db.close()
    db2.close()

    # CPU-only breakdown on the same states (every 10th sampled step), not interleaved.
    breakdown_t: dict[str, list[float]] = {"json.dumps": [], "orjson.dumps": [], "check_json": []}
    for i in range(warmup, warmup + samples, 10):
        state = {"step": i, "goal": "x", "messages": transcript.messages[: i + 1]}
        for label, fn in (
            ("json.dumps", json.dumps),
            ("orjson.dumps", orjson.dumps),
            ("check_json", check_json_value),
        ):
            t0 = perf()
            fn(state)
            breakdown_t[label].append(perf() - t0)

    ra, fl, fo, po = (Stat.of(t) for t in times)
    return LatencyResult(
        warmup=warmup,
        samples=samples,
        state_bytes_p50=pct([float(s) for s in sizes], 50),
        state_bytes_max=max(sizes),
        runarchive=ra,
        floor=fl,
        floor_orjson=fo,
        put_object=po,
        floor_ratio_p50=ra.p50 / fl.p50,
        floor_ratio_p99=ra.p99 / fl.p99,
        orjson_floor_ratio_p50=ra.p50 / fo.p50,
        put_ratio_p50=ra.p50 / po.p50,
        put_ratio_p99=ra.p99 / po.p99,
        breakdown={k: Stat.of(v) for k, v in breakdown_t.items()},
        flush_segments=stats.segments,
        flush_index_writes=stats.index_writes,
        flush_errors=errors,
    )


# --------------------------------------------------------------------------
# 2. requests and bytes per 1,000 checkpoints
# --------------------------------------------------------------------------


@dataclass
class RequestsResult:
    checkpoints: int
    events: int
    seconds: float
    requests: int
    manifest_requests: int
    counts: dict[str, int]
    uploaded_bytes: int
    requests_per_1000: float
    segments: int
    archived_checkpoints: int
    dropped_checkpoints: int
    stored_bytes: int
    segment_raw_bytes: int
    index_bytes: int
    raw_json_bytes: int
    appended_bytes: int
    stored_pct_of_raw: float
    stored_pct_of_appended: float
    baseline_puts: int
    baseline_bytes: int
    keep_all: dict[str, float] = field(default_factory=dict)


def same_run_keep_all(
    server: S3Server, bucket: str, tmp: Path, checkpoints: int, events: int
) -> dict[str, float]:
    """For context: the same workload with policy keep_all (every checkpoint archived)."""
    archive = open_archive(
        server, bucket, "bench-keep-all", tmp / "req-all-cache", policy={"keep_all": True}
    )
    archive.store.reset()
    every = max(1, checkpoints // events) if events else 0
    transcript = Transcript(seed=2)
    t0 = time.perf_counter()
    run = archive.start_run(agent="bench-requests-keep-all")
    for i in range(checkpoints):
        name, state = transcript.step(i)
        run.checkpoint(name, state)
        if every and (i + 1) % every == 0:
            run.event("tool_call", transcript.event_data(i))
    run.complete()
    seconds = time.perf_counter() - t0
    total = sum(1 for _, key in archive.store.recent if key.startswith("runs/"))
    index = archive.index(run.run_id)
    archive.close()
    return {
        "seconds": seconds,
        "requests": total,
        "segments": len(index.segments),
        "checkpoints": sum(s.checkpoints for s in index.segments),
        "stored_bytes": index.stored_bytes,
        "raw_bytes": index.raw_bytes,
    }


def bench_requests(
    server: S3Server, tmp: Path, checkpoints: int, events: int, with_keep_all: bool
) -> RequestsResult:
    bucket = server.make_bucket("bench-req")
    warm_bucket(server, bucket)
    archive = open_archive(server, bucket, "bench", tmp / "req-cache")
    archive.store.reset()  # excludes the open-time conditional-write probe (5 requests)
    every = max(1, checkpoints // events) if events else 0
    transcript = Transcript(seed=2)
    raw = 0
    measuring = 0.0  # time spent computing the raw sizes, taken out of the run's time
    perf = time.perf_counter
    t0 = perf()
    run = archive.start_run(agent="bench-requests")
    sent_events = 0
    for i in range(checkpoints):
        name, state = transcript.step(i)
        t1 = perf()
        raw += len(json.dumps(state))
        measuring += perf() - t1
        run.checkpoint(name, state)
        if every and (i + 1) % every == 0 and sent_events < events:
            data = transcript.event_data(i)
            raw += len(json.dumps(data))
            run.event("tool_call", data)
            sent_events += 1
    run.complete()
    seconds = perf() - t0 - measuring
    counts = dict(archive.store.counts)
    # The run's data (segments + index) scales with checkpoints; the manifest costs a
    # fixed few requests per run (listed once, moved to "done" once), reported apart.
    calls = list(archive.store.recent)
    total = sum(1 for _, key in calls if key.startswith("runs/"))
    manifest_requests = sum(1 for _, key in calls if key.startswith("manifest/"))
    uploaded = archive.store.bytes_out
    appended = archive.appended_bytes
    index = archive.index(run.run_id)  # one more GET, after the counts were taken
    index_bytes = len(index.model_dump_json())
    archive.close()
    stored = index.stored_bytes
    keep_all = same_run_keep_all(server, bucket, tmp, checkpoints, events) if with_keep_all else {}
    return RequestsResult(
        checkpoints=checkpoints,
        events=sent_events,
        seconds=seconds,
        requests=total,
        manifest_requests=manifest_requests,
        counts=counts,
        uploaded_bytes=uploaded,
        requests_per_1000=total * 1000 / checkpoints,
        segments=len(index.segments),
        archived_checkpoints=sum(s.checkpoints for s in index.segments),
        dropped_checkpoints=sum(s.dropped for s in index.segments),
        stored_bytes=stored,
        segment_raw_bytes=index.raw_bytes,
        index_bytes=index_bytes,
        raw_json_bytes=raw,
        appended_bytes=appended,
        stored_pct_of_raw=100.0 * stored / raw,
        stored_pct_of_appended=100.0 * stored / appended,
        baseline_puts=checkpoints,
        baseline_bytes=raw,
        keep_all=keep_all,
    )


# --------------------------------------------------------------------------
# 3. restore
# --------------------------------------------------------------------------


@dataclass
class RestoreResult:
    records: int
    checkpoints: int
    events: int
    write_seconds: float
    segments: int
    stored_bytes: int
    raw_bytes: int
    restore_seconds: list[float]
    restore_median: float
    records_per_s: float
    restore_requests: int
    verified: bool
    record_bytes_median: int
    get_loop_n: int
    get_loop_seconds: float
    get_loop_per_get_ms: float
    get_loop_extrapolated_s: float
    get_parallel_seconds: float
    get_parallel_extrapolated_s: float
    one_object_get_s: float
    one_object_decode_s: float
    floor_total_s: float
    restore_only_median: float
    extra: dict[str, float] = field(default_factory=dict)


def bench_restore(
    server: S3Server, tmp: Path, records: int, get_loop: int, repeats: int
) -> RestoreResult:
    bucket = server.make_bucket("bench-rst")
    warm_bucket(server, bucket)
    url = server.url(bucket, "bench")
    archive = open_archive(server, bucket, "bench", tmp / "rst-cache", policy={"keep_all": True})
    rng = random.Random(3)
    line_sizes: list[int] = []
    n_events = records // 10
    t0 = time.perf_counter()
    run = archive.start_run(agent="bench-restore")
    for i in range(records):
        if i % 10 == 9:
            run.event("tool_call", {"tool": "search", "q": " ".join(rng.choices(WORDS, k=8))})
        else:
            state = small_state(i, rng)
            line_sizes.append(len(json.dumps(state)))
            run.checkpoint(NAMES[i % 4], state)
    run.complete()
    write_seconds = time.perf_counter() - t0
    run_id = run.run_id
    archive.close()

    # Restore on a fresh host: a new Reader, no cache. Each repeat gets a new Reader
    # (new boto3 client and connections); the median is reported.
    times: list[float] = []
    open_times: list[float] = []
    verified = True
    requests = 0
    index = None
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        reader = Reader.open(url, endpoint_url=server.endpoint_url, addressing_style="path")
        open_times.append(time.perf_counter() - t0)
        restored = reader.restore(run_id, progress=False)
        times.append(time.perf_counter() - t0)
        requests = reader.store.total
        index = restored.index
        ok = (
            len(restored.records) == records
            and len(restored.checkpoints) == records - n_events
            and len(restored.events) == n_events
            and [r.seq for r in restored.records] == list(range(1, records + 1))
        )
        verified = verified and ok
        reader.close()
        del restored
    assert index is not None
    median = statistics.median(times)

    # Baseline A: a per-record checkpointer restores with one GET per record. Time a
    # loop of sequential GETs of one object of the median record size, then with the
    # same parallelism runarchive's restore uses (8 workers).
    client = server.client()
    rec_size = int(statistics.median(line_sizes))
    client.put_object(Bucket=bucket, Key="baseline/one-record.json", Body=b"x" * rec_size)
    client.get_object(Bucket=bucket, Key="baseline/one-record.json")["Body"].read()  # warm
    t0 = time.perf_counter()
    for _ in range(get_loop):
        body = client.get_object(Bucket=bucket, Key="baseline/one-record.json")["Body"].read()
        orjson.loads(b'"' + body + b'"')  # parse cost of a record, roughly
    loop_s = time.perf_counter() - t0

    def one_get(_: int) -> int:
        return len(client.get_object(Bucket=bucket, Key="baseline/one-record.json")["Body"].read())

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(one_get, range(get_loop)))
    par_s = time.perf_counter() - t0

    # Baseline B (floor): the same records as ONE zstd object: one GET, decompress,
    # orjson.loads per line (no checksum, no model validation).
    store = Reader.open(url, endpoint_url=server.endpoint_url, addressing_style="path").store
    bodies = [(s, store.get(s.key).body) for s in index.segments]
    store.close()
    # The same records as one JSON Lines object (segment header lines left out).
    raw = b"".join(
        split_header(zstandard.ZstdDecompressor().decompress(body), ref.key, ref.format)[1]
        for ref, body in bodies
    )
    # runarchive's own CPU cost for the same bytes: decompress + SHA-256 + record models.
    gc.collect()
    t0 = time.perf_counter()
    for ref, body in bodies:
        decode_segment(body, ref.key, ref.sha256, ref.format)
    decode_s = time.perf_counter() - t0
    one = zstandard.ZstdCompressor(level=3).compress(raw)
    client.put_object(Bucket=bucket, Key="baseline/all-records.jsonl.zst", Body=one)
    gets: list[float] = []
    decodes: list[float] = []
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        body = client.get_object(Bucket=bucket, Key="baseline/all-records.jsonl.zst")["Body"].read()
        t1 = time.perf_counter()
        parsed = [
            orjson.loads(line)
            for line in zstandard.ZstdDecompressor().decompress(body).splitlines()
        ]
        t2 = time.perf_counter()
        assert len(parsed) == records
        gets.append(t1 - t0)
        decodes.append(t2 - t1)
    get_s = statistics.median(gets)
    dec_s = statistics.median(decodes)
    return RestoreResult(
        records=records,
        checkpoints=records - n_events,
        events=n_events,
        write_seconds=write_seconds,
        segments=len(index.segments),
        stored_bytes=index.stored_bytes,
        raw_bytes=index.raw_bytes,
        restore_seconds=times,
        restore_median=median,
        records_per_s=records / median,
        restore_requests=requests,
        verified=verified,
        record_bytes_median=rec_size,
        get_loop_n=get_loop,
        get_loop_seconds=loop_s,
        get_loop_per_get_ms=loop_s / get_loop * 1e3,
        get_loop_extrapolated_s=loop_s / get_loop * records,
        get_parallel_seconds=par_s,
        get_parallel_extrapolated_s=par_s / get_loop * records,
        one_object_get_s=get_s,
        one_object_decode_s=dec_s,
        floor_total_s=statistics.median(g + d for g, d in zip(gets, decodes, strict=True)),
        restore_only_median=statistics.median(
            t - o for t, o in zip(times, open_times, strict=True)
        ),
        extra={"reader_open_s": statistics.median(open_times), "decode_segments_s": decode_s},
    )


# --------------------------------------------------------------------------
# 4. encryption on vs off
# --------------------------------------------------------------------------

ENC_WINDOW = 12  # messages of context the agent keeps in its state (section 4's backlog)
TARGET_ENC_APPEND_RATIO = 1.25  # appends encrypt nothing: only a regression that does fails it
# Flush only when asked: the backlog stays in the cache until archive.flush().
_NO_BACKGROUND_FLUSH: dict[str, Any] = {
    "flush_records": 10**9,
    "flush_bytes": 2**50,
    "flush_age": 1e9,
    "policy": {"keep_all": True},  # every record is sealed and stored, none dropped
}


@contextmanager
def no_runarchive_env() -> Iterator[None]:
    """Hide RUNARCHIVE_* variables (RUNARCHIVE_ENCRYPTION...): "off" must be off."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("RUNARCHIVE_")}
    for k in saved:
        del os.environ[k]
    try:
        yield
    finally:
        os.environ.update(saved)


@dataclass
class EncryptionResult:
    warmup: int
    samples: int
    state_bytes_p50: float
    append_off: Stat  # at the defaults, background flusher live
    append_on: Stat
    append_ratio_p50: float
    append_ratio_p99: float
    records: int  # backlog of one run
    rounds: int
    backlog_state_bytes_p50: float
    backlog_raw_json_bytes: int  # sum of len(json.dumps(state)) over one backlog
    backlog_append_off: Stat  # the backlogs' appends, no flush running
    backlog_append_on: Stat
    backlog_append_ratio_p50: float
    backlog_append_ratio_p99: float
    flush_off_s: list[float]
    flush_on_s: list[float]
    flush_off_median: float
    flush_on_median: float
    flush_off_records_per_s: float
    flush_on_records_per_s: float
    flush_off_mb_per_s: float
    flush_on_mb_per_s: float
    flush_ratio: float  # time, on / off
    flush_requests_off: list[dict[str, int]]  # each round's flush: requests by operation
    flush_requests_on: list[dict[str, int]]
    segments: int
    segment_raw_bytes: int
    stored_off: int  # segment bytes of one run (median over rounds)
    stored_on: int
    stored_ratio: float
    sealed_overhead_per_segment: float  # header line + "\n" + GCM tag, measured
    index_bytes_off: int
    index_bytes_on: int
    restore_off_s: list[float]
    restore_on_s: list[float]
    restore_off_median: float
    restore_on_median: float
    restore_ratio: float
    cpu_encode_off_s: float  # encode_segment vs seal_segment of the run's segments
    cpu_encode_on_s: float
    cpu_encode_ratio: float
    cpu_open_off_s: float  # segment_raw: checks + decrypt + decompress, no record parsing
    cpu_open_on_s: float
    cpu_open_ratio: float
    verified: bool
    phase_seconds: dict[str, float] = field(default_factory=dict)


def bench_encryption(
    tmp: Path,
    warmup: int,
    samples: int,
    records: int,
    rounds: int,
    restore_repeats: int,
    cpu_repeats: int,
) -> EncryptionResult:
    """The same workload into two file:// archives under ``tmp``, encryption off and
    on (``encryption="local"``, a random 256-bit key), interleaved step by step or
    round by round with the order alternated, so drift hits both alike."""
    perf = time.perf_counter
    phase: dict[str, float] = {}
    key = "k1=" + base64.b64encode(secrets.token_bytes(32)).decode()
    settings: list[dict[str, Any]] = [{}, {"encryption": "local", "encryption_keys": key}]
    urls = [(tmp / name).resolve().as_uri() for name in ("archive-off", "archive-on")]

    def open_pair(tag: str, extra: dict[str, Any]) -> list[Archive]:
        return [
            Archive.open(url, cache_dir=tmp / f"{tag}-cache-{v}", **extra, **settings[v])
            for v, url in enumerate(urls)
        ]

    # 4a. Append latency at the defaults (default policy, background flusher live) on
    # section 1's growing transcript; both archives get the same state each step.
    t_phase = perf()
    archives = open_pair("lat", {})
    runs = [a.start_run(agent="bench-enc-latency") for a in archives]
    times: list[list[float]] = [[], []]
    sizes: list[float] = []
    transcript = Transcript(seed=1)
    for i in range(warmup + samples):
        name, state = transcript.step(i)
        for k in range(2):  # order alternated step by step
            v = (i + k) % 2
            t0 = perf()
            runs[v].checkpoint(name, state)
            dt = perf() - t0
            if i >= warmup:
                times[v].append(dt)
        if i >= warmup and i % 10 == 0:
            sizes.append(float(len(json.dumps(state))))
    for r in runs:
        r.complete()
    for a in archives:
        a.close()
    append_off, append_on = Stat.of(times[0]), Stat.of(times[1])
    phase["append_defaults"] = perf() - t_phase

    # 4b. Per round, one run per archive gets a backlog of `records` checkpoints (an
    # agent keeping the last ENC_WINDOW messages) with no flush running; then
    # archive.flush() is timed. Order alternated.
    t_phase = perf()
    transcript = Transcript(seed=5)
    states: list[tuple[str, dict[str, Any]]] = []
    for i in range(records):
        name, state = transcript.step(i)
        states.append((name, {**state, "messages": state["messages"][-ENC_WINDOW:]}))
        if len(transcript.messages) > 4 * ENC_WINDOW:
            del transcript.messages[:-ENC_WINDOW]
    state_sizes = [len(json.dumps(s)) for _, s in states]
    raw_json = sum(state_sizes)

    archives = open_pair("flush", _NO_BACKGROUND_FLUSH)
    back_t: list[list[float]] = [[], []]
    flush_t: list[list[float]] = [[], []]
    restore_t: list[list[float]] = [[], []]
    stored: list[list[int]] = [[], []]
    index_bytes = [0, 0]
    flush_requests: list[list[dict[str, int]]] = [[], []]  # per flush, by operation
    segments = seg_raw = 0
    overheads: list[int] = []
    verified = True
    run_ids: list[tuple[str, str]] = []  # (off, on) per round
    for rnd in range(rounds):
        runs = [a.start_run(agent="bench-enc-flush") for a in archives]
        for i, (name, state) in enumerate(states):
            for k in range(2):
                v = (i + k) % 2
                t0 = perf()
                runs[v].checkpoint(name, state)
                back_t[v].append(perf() - t0)
        order = (0, 1) if rnd % 2 == 0 else (1, 0)
        for v in order:
            gc.collect()
            archives[v].store.reset()
            t0 = perf()
            archives[v].flush()  # the whole backlog: segments, index, manifest
            flush_t[v].append(perf() - t0)
            flush_requests[v].append(dict(archives[v].store.counts))
        for r in runs:
            r.complete()  # flushes too (a status-only index write), after the timing
        run_ids.append((runs[0].run_id, runs[1].run_id))
        for v in (0, 1):
            index = archives[v].index(runs[v].run_id)
            sealed = [s.format == SEALED_FORMAT and s.dek is not None for s in index.segments]
            verified = verified and (all(sealed) and bool(index.keys) if v else not any(sealed))
            verified = verified and sum(s.records for s in index.segments) == records
            stored[v].append(index.stored_bytes)
            index_bytes[v] = len(archives[v].store.get(index_key(runs[v].run_id)).body)
            segments, seg_raw = len(index.segments), index.raw_bytes
    phase["backlog_flush"] = perf() - t_phase

    # 4c. CPU only, no cache or disk: the first round's segments encoded again
    # (encode_segment vs seal_segment, what FlushEngine._encode calls) and opened
    # (segment_raw: SHA-256, AES-GCM, zstd; the record parsing both share is left out).
    t_phase = perf()
    level = archives[0].config.compression_level
    keyring = archives[1].keyring
    inputs: list[tuple[str, RunIndex, list[tuple[SegmentRef, bytes, list[bytes]]]]] = []
    for v in (0, 1):
        run_id = run_ids[0][v]
        index = archives[v].index(run_id, decrypt=False)
        segs = []
        for ref in index.segments:
            body = archives[v].store.get(ref.key).body
            lines = segment_raw(body, ref, run_id, keyring, index.keys).rstrip(b"\n").split(b"\n")
            segs.append((ref, body, lines))
            if v:  # what sealing adds to each object: its header line, "\n", the tag
                overheads.append(len(body.partition(b"\n")[0]) + 1 + 16)
        inputs.append((run_id, index, segs))
    data_key = inputs[1][1].keys[0]
    plain = keyring.plaintext(inputs[1][0], data_key)

    def encode(v: int) -> None:
        run_id, _, segs = inputs[v]
        for ref, _, lines in segs:
            if v:
                raw = join_lines(lines[1:], lines[0])
                seal_segment(run_id, ref.first_seq, ref.last_seq, raw, data_key, plain, level)
            else:
                encode_segment(lines[1:], level, lines[0])

    def open_raw(v: int) -> None:
        run_id, index, segs = inputs[v]
        for ref, body, _ in segs:
            segment_raw(body, ref, run_id, keyring, index.keys)

    cpu: dict[str, list[list[float]]] = {"encode": [[], []], "open": [[], []]}
    for rep in range(cpu_repeats):
        for label, fn in (("encode", encode), ("open", open_raw)):
            for v in (0, 1) if rep % 2 == 0 else (1, 0):
                gc.collect()
                t0 = perf()
                fn(v)
                cpu[label][v].append(perf() - t0)
    for a in archives:
        a.close()
    phase["cpu"] = perf() - t_phase

    # 4d. Restore each round's runs on a fresh Reader (open + restore), once the
    # archives are closed (their caches' WAL checkpoints would land in the timings).
    t_phase = perf()
    for rep in range(restore_repeats):
        for rnd, pair in enumerate(run_ids):
            for v in (0, 1) if (rep + rnd) % 2 == 0 else (1, 0):
                gc.collect()
                t0 = perf()
                reader = Reader.open(urls[v], **settings[v])
                restored = reader.restore(pair[v], progress=False)
                restore_t[v].append(perf() - t0)
                reader.close()
                verified = verified and (
                    [r.seq for r in restored.records] == list(range(1, records + 1))
                    and restored.checkpoints[-1].state == states[-1][1]
                )
                del restored
    phase["restore"] = perf() - t_phase

    def med(xs: list[float]) -> float:
        return statistics.median(xs)

    off_back, on_back = Stat.of(back_t[0]), Stat.of(back_t[1])
    f_off, f_on = med(flush_t[0]), med(flush_t[1])
    r_off, r_on = med(restore_t[0]), med(restore_t[1])
    s_off, s_on = int(statistics.median(stored[0])), int(statistics.median(stored[1]))
    e_off, e_on = med(cpu["encode"][0]), med(cpu["encode"][1])
    o_off, o_on = med(cpu["open"][0]), med(cpu["open"][1])
    return EncryptionResult(
        warmup=warmup,
        samples=samples,
        state_bytes_p50=pct(sizes, 50),
        append_off=append_off,
        append_on=append_on,
        append_ratio_p50=append_on.p50 / append_off.p50,
        append_ratio_p99=append_on.p99 / append_off.p99,
        records=records,
        rounds=rounds,
        backlog_state_bytes_p50=pct([float(s) for s in state_sizes], 50),
        backlog_raw_json_bytes=raw_json,
        backlog_append_off=off_back,
        backlog_append_on=on_back,
        backlog_append_ratio_p50=on_back.p50 / off_back.p50,
        backlog_append_ratio_p99=on_back.p99 / off_back.p99,
        flush_off_s=flush_t[0],
        flush_on_s=flush_t[1],
        flush_off_median=f_off,
        flush_on_median=f_on,
        flush_off_records_per_s=records / f_off,
        flush_on_records_per_s=records / f_on,
        flush_off_mb_per_s=raw_json / f_off / 1e6,
        flush_on_mb_per_s=raw_json / f_on / 1e6,
        flush_ratio=f_on / f_off,
        flush_requests_off=flush_requests[0],
        flush_requests_on=flush_requests[1],
        segments=segments,
        segment_raw_bytes=seg_raw,
        stored_off=s_off,
        stored_on=s_on,
        stored_ratio=s_on / s_off,
        sealed_overhead_per_segment=statistics.fmean(overheads),
        index_bytes_off=index_bytes[0],
        index_bytes_on=index_bytes[1],
        restore_off_s=restore_t[0],
        restore_on_s=restore_t[1],
        restore_off_median=r_off,
        restore_on_median=r_on,
        restore_ratio=r_on / r_off,
        cpu_encode_off_s=e_off,
        cpu_encode_on_s=e_on,
        cpu_encode_ratio=e_on / e_off,
        cpu_open_off_s=o_off,
        cpu_open_on_s=o_on,
        cpu_open_ratio=o_on / o_off,
        verified=verified,
        phase_seconds=phase,
    )


# --------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------


def stat_row(label: str, s: Stat, floor: Stat) -> str:
    return (
        f"  {label:<60} {s.p50:8.3f} {s.p90:8.3f} {s.p99:8.3f} {s.mean:8.3f} {s.max:8.2f}"
        f" {s.over_50ms:5d}  {s.p50 / floor.p50:6.2f}x"
    )


def report_encryption(enc: EncryptionResult) -> tuple[list[str], list[dict[str, Any]]]:
    """Section 4: lines of the report and their targets."""
    out: list[str] = []
    w = out.append
    w(
        '4. Encryption off vs on: encryption="local" (AES-256-GCM) against none, two file:// '
        "archives in the temp dir, same workload, interleaved"
    )
    w(
        f"   4a: run.checkpoint at the defaults (default policy, background flusher live), "
        f"section 1's growing transcript (JSON p50 {kib(enc.state_bytes_p50)}), "
        f"{enc.samples} samples each after {enc.warmup} warm-up steps, order alternated per step"
    )
    w(
        f"   4b: per round, a backlog of {enc.records:,} checkpoints per run (policy keep_all; "
        f"state = goal + last {ENC_WINDOW} messages, JSON p50 {kib(enc.backlog_state_bytes_p50)};"
        f" {enc.backlog_raw_json_bytes / 1e6:.1f} MB raw JSON), appended with no flush running, "
        f"then archive.flush() timed; {enc.rounds} rounds, order alternated; the runs restored "
        f"{len(enc.restore_off_s) // enc.rounds}x each after the archives closed"
    )
    w(
        f"  {'append latency':<60} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'mean ms':>8} "
        f"{'max ms':>8} {'>50ms':>5}  {'p50/off':>7}"
    )
    w("  " + "-" * 121)
    w(stat_row("4a off: run.checkpoint, defaults", enc.append_off, enc.append_off))
    w(stat_row("4a on:  run.checkpoint, defaults", enc.append_on, enc.append_off))
    n = enc.backlog_append_off.n
    w(stat_row(f"4b off: backlog appends ({n:,})", enc.backlog_append_off, enc.backlog_append_off))
    w(stat_row(f"4b on:  backlog appends ({n:,})", enc.backlog_append_on, enc.backlog_append_off))
    w(
        f"  ratio on / off: defaults p50 {enc.append_ratio_p50:.2f}x p99 "
        f"{enc.append_ratio_p99:.2f}x; backlog p50 {enc.backlog_append_ratio_p50:.2f}x p99 "
        f"{enc.backlog_append_ratio_p99:.2f}x (an append writes the local cache only: nothing "
        "is encrypted before the flush)"
    )
    w("")
    w(f"  {'flush, storage, restore':<66} {'off':>12} {'on':>12} {'on/off':>8}")
    w("  " + "-" * 101)

    def row(label: str, off: float, on: float, fmt: str, ratio: bool = True) -> None:
        r = f"{on / off:>7.2f}x" if ratio else f"{'':>8}"
        w(f"  {label:<66} {off:>12{fmt}} {on:>12{fmt}} {r}")

    k = len(enc.flush_off_s)
    row(
        f"archive.flush() of the backlog, s (median of {k})",
        enc.flush_off_median,
        enc.flush_on_median,
        ".3f",
    )
    row("  records/s", enc.flush_off_records_per_s, enc.flush_on_records_per_s, ",.0f")
    row("  MB/s of raw JSON", enc.flush_off_mb_per_s, enc.flush_on_mb_per_s, ",.1f")
    row(
        "  requests to the store per flush (mean)",
        statistics.fmean(sum(c.values()) for c in enc.flush_requests_off),
        statistics.fmean(sum(c.values()) for c in enc.flush_requests_on),
        ",.1f",
    )
    row(
        f"stored segment bytes (segments per run: {enc.segments})",
        enc.stored_off,
        enc.stored_on,
        ",d",
    )
    row("index.json bytes", enc.index_bytes_off, enc.index_bytes_on, ",d")
    k = len(enc.restore_off_s)
    row(
        f"restore on a fresh Reader (open + restore), s (median of {k})",
        enc.restore_off_median,
        enc.restore_on_median,
        ".3f",
    )
    row(
        "  records/s",
        enc.records / enc.restore_off_median,
        enc.records / enc.restore_on_median,
        ",.0f",
    )
    row(
        "CPU only: encode the segments (encode_segment / seal_segment), s",
        enc.cpu_encode_off_s,
        enc.cpu_encode_on_s,
        ".3f",
    )
    row(
        "CPU only: open the segments (segment_raw), s", enc.cpu_open_off_s, enc.cpu_open_on_s, ".3f"
    )
    w(
        f"  flush runs off {', '.join(f'{t:.3f}' for t in enc.flush_off_s)} s; on "
        f"{', '.join(f'{t:.3f}' for t in enc.flush_on_s)} s. Restore runs off "
        f"{', '.join(f'{t:.3f}' for t in enc.restore_off_s)} s; on "
        f"{', '.join(f'{t:.3f}' for t in enc.restore_on_s)} s"
    )

    def ops(counts: list[dict[str, int]]) -> str:
        return "; ".join(", ".join(f"{k} {n}" for k, n in sorted(c.items())) for c in counts)

    w(
        f"  requests per flush by round: off {ops(enc.flush_requests_off)}; on "
        f"{ops(enc.flush_requests_on)} (segment and index PUTs, then the run's manifest "
        "shard: a GET unless cached, a PUT)"
    )
    w(
        f"  sealing adds {enc.sealed_overhead_per_segment:.0f} B per segment (header line with "
        f"the wrapped data key and nonce, newline, 16 B GCM tag); stored on - off = "
        f"{enc.stored_on - enc.stored_off:+,} B over {enc.segments} segments (the runs' ids and "
        "timestamps differ, so the zstd frames differ by a few bytes too)"
    )
    w(
        "  CPU only = the first round's segments encoded / opened again in memory, no cache or "
        "disk: encode = what FlushEngine._encode calls (zstd, SHA-256, AES-GCM when sealed); "
        "open = segment_raw (checks, decrypt, zstd), without the record parsing both share"
    )
    w(
        f"  off stored plaintext, on sealed every segment and carries its data key in the "
        f"index; all records restored in order with the right last state: "
        f"{'yes' if enc.verified else 'NO'}"
    )
    w("")
    targets = [
        {
            # On the backlog appends: at the defaults both archives' background flushes
            # land among the samples (p50 swung 0.92-1.12x between runs, noise).
            "target": f"encrypted append p50 <= {TARGET_ENC_APPEND_RATIO:.2f}x plaintext "
            "(backlog, no flush running)",
            "value": f"{enc.backlog_append_ratio_p50:.2f}x (defaults {enc.append_ratio_p50:.2f}x: "
            f"{enc.append_on.p50:.3f} vs {enc.append_off.p50:.3f} ms)",
            "pass": enc.backlog_append_ratio_p50 <= TARGET_ENC_APPEND_RATIO,
        },
        {
            "target": "encrypted run sealed, restored whole, in order",
            "value": f"flush {enc.flush_ratio:.2f}x, restore {enc.restore_ratio:.2f}x, "
            f"stored {enc.stored_ratio:.4f}x of plaintext",
            "pass": enc.verified,
        },
    ]
    return out, targets


def report_core(
    lat: LatencyResult, req: RequestsResult, rst: RestoreResult
) -> tuple[list[str], list[dict[str, Any]]]:
    """Sections 1-3: lines of the report and their targets."""
    out: list[str] = []
    w = out.append
    w(
        f"1. Append latency: growing transcript, {lat.samples} samples per method after "
        f"{lat.warmup} warm-up steps (excluded)"
    )
    w(
        f"   state = whole message history; JSON size p50 {kib(lat.state_bytes_p50)}, "
        f"max {kib(lat.state_bytes_max)}; names cycle {'/'.join(NAMES)}; "
        "all methods run on the same state each step, order rotated per step"
    )
    w(
        f"  {'method':<60} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'mean ms':>8} {'max ms':>8}"
        f" {'>50ms':>5}  {'p50/floor':>7}"
    )
    w("  " + "-" * 121)
    w(stat_row("runarchive run.checkpoint (durability=local)", lat.runarchive, lat.floor))
    w(stat_row("floor: json.dumps + sqlite INSERT/commit (WAL, sync=FULL)", lat.floor, lat.floor))
    w(
        stat_row(
            "stricter floor: orjson.dumps + sqlite INSERT/commit (same)",
            lat.floor_orjson,
            lat.floor,
        )
    )
    w(stat_row("boto3 put_object(json.dumps(state)) per checkpoint", lat.put_object, lat.floor))
    w(
        f"  ratio runarchive / floor:      p50 {lat.floor_ratio_p50:.2f}x   "
        f"p99 {lat.floor_ratio_p99:.2f}x   (target p50 <= {TARGET_FLOOR_RATIO:.1f}x)"
    )
    w(
        f"  ratio runarchive / orjson floor: p50 {lat.orjson_floor_ratio_p50:.2f}x   (runarchive "
        "serialises with orjson, so this is its own floor; the json.dumps floor is the spec's)"
    )
    w(
        f"  ratio runarchive / put_object: p50 {lat.put_ratio_p50:.2f}x   "
        f"p99 {lat.put_ratio_p99:.2f}x   (put_object p50 is {1 / lat.put_ratio_p50:.1f}x slower)"
    )
    w(
        f"  background flusher during the run: {lat.flush_segments} segments, "
        f"{lat.flush_index_writes} index writes, {lat.flush_errors} runs with flush errors"
    )
    b = lat.breakdown
    w(
        "  CPU breakdown on the same states (every 10th, not interleaved), p50 ms: "
        f"json.dumps {b['json.dumps'].p50:.3f}, orjson.dumps {b['orjson.dumps'].p50:.3f}, "
        f"runarchive check_json_value {b['check_json'].p50:.3f}"
    )
    w("")
    w(
        f"2. S3 requests and bytes: one run of {req.checkpoints} checkpoints + {req.events} "
        f"events (growing transcript), complete(); written in {req.seconds:.1f}s"
    )
    w(
        "   requests counted by archive.store after reset() right after open: the open-time "
        "conditional-write probe (5 requests) is excluded"
    )
    w(f"  {'':<40} {'requests':>9} {'per 1,000 ckpt':>15} {'stored bytes':>16} {'% of raw':>9}")
    w("  " + "-" * 94)
    ops = ", ".join(f"{k} {v}" for k, v in sorted(req.counts.items()))
    w(
        f"  {'runarchive (default policy)':<40} {req.requests:>9} {req.requests_per_1000:>15.1f} "
        f"{req.stored_bytes:>16,} {req.stored_pct_of_raw:>8.2f}%"
    )
    ka = req.keep_all
    if ka:
        w(
            f"  {'runarchive, policy keep_all (context)':<40} {int(ka['requests']):>9} "
            f"{ka['requests'] * 1000 / req.checkpoints:>15.1f} {int(ka['stored_bytes']):>16,} "
            f"{100.0 * ka['stored_bytes'] / req.raw_json_bytes:>8.2f}%"
        )
    w(
        f"  {'per-checkpoint PUT checkpointer':<40} {req.baseline_puts:>9} "
        f"{req.baseline_puts * 1000 / req.checkpoints:>15.1f} {req.baseline_bytes:>16,} "
        f"{100.0 * req.baseline_bytes / req.raw_json_bytes:>8.2f}%"
    )
    w(
        "  (per-checkpoint baseline by construction: one PUT of json.dumps(state) per "
        "checkpoint, as timed in section 1; storing the events too would add their PUTs)"
    )
    w(f"  runarchive requests by op: {ops}")
    w(
        f"  of which the run's data (segments + index, counted above): {req.requests}; "
        f"manifest (fixed per run, whatever the checkpoint count): {req.manifest_requests}"
    )
    w(
        f"  raw JSON (sum of len(json.dumps(...)) of every state and event): "
        f"{req.raw_json_bytes:,} B ({mib(req.raw_json_bytes)}); "
        f"archive.appended_bytes (compact record lines): {req.appended_bytes:,} B"
    )
    w(
        f"  stored = sum of segment sizes in the run index: {req.stored_bytes:,} B in "
        f"{req.segments} segments = {req.stored_pct_of_raw:.2f}% of raw JSON, "
        f"{req.stored_pct_of_appended:.2f}% of appended bytes"
    )
    w(
        f"  segments hold {req.archived_checkpoints} of {req.checkpoints} checkpoints "
        f"(policy dropped {req.dropped_checkpoints}: keep first + latest per name + last 20 "
        f"per flush) + all events; uncompressed {req.segment_raw_bytes:,} B"
    )
    w(
        f"  total uploaded incl. index rewrites: {req.uploaded_bytes:,} B; final index.json "
        f"{req.index_bytes:,} B"
    )
    if ka:
        w(
            f"  keep_all (not a target, for context): {int(ka['checkpoints'])} checkpoints "
            f"archived in {int(ka['segments'])} segments, {int(ka['raw_bytes']):,} B "
            f"uncompressed -> {int(ka['stored_bytes']):,} B; written in {ka['seconds']:.1f}s"
        )
    age = float(ArchiveConfig.model_fields["flush_age"].default)
    every = int(ArchiveConfig.model_fields["flush_records"].default)
    w(
        f"  caveat: these checkpoints arrive back to back ({req.checkpoints} in "
        f"{req.seconds:.1f}s), "
        f"so flushes follow flush_records={every}. At agent pace the flush_age={age:g}s "
        f"trigger rules: ~2 requests per {age:g}s of run time, e.g. 1 checkpoint/s -> "
        f"~{2 * 1000 / age:.0f} requests per 1,000 checkpoints"
    )
    w("")
    w(
        f"3. Restore a {rst.records:,}-record run ({rst.checkpoints:,} checkpoints + "
        f"{rst.events:,} events, ~{rst.record_bytes_median} B states, policy keep_all) "
        "from the bucket alone"
    )
    w(
        f"   written in {rst.write_seconds:.1f}s; {rst.segments} segments, "
        f"{rst.stored_bytes:,} B stored ({rst.raw_bytes:,} B uncompressed)"
    )
    w(f"  {'method':<72} {'seconds':>8} {'records/s':>11} {'vs runarchive':>13}")
    w("  " + "-" * 108)

    def rrow(label: str, seconds: float) -> None:
        w(
            f"  {label:<72} {seconds:>8.3f} {rst.records / seconds:>11,.0f} "
            f"{seconds / rst.restore_median:>12.2f}x"
        )

    rrow(
        f"runarchive Reader.open + restore (fresh Reader; median of {len(rst.restore_seconds)})",
        rst.restore_median,
    )
    rrow("runarchive restore() alone (Reader already open; median)", rst.restore_only_median)
    rrow(
        f"per-record objects: {rst.records:,} sequential GETs "
        f"({rst.get_loop_n:,} timed{', extrapolated' if rst.get_loop_n != rst.records else ''})",
        rst.get_loop_extrapolated_s,
    )
    rrow(
        f"per-record objects: {rst.records:,} GETs on 8 threads (same as restore_workers)",
        rst.get_parallel_extrapolated_s,
    )
    rrow(
        "floor: same records as ONE zstd object: GET+unzstd+orjson (median)",
        rst.floor_total_s,
    )
    w(
        f"  runarchive restore: {rst.restore_requests} GETs (index + {rst.segments} segments); "
        f"runs {', '.join(f'{t:.3f}' for t in rst.restore_seconds)} s; verified "
        f"{rst.records:,} records in seq order: {'yes' if rst.verified else 'NO'}"
    )
    w(
        f"  of which Reader.open (boto3 session + client): {rst.extra['reader_open_s']:.3f}s; "
        f"decode_segment of all segments in one thread (zstd + SHA-256 + record models): "
        f"{rst.extra['decode_segments_s']:.3f}s"
    )
    w(
        f"  per-record GET: {rst.get_loop_per_get_ms:.2f} ms each; one-object floor: GET "
        f"{rst.one_object_get_s:.3f}s + decode {rst.one_object_decode_s:.3f}s"
    )
    w(
        "  baselines: a per-checkpoint S3 checkpointer restores a run with one GET per record "
        "(upper bound it pays); the one-object floor is the least any design can do with "
        "these bytes"
    )
    w("")

    targets = [
        {
            "target": f"append p50 <= {TARGET_FLOOR_RATIO:.1f}x floor",
            "value": f"{lat.floor_ratio_p50:.2f}x ({lat.runarchive.p50:.3f} vs "
            f"{lat.floor.p50:.3f} ms)",
            "pass": lat.floor_ratio_p50 <= TARGET_FLOOR_RATIO,
        },
        {
            "target": "append p50 faster than put_object",
            "value": f"{lat.put_ratio_p50:.2f}x ({lat.runarchive.p50:.3f} vs "
            f"{lat.put_object.p50:.3f} ms)",
            "pass": lat.put_ratio_p50 < 1.0,
        },
        {
            "target": f"<= {TARGET_REQUESTS_PER_1000} requests per 1,000 checkpoints",
            "value": f"{req.requests_per_1000:.1f} (baseline 1,000)",
            "pass": req.requests_per_1000 <= TARGET_REQUESTS_PER_1000,
        },
        {
            "target": f"stored <= {TARGET_STORED_PCT:.0f}% of raw JSON",
            "value": f"{req.stored_pct_of_raw:.2f}% ({req.stored_bytes:,} of "
            f"{req.raw_json_bytes:,} B; {req.stored_pct_of_appended:.2f}% of appended)",
            "pass": req.stored_pct_of_raw <= TARGET_STORED_PCT,
        },
        {
            "target": f"restore {rst.records:,} records: all back, in order",
            "value": f"{rst.restore_median:.3f}s, {rst.records_per_s:,.0f} records/s, "
            f"{rst.get_loop_extrapolated_s / rst.restore_median:.0f}x faster than per-record GETs",
            "pass": rst.verified,
        },
    ]
    return out, targets


def report(
    env: dict[str, Any],
    lat: LatencyResult | None,
    req: RequestsResult | None,
    rst: RestoreResult | None,
    enc: EncryptionResult | None,
    total_s: float,
) -> tuple[str, list[dict[str, Any]]]:
    out: list[str] = []
    w = out.append
    w("runarchive core benchmark")
    w("=" * 100)
    server = (
        f"SeaweedFS (weed mini) on 127.0.0.1, started in {env['seaweed_start_s']:.1f}s"
        if env.get("seaweed_start_s") is not None
        else "no SeaweedFS (section 4 only)"
    )
    w(
        f"python {env['python']}, {env['cpus']} CPUs, {env['platform']}; {server}; temp dir "
        f"{env['tmp']} (SQLite floor and runarchive cache on the same disk)"
    )
    w("")
    targets: list[dict[str, Any]] = []
    if lat is not None and req is not None and rst is not None:
        lines, more = report_core(lat, req, rst)
        out.extend(lines)
        targets.extend(more)
    if enc is not None:
        lines, more = report_encryption(enc)
        out.extend(lines)
        targets.extend(more)
    w("targets")
    w("-" * 100)
    for t in targets:
        w(f"  {'PASS' if t['pass'] else 'MISS'}  {t['target']:<48} {t['value']}")
    w("")
    w(f"total runtime {total_s:.1f}s")
    return "\n".join(out), targets


def as_dict(obj: Any) -> Any:
    if isinstance(obj, Stat | LatencyResult | RequestsResult | RestoreResult | EncryptionResult):
        return {k: as_dict(v) for k, v in vars(obj).items()}
    if isinstance(obj, dict):
        return {k: as_dict(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [as_dict(v) for v in obj]
    return obj


@dataclass(frozen=True)
class Scale:
    """How much each section does (the full run; ``quick()`` is smaller)."""

    warmup: int = 50  # latency steps run but not counted
    samples: int = 1000  # latency samples per method
    checkpoints: int = 1000  # section 2 (the spec's workload; kept in --quick)
    events: int = 100
    restore_records: int = 10_000
    get_loop: int = 10_000  # per-record GETs timed for the restore baseline
    repeats: int = 5  # restore and one-object floor runs (median reported)
    enc_records: int = 10_000  # section 4: backlog of one run (warmup/samples as section 1)
    enc_rounds: int = 2  # section 4: backlogs flushed per variant, order alternated
    enc_restore_repeats: int = 4  # section 4: restores of each round's runs per variant
    enc_cpu_repeats: int = 3  # section 4: in-memory encode/open repeats per variant

    @classmethod
    def quick(cls) -> Scale:
        return cls(
            warmup=20,
            samples=300,
            restore_records=2000,
            get_loop=1000,
            repeats=3,
            enc_records=2000,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a smaller, faster run")
    parser.add_argument(
        "--json",
        nargs="?",
        const=str(Path(tempfile.gettempdir()) / "runarchive-bench.json"),
        metavar="PATH",
        help="also write the results as JSON (default path: %(const)s)",
    )
    only = parser.add_mutually_exclusive_group()
    only.add_argument(
        "--encryption-only",
        action="store_true",
        help="run section 4 (encryption off vs on) alone; no SeaweedFS",
    )
    only.add_argument(
        "--no-encryption", action="store_true", help="skip section 4 (encryption off vs on)"
    )
    args = parser.parse_args(argv)
    scale = Scale.quick() if args.quick else Scale()

    began = time.perf_counter()
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(terse=True),
        "seaweed_start_s": None,
        "tmp": tempfile.gettempdir(),
        "quick": args.quick,
        "scale": vars(scale),
    }
    lat: LatencyResult | None = None
    req: RequestsResult | None = None
    rst: RestoreResult | None = None
    enc: EncryptionResult | None = None
    with tempfile.TemporaryDirectory(prefix="rabench-") as tmp_name:
        tmp = Path(tmp_name)
        if not args.encryption_only:
            weed = SeaweedFS(tmp / "weed")
            with weed as server, aws_env(server):
                env["seaweed_start_s"] = weed.startup_seconds or 0.0
                print(
                    f"SeaweedFS up at {server.endpoint_url}; running (quick={args.quick})...",
                    file=sys.stderr,
                    flush=True,
                )
                t = time.perf_counter()
                lat = bench_latency(server, tmp, scale.warmup, scale.samples)
                print(
                    f"  latency done in {time.perf_counter() - t:.1f}s", file=sys.stderr, flush=True
                )
                t = time.perf_counter()
                req = bench_requests(
                    server, tmp, scale.checkpoints, scale.events, with_keep_all=True
                )
                print(
                    f"  requests done in {time.perf_counter() - t:.1f}s",
                    file=sys.stderr,
                    flush=True,
                )
                t = time.perf_counter()
                rst = bench_restore(
                    server, tmp, scale.restore_records, scale.get_loop, scale.repeats
                )
                print(
                    f"  restore done in {time.perf_counter() - t:.1f}s", file=sys.stderr, flush=True
                )
        if not args.no_encryption:
            # After SeaweedFS stopped: section 4 uses file:// archives only.
            t = time.perf_counter()
            (tmp / "enc").mkdir()
            with no_runarchive_env():
                enc = bench_encryption(
                    tmp / "enc",
                    scale.warmup,
                    scale.samples,
                    scale.enc_records,
                    scale.enc_rounds,
                    scale.enc_restore_repeats,
                    scale.enc_cpu_repeats,
                )
            print(
                f"  encryption done in {time.perf_counter() - t:.1f}s", file=sys.stderr, flush=True
            )
    total_s = time.perf_counter() - began
    text, targets = report(env, lat, req, rst, enc, total_s)
    print(text)
    if args.json:
        payload: dict[str, Any] = {"env": env}
        for name, part in (
            ("latency", lat),
            ("requests", req),
            ("restore", rst),
            ("encryption", enc),
        ):
            if part is not None:
                payload[name] = as_dict(part)
        payload["targets"] = targets
        payload["total_seconds"] = total_s
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
        print(f"results written to {args.json}")
    return 0  # a benchmark, not a test: MISS is reported, not an error


if __name__ == "__main__":
    sys.exit(main())
