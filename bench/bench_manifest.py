"""Manifest benchmark: finding runs among 100,000 with the manifest vs listing the bucket.

Run with ``make bench-manifest`` or
``.venv/bin/python bench/bench_manifest.py [--quick] [--json [PATH]]``.

It starts its own SeaweedFS (``tests/support/servers.py``) in a temporary directory, measures,
prints a table and a targets section, and stops the server. Nothing is written into the
repository.

1. Populate a manifest of 100,000 runs (99,000 completed/failed over 90 days, 1,000
   running, a few of them with expired leases; 12 agents), written shard by shard with
   ``Manifest.update`` (the manifest's own encoder and CAS), not run by run.
2. Queries through ``Reader.open(url).list_runs(...)`` / ``interrupted()``: a fresh
   Reader per repeat (new boto3 client), after one untimed warm-up; median of several;
   requests as counted by ``reader.store`` (a ``CountingStore``).
3. Baseline without a manifest: ListObjectsV2 over ``runs/`` holding one
   ``runs/<id>/index.json`` per run (created by a thread pool; when that would take too
   long, as many as fit and the listing extrapolated linearly), plus, to know a run's
   status/agent/creation time (or whether it is interrupted), one GET per index,
   estimated from a measured per-GET time.
4. CAS update throughput: 8 writer processes, each running its own runs through
   ``upsert_active`` + ``finish`` (3 CAS updates per run) on the same 8 + 8 shards, on a
   fresh manifest (small shards) and on the 100,000-run manifest (large ``done`` shards),
   plus the uncontended latency of one writer.
5. Shard object sizes (compressed / uncompressed) at 100,000 runs, and where the time of
   a full listing goes (GET, zstd, orjson, sort, ``RunEntry`` validation).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import itertools
import json
import math
import multiprocessing as mp
import os
import platform
import queue
import random
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import zstandard

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from common import aws_env, pct, warm_bucket  # noqa: E402
from support.servers import S3Server, SeaweedFS  # noqa: E402

from runarchive import Reader  # noqa: E402
from runarchive.engine.manifest.core import Manifest, RunEntry  # noqa: E402
from runarchive.engine.manifest.format import (  # noqa: E402
    KINDS,
    SHARDS,
    Kind,
    decode_legacy,
    encode,
    shard_key,
    shard_of,
)
from runarchive.format.codec import index_key  # noqa: E402


# This benchmark measures the format 1 manifest (16 shards): since manifest format 2
# (bench/scale_fleet.py) it writes them as a pre-format-2 archive left them, and the
# reads go through format 2's legacy path.
def _encode(kind: Kind, shard: int, runs: dict[str, Any]) -> bytes:
    return encode({"format": 1, "kind": kind, "shard": shard, "runs": runs})


def _decode(body: bytes, key: str) -> dict[str, Any]:
    return decode_legacy(body, key)


from runarchive.format.model import RunIndex, parse_index  # noqa: E402
from runarchive.store import CountingStore, MemoryStore, S3Settings, S3Store  # noqa: E402

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

PREFIX = "bench"
TARGET_SECONDS = 1.0
TARGET_REQUESTS = 20
AGENTS = (
    "planner",
    "coder",
    "researcher",
    "reviewer",
    "support",
    "sql-analyst",
    "browser",
    "summarizer",
    "triage",
    "translator",
    "scheduler",
    "tester",
)
AGENT_WEIGHTS = (20, 18, 12, 10, 9, 8, 7, 5, 4, 3, 2, 2)
MODELS = ("gpt-4o", "claude-sonnet", "llama-70b", "mistral-large")
QUERY_AGENT = "coder"
QUERY_SINCE_DAYS = 7
HISTORY_DAYS = 90


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def s3_settings(endpoint_url: str, bucket: str) -> S3Settings:
    return S3Settings(
        bucket=bucket, prefix=PREFIX, endpoint_url=endpoint_url, addressing_style="path"
    )


def open_reader(endpoint_url: str, bucket: str) -> Reader:
    """A fresh Reader as a new host would open it (new boto3 session and client)."""
    return Reader.open(
        f"s3://{bucket}/{PREFIX}", endpoint_url=endpoint_url, addressing_style="path"
    )


class HttpCounter:
    """Counts the HTTP requests a boto3 client really sends, by operation."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, event_name: str = "", **_: Any) -> None:
        with self._lock:
            self.calls[event_name.rsplit(".", 1)[-1]] += 1

    def attach(self, client: S3Client) -> S3Client:
        client.meta.events.register("before-send.s3", self)
        return client


# --------------------------------------------------------------------------
# 1. the population
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """What the benchmark needs to know about a generated run to check query results."""

    run_id: str
    agent: str
    status: str
    created_at: datetime
    lease_expires_at: datetime | None


@dataclass
class Population:
    now: datetime
    rows: list[Row]
    shards: dict[tuple[Kind, int], dict[str, dict[str, Any]]]  # (kind, shard) -> runs
    build_seconds: float  # RunEntry models + model_dump(mode="json") of every run
    running: int
    expired: int


def make_population(runs: int, running: int, expired: int, now: datetime) -> Population:
    """``runs`` runs: ``running`` of them running (``expired`` with a lapsed lease), the
    rest completed (95 %) or failed; created over 90 days; grouped by manifest shard."""
    rng = random.Random(7)
    t0 = time.perf_counter()
    rows: list[Row] = []
    shards: dict[tuple[Kind, int], dict[str, dict[str, Any]]] = {
        (k, s): {} for k in KINDS for s in range(SHARDS)
    }
    for i in range(runs):
        is_running = i < running
        agent = rng.choices(AGENTS, AGENT_WEIGHTS)[0]
        age = timedelta(seconds=rng.uniform(60, 3 * 86400 if is_running else HISTORY_DAYS * 86400))
        created = now - age
        run_id = created.strftime("%Y%m%dT%H%M%S%fZ") + f"-{rng.getrandbits(32):08x}"
        if is_running:
            status = "running"
            ended = None
            if i < expired:  # its owner died between 5 minutes and 2 days ago
                lease: datetime | None = now - timedelta(seconds=rng.uniform(300, 2 * 86400))
                assert lease is not None
                updated = lease - timedelta(seconds=60)
            else:  # far enough ahead that it cannot lapse during the benchmark
                lease = now + timedelta(hours=6)
                updated = now - timedelta(seconds=rng.uniform(0, 20))
        else:
            status = "failed" if rng.random() < 0.05 else "completed"
            ended = created + timedelta(seconds=rng.uniform(5, 4 * 3600))
            updated = ended
            lease = None
        records = rng.randint(1, 5000)
        entry = RunEntry(
            run_id=run_id,
            agent=agent,
            status=status,
            created_at=created,
            updated_at=updated,
            ended_at=ended,
            owner_host=f"host-{rng.randrange(40):02d}",
            owner_pid=rng.randint(1000, 4_000_000),
            epoch=1 if rng.random() < 0.02 else 0,
            lease_expires_at=lease,
            last_seq=records,
            records=records,
            stored_bytes=records * rng.randint(40, 400),
            metadata={
                "task": f"ticket-{rng.randrange(1_000_000)}",
                "user": f"u{rng.randrange(5000)}",
                "model": rng.choice(MODELS),
            },
        )
        kind: Kind = "active" if is_running else "done"
        shards[(kind, shard_of(run_id))][run_id] = entry.model_dump(mode="json")
        rows.append(Row(run_id, agent, status, created, lease))
    return Population(
        now=now,
        rows=rows,
        shards=shards,
        build_seconds=time.perf_counter() - t0,
        running=running,
        expired=expired,
    )


@dataclass
class PopulateResult:
    runs: int
    running: int
    expired: int
    finished: int
    failed: int
    agents: int
    build_seconds: float
    write_seconds: float
    requests: dict[str, int]


def write_population(store: CountingStore, pop: Population) -> PopulateResult:
    """Write every format 1 shard once, create-only on a fresh bucket."""
    store.reset()
    t0 = time.perf_counter()
    for (kind, shard), runs in pop.shards.items():
        if not runs:
            continue
        store.put(shard_key(kind, shard), _encode(kind, shard, runs), mode="create")
    seconds = time.perf_counter() - t0
    return PopulateResult(
        runs=len(pop.rows),
        running=pop.running,
        expired=pop.expired,
        finished=sum(1 for r in pop.rows if r.status != "running"),
        failed=sum(1 for r in pop.rows if r.status == "failed"),
        agents=len({r.agent for r in pop.rows}),
        build_seconds=pop.build_seconds,
        write_seconds=seconds,
        requests=dict(store.counts),
    )


# --------------------------------------------------------------------------
# 2. queries through Reader
# --------------------------------------------------------------------------


@dataclass
class QueryResult:
    label: str
    expected: int
    results: int
    correct: bool
    call_seconds: list[float]
    total_seconds: list[float]  # Reader.open + call
    call_median: float
    total_median: float
    requests: int
    counts: dict[str, int]
    bytes_read: int


Query = Callable[[Reader], list[RunEntry]]


def expectations(pop: Population) -> dict[str, Any]:
    """What the queries must return, computed from the generated runs (picklable)."""
    since = pop.now - timedelta(days=QUERY_SINCE_DAYS)
    rows = pop.rows
    return {
        "since": since,
        "total": len(rows),
        "running": pop.running,
        "agent_since": sum(1 for r in rows if r.agent == QUERY_AGENT and r.created_at >= since),
        "expired_ids": sorted(
            r.run_id for r in rows if r.lease_expires_at and r.lease_expires_at < pop.now
        ),
    }


def queries(
    exp: dict[str, Any],
) -> list[tuple[str, Query, int, Callable[[list[RunEntry]], bool]]]:
    """(label, call, expected count, order/content check) for each measured query."""
    since: datetime = exp["since"]
    expired_ids = set(exp["expired_ids"])

    def newest_first(out: list[RunEntry]) -> bool:
        return all(a.created_at >= b.created_at for a, b in itertools.pairwise(out))

    def all_running(out: list[RunEntry]) -> bool:
        return newest_first(out) and all(e.status == "running" for e in out)

    def agent_since(out: list[RunEntry]) -> bool:
        return newest_first(out) and all(
            e.agent == QUERY_AGENT and e.created_at >= since for e in out
        )

    def interrupted_ok(out: list[RunEntry]) -> bool:
        return {e.run_id for e in out} == expired_ids

    return [
        (
            "list_runs(limit=None)  (every run)",
            lambda r: r.list_runs(limit=None),
            exp["total"],
            newest_first,
        ),
        (
            "list_runs()  (default limit=1000)",
            lambda r: r.list_runs(),
            min(1000, exp["total"]),
            newest_first,
        ),
        (
            'list_runs(status="running", limit=None)',
            lambda r: r.list_runs(status="running", limit=None),
            exp["running"],
            all_running,
        ),
        (
            f'list_runs(agent="{QUERY_AGENT}", since=now-{QUERY_SINCE_DAYS}d, limit=None)',
            lambda r: r.list_runs(agent=QUERY_AGENT, since=since, limit=None),
            exp["agent_since"],
            agent_since,
        ),
        ("interrupted()", lambda r: r.interrupted(), len(expired_ids), interrupted_ok),
    ]


def measure_query(
    endpoint_url: str,
    bucket: str,
    label: str,
    call: Query,
    expected: int,
    check: Callable[[list[RunEntry]], bool],
    repeats: int,
) -> QueryResult:
    # Warm-up (untimed): server caches, imports, first-call costs.
    reader = open_reader(endpoint_url, bucket)
    call(reader)
    reader.close()
    calls: list[float] = []
    totals: list[float] = []
    correct = True
    results = 0
    counts: dict[str, int] = {}
    bytes_read = 0
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        reader = open_reader(endpoint_url, bucket)
        t1 = time.perf_counter()
        out = call(reader)
        t2 = time.perf_counter()
        calls.append(t2 - t1)
        totals.append(t2 - t0)
        results = len(out)
        correct = correct and results == expected and check(out)
        counts = dict(reader.store.counts)
        bytes_read = reader.store.bytes_in
        reader.close()
        del out
    return QueryResult(
        label=label,
        expected=expected,
        results=results,
        correct=correct,
        call_seconds=calls,
        total_seconds=totals,
        call_median=statistics.median(calls),
        total_median=statistics.median(totals),
        requests=sum(counts.values()),
        counts=counts,
        bytes_read=bytes_read,
    )


# --------------------------------------------------------------------------
# 5. shard sizes and where a full listing's time goes
# --------------------------------------------------------------------------


@dataclass
class ShardSize:
    kind: Kind
    shard: int
    entries: int
    compressed: int
    uncompressed: int


@dataclass
class Breakdown:
    """One full listing taken apart, one thread, on the shard bodies already fetched.

    Timed twice where the cyclic garbage collector matters: as the library runs (gc on)
    and inside ``gc.disable()``.
    """

    entries: int
    get_parallel_s: float  # the 16 GETs on 16 threads (as read_all)
    zstd_s: float
    orjson_s: float
    orjson_nogc_s: float
    decode_s: float  # manifest._decode of all 16 (zstd + orjson + checks)
    decode_nogc_s: float
    merge_sort_s: float  # merge + sort on raw dicts, as entries() does
    validate_s: float  # RunEntry.model_validate of every entry, models kept (as entries())
    validate_nogc_s: float
    validate_us_per_entry: float
    validate_nogc_us_per_entry: float
    entries_mem_s: float  # Manifest.entries(limit=None) on a MemoryStore copy: no network
    entries_mem_nogc_s: float
    known_mib: float  # what a Manifest keeps (_known) after one read_all(), tracemalloc
    encode_done_shard_s: float  # manifest._encode of the largest done shard
    decode_done_shard_s: float
    largest_done_entries: int
    largest_done_compressed: int


def timed(fn: Callable[[], object], *, gc_off: bool = False, repeats: int = 3) -> float:
    """Median seconds of ``fn()``; its result is kept until the clock stops."""
    times: list[float] = []
    for _ in range(repeats):
        gc.collect()
        if gc_off:
            gc.disable()
        try:
            t0 = time.perf_counter()
            result = fn()
            times.append(time.perf_counter() - t0)
        finally:
            gc.enable()
        del result
    return statistics.median(times)


def measure_breakdown(store: CountingStore) -> tuple[list[ShardSize], Breakdown]:
    keys = [(kind, s, shard_key(kind, s)) for kind in KINDS for s in range(SHARDS)]
    store.get(keys[0][2])  # warm the connection
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(keys)) as pool:
        bodies = list(pool.map(lambda k: store.get(k[2]).body, keys))
    get_s = time.perf_counter() - t0
    dctx = zstandard.ZstdDecompressor()
    raws = [dctx.decompress(b) for b in bodies]
    docs = [orjson.loads(r) for r in raws]
    sizes = [
        ShardSize(kind, s, len(doc["runs"]), len(body), len(raw))
        for (kind, s, _), body, raw, doc in zip(keys, bodies, raws, docs, strict=True)
    ]
    del docs
    zstd_s = timed(lambda: [dctx.decompress(b) for b in bodies])
    orjson_s = timed(lambda: [orjson.loads(r) for r in raws])
    orjson_nogc_s = timed(lambda: [orjson.loads(r) for r in raws], gc_off=True)
    raws.clear()

    def decode_all() -> list[dict[str, dict[str, Any]]]:
        return [_decode(b, k[2]) for b, k in zip(bodies, keys, strict=True)]

    decode_s = timed(decode_all)
    decode_nogc_s = timed(decode_all, gc_off=True)
    decoded = decode_all()
    t0 = time.perf_counter()
    merged: dict[str, dict[str, Any]] = {}
    for runs in decoded:  # active shards first, then done: done wins, as read_all
        merged.update(runs)
    rows = list(merged.values())
    rows.sort(key=lambda d: (str(d.get("created_at")), str(d.get("run_id"))), reverse=True)
    merge_sort_s = time.perf_counter() - t0

    def validate_all() -> list[RunEntry]:
        return [RunEntry.model_validate(d) for d in rows]

    validate_s = timed(validate_all)
    validate_nogc_s = timed(validate_all, gc_off=True)
    merged.clear()
    rows.clear()

    done = [(sz, runs) for sz, runs in zip(sizes, decoded, strict=True) if sz.kind == "done"]
    big, big_runs = max(done, key=lambda p: p[0].entries)
    encs: list[float] = []
    decs: list[float] = []
    body = b""
    for _ in range(3):
        t0 = time.perf_counter()
        body = _encode("done", big.shard, big_runs)
        encs.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        _decode(body, "x")
        decs.append(time.perf_counter() - t0)
    del done, big_runs
    decoded.clear()  # a clean heap for the whole-call timings below
    mem = MemoryStore()
    for (_, _, key), shard_body in zip(keys, bodies, strict=True):
        mem.put(key, shard_body)
    entries_s = timed(lambda: Manifest(mem).entries(limit=None), repeats=3)
    entries_nogc_s = timed(lambda: Manifest(mem).entries(limit=None), gc_off=True, repeats=3)
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    holder = Manifest(mem)
    holder.read_all()
    gc.collect()
    known_mib = (tracemalloc.get_traced_memory()[0] - base) / 2**20
    tracemalloc.stop()
    del holder

    n = sum(sz.entries for sz in sizes)
    return sizes, Breakdown(
        entries=n,
        get_parallel_s=get_s,
        zstd_s=zstd_s,
        orjson_s=orjson_s,
        orjson_nogc_s=orjson_nogc_s,
        decode_s=decode_s,
        decode_nogc_s=decode_nogc_s,
        merge_sort_s=merge_sort_s,
        validate_s=validate_s,
        validate_nogc_s=validate_nogc_s,
        validate_us_per_entry=validate_s / max(1, n) * 1e6,
        validate_nogc_us_per_entry=validate_nogc_s / max(1, n) * 1e6,
        entries_mem_s=entries_s,
        entries_mem_nogc_s=entries_nogc_s,
        known_mib=known_mib,
        encode_done_shard_s=statistics.median(encs),
        decode_done_shard_s=statistics.median(decs),
        largest_done_entries=big.entries,
        largest_done_compressed=len(body),
    )


def reader_main(spec: dict[str, Any], results: Any) -> None:
    """Sections 2 and 5 in a fresh interpreter, as a new host: the benchmark's own
    100,000 generated runs would otherwise sit in the heap the garbage collector walks."""
    try:
        store = CountingStore(S3Store(s3_settings(spec["endpoint"], spec["bucket"])))
        sizes, bd = measure_breakdown(store)
        store.close()
        qs = [
            measure_query(spec["endpoint"], spec["bucket"], *q, spec["repeats"])
            for q in queries(spec["expect"])
        ]
        results.put(
            {
                "sizes": [dataclasses.asdict(x) for x in sizes],
                "breakdown": dataclasses.asdict(bd),
                "queries": [dataclasses.asdict(q) for q in qs],
            }
        )
    except BaseException as exc:
        results.put({"error": repr(exc)})
        raise


def run_readers(
    endpoint_url: str, bucket: str, expect: dict[str, Any], repeats: int
) -> tuple[list[ShardSize], Breakdown, list[QueryResult]]:
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    spec = {"endpoint": endpoint_url, "bucket": bucket, "expect": expect, "repeats": repeats}
    proc = ctx.Process(target=reader_main, args=(spec, results), daemon=True)
    proc.start()
    try:
        got = results.get(timeout=600)
    finally:
        proc.join(timeout=30)
        if proc.is_alive():
            proc.terminate()  # only our own child, by its handle
    if "error" in got:
        raise RuntimeError(f"reader process failed: {got['error']}")
    return (
        [ShardSize(**x) for x in got["sizes"]],
        Breakdown(**got["breakdown"]),
        [QueryResult(**q) for q in got["queries"]],
    )


# --------------------------------------------------------------------------
# 3. baseline: list the bucket (and GET every index)
# --------------------------------------------------------------------------


@dataclass
class ListingResult:
    target_objects: int
    created: int
    create_seconds: float
    create_rate: float
    create_extrapolated_s: float  # for target_objects
    index_bytes_median: int
    list_seconds: list[float]
    list_median: float  # for ``created`` keys
    list_requests: int  # for ``created`` keys
    list_extrapolated_s: float  # for target_objects (linear)
    list_extrapolated_requests: int
    get_seq_n: int
    get_seq_ms: float  # per GET + parse_index, sequential
    get_par_n: int
    get_par_threads: int
    get_par_ms: float  # wall time per GET with get_par_threads threads
    full_scan_seq_s: float  # list + target_objects sequential GETs
    full_scan_par_s: float  # list + target_objects GETs on get_par_threads threads
    full_scan_requests: int


CREATE_THREADS = 16
GET_THREADS = 16
CREATE_CHUNK = 2000


def index_body(row: Row, now: datetime) -> bytes:
    """A tiny but real run index (no segments) for one generated run."""
    ended = row.status != "running"
    return (
        RunIndex(
            run_id=row.run_id,
            agent=row.agent,
            metadata={"task": "ticket-1", "user": "u1"},
            status=row.status,
            created_at=row.created_at,
            updated_at=now,
            ended_at=now if ended else None,
            owner_host="host-00",
            owner_pid=4242,
        )
        .model_dump_json()
        .encode()
    )


def bench_listing(
    server: S3Server,
    bucket: str,
    pop: Population,
    target: int,
    budget_s: float,
    list_repeats: int,
    get_seq: int,
    get_par: int,
) -> ListingResult:
    client = server.client()
    prefix = PREFIX + "/"
    rows = pop.rows[:target]
    created = 0
    sizes: list[int] = []
    t0 = time.perf_counter()

    def put(row: Row) -> int:
        body = index_body(row, pop.now)
        client.put_object(Bucket=bucket, Key=prefix + index_key(row.run_id), Body=body)
        return len(body)

    with ThreadPoolExecutor(max_workers=CREATE_THREADS) as pool:
        while created < len(rows):
            elapsed = time.perf_counter() - t0
            if created:
                per_chunk = elapsed / created * CREATE_CHUNK
                if elapsed + per_chunk > budget_s:
                    break
            chunk = rows[created : created + CREATE_CHUNK]
            sizes.extend(pool.map(put, chunk))
            created += len(chunk)
            print(
                f"    {created:,} index objects in {time.perf_counter() - t0:.0f}s",
                file=sys.stderr,
                flush=True,
            )
    create_s = time.perf_counter() - t0
    rate = created / create_s

    counter = HttpCounter()
    store = S3Store(
        s3_settings(server.endpoint_url, bucket), client=counter.attach(server.client())
    )
    list_times: list[float] = []
    found = 0
    for _ in range(list_repeats):
        counter.calls.clear()
        t0 = time.perf_counter()
        found = sum(1 for m in store.list("runs/") if m.key.endswith("/index.json"))
        list_times.append(time.perf_counter() - t0)
    assert found == created, (found, created)
    list_requests = counter.calls["ListObjectsV2"]
    list_median = statistics.median(list_times)
    scale = target / created

    # Per-GET cost of reading an index (GET + parse_index), sequential and threaded,
    # on keys spread over what was created.
    rng = random.Random(11)
    keys = [index_key(r.run_id) for r in rows[:created]]
    seq_keys = rng.sample(keys, min(get_seq, len(keys)))
    par_keys = rng.sample(keys, min(get_par, len(keys)))
    parse_index(store.get(seq_keys[0]).body, seq_keys[0])  # warm
    t0 = time.perf_counter()
    for k in seq_keys:
        parse_index(store.get(k).body, k)
    seq_ms = (time.perf_counter() - t0) / len(seq_keys) * 1e3
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=GET_THREADS) as pool:
        list(pool.map(lambda k: parse_index(store.get(k).body, k), par_keys))
    par_ms = (time.perf_counter() - t0) / len(par_keys) * 1e3
    store.close()
    list_ext_s = list_median * scale
    list_ext_req = math.ceil(target / 1000)
    return ListingResult(
        target_objects=target,
        created=created,
        create_seconds=create_s,
        create_rate=rate,
        create_extrapolated_s=target / rate,
        index_bytes_median=int(statistics.median(sizes)),
        list_seconds=list_times,
        list_median=list_median,
        list_requests=list_requests,
        list_extrapolated_s=list_ext_s,
        list_extrapolated_requests=list_ext_req,
        get_seq_n=len(seq_keys),
        get_seq_ms=seq_ms,
        get_par_n=len(par_keys),
        get_par_threads=GET_THREADS,
        get_par_ms=par_ms,
        full_scan_seq_s=list_ext_s + target * seq_ms / 1e3,
        full_scan_par_s=list_ext_s + target * par_ms / 1e3,
        full_scan_requests=list_ext_req + target,
    )


# --------------------------------------------------------------------------
# 4. concurrent CAS updates
# --------------------------------------------------------------------------


def writer_entry(proc: int, i: int, now: datetime, status: str) -> RunEntry:
    run_id = now.strftime("%Y%m%dT%H%M%S%fZ") + f"-w{proc}-{i:05d}"
    running = status == "running"
    return RunEntry(
        run_id=run_id,
        agent=f"bench-writer-{proc}",
        status=status,
        created_at=now,
        updated_at=datetime.now(UTC),
        ended_at=None if running else datetime.now(UTC),
        owner_host=f"writer-{proc}",
        owner_pid=os.getpid(),
        lease_expires_at=now + timedelta(minutes=5) if running else None,
        last_seq=10,
        records=10,
        stored_bytes=4000,
        metadata={"proc": proc, "i": i},
    )


def writer_main(spec: dict[str, Any], barrier: Any, results: Any) -> None:
    """One writer process: ``runs`` runs, each upsert_active (1 CAS) + finish (2 CAS)."""
    try:
        store = CountingStore(S3Store(s3_settings(spec["endpoint"], spec["bucket"])))
        manifest = Manifest(store, seed=spec["proc"])
        store.head("manifest/none")  # connection and credentials, untimed
        store.reset()
        barrier.wait()
        start = time.time()
        deadline = start + spec["deadline_s"]
        upsert_ms: list[float] = []
        finish_ms: list[float] = []
        ids: list[str] = []
        for i in range(spec["runs"]):
            if time.time() > deadline:
                break
            now = datetime.now(UTC)
            t0 = time.perf_counter()
            manifest.upsert_active(writer_entry(spec["proc"], i, now, "running"))
            t1 = time.perf_counter()
            manifest.finish(writer_entry(spec["proc"], i, now, "completed"))
            t2 = time.perf_counter()
            upsert_ms.append((t1 - t0) * 1e3)
            finish_ms.append((t2 - t1) * 1e3)
            ids.append(writer_entry(spec["proc"], i, now, "running").run_id)
        end = time.time()
        results.put(
            {
                "proc": spec["proc"],
                "runs": len(ids),
                "ids": ids,
                "updates": 3 * len(ids),
                "conflicts": manifest.conflicts,
                "counts": dict(store.counts),
                "bytes_out": store.bytes_out,
                "bytes_in": store.bytes_in,
                "start": start,
                "end": end,
                "upsert_ms": upsert_ms,
                "finish_ms": finish_ms,
            }
        )
        store.close()
    except BaseException as exc:
        results.put({"proc": spec["proc"], "error": repr(exc)})
        raise


@dataclass
class WritersResult:
    case: str
    shard_entries_done: int  # entries in the largest done shard before the run
    writers: int
    runs: int
    updates: int
    conflicts: int
    seconds: float
    updates_per_s: float
    conflicts_per_update: float
    requests: dict[str, int]
    requests_per_update: float
    put_bytes_per_update: float
    upsert_ms_p50: float
    upsert_ms_p99: float
    finish_ms_p50: float
    finish_ms_p99: float
    lost: int  # writer runs missing from done or left in active afterwards
    single_upsert_ms: float  # one writer, nobody else: p50 of upsert_active (1 CAS)
    single_finish_ms: float  # ... and of finish (2 CAS)
    single_requests_per_update: float
    single_runs: int
    spawn_seconds: float
    errors: list[str] = field(default_factory=list)


def single_writer(
    server: S3Server, bucket: str, runs: int
) -> tuple[float, float, float, list[str]]:
    """Uncontended update latency: one Manifest that already knows every shard."""
    store = CountingStore(S3Store(s3_settings(server.endpoint_url, bucket)))
    manifest = Manifest(store)
    manifest.read_all()  # remembers every shard's body and ETag, as a long-lived host
    ids: list[str] = []
    for i in range(2):  # untimed: connections, first writes
        now = datetime.now(UTC)
        manifest.upsert_active(writer_entry(98, i, now, "running"))
        manifest.finish(writer_entry(98, i, now, "completed"))
        ids.append(writer_entry(98, i, now, "running").run_id)
    store.reset()
    ups: list[float] = []
    fins: list[float] = []
    for i in range(runs):
        now = datetime.now(UTC)
        ids.append(writer_entry(99, i, now, "running").run_id)
        t0 = time.perf_counter()
        manifest.upsert_active(writer_entry(99, i, now, "running"))
        t1 = time.perf_counter()
        manifest.finish(writer_entry(99, i, now, "completed"))
        t2 = time.perf_counter()
        ups.append((t1 - t0) * 1e3)
        fins.append((t2 - t1) * 1e3)
    per_update = store.total / (3 * runs)
    store.close()
    return statistics.median(ups), statistics.median(fins), per_update, ids


def bench_writers(
    server: S3Server,
    bucket: str,
    case: str,
    writers: int,
    runs: int,
    deadline_s: float,
    single_runs: int,
) -> WritersResult:
    probe = CountingStore(S3Store(s3_settings(server.endpoint_url, bucket)))
    before = Manifest(probe).read_all(("done",))
    largest = max((sum(1 for r in before if shard_of(r) == s) for s in range(SHARDS)), default=0)
    del before
    single_up, single_fin, single_req, single_ids = single_writer(server, bucket, single_runs)

    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(writers + 1)
    results = ctx.Queue()
    t_spawn = time.perf_counter()
    procs = []
    for p in range(writers):
        spec = {
            "proc": p,
            "endpoint": server.endpoint_url,
            "bucket": bucket,
            "runs": runs,
            "deadline_s": deadline_s,
        }
        proc = ctx.Process(target=writer_main, args=(spec, barrier, results), daemon=True)
        proc.start()
        procs.append(proc)
    barrier.wait(timeout=180)
    spawn_s = time.perf_counter() - t_spawn
    got: list[dict[str, Any]] = []
    errors: list[str] = []
    wait_until = time.monotonic() + deadline_s + 120
    while len(got) + len(errors) < writers:
        try:
            item = results.get(timeout=max(1.0, wait_until - time.monotonic()))
        except queue.Empty:
            errors.append("a writer did not report in time")
            break
        if "error" in item:
            errors.append(f"writer {item['proc']}: {item['error']}")
        else:
            got.append(item)
    for proc in procs:
        proc.join(timeout=30)
        if proc.is_alive():
            proc.terminate()  # only our own child, by its handle
            proc.join(timeout=5)

    counts: Counter[str] = Counter()
    for g in got:
        counts.update(g["counts"])
    updates = sum(g["updates"] for g in got)
    conflicts = sum(g["conflicts"] for g in got)
    seconds = max(g["end"] for g in got) - min(g["start"] for g in got) if got else float("nan")
    ups = [x for g in got for x in g["upsert_ms"]]
    fins = [x for g in got for x in g["finish_ms"]]
    # No lost update: every writer run is in done, none is left in active.
    check = Manifest(probe)
    done = check.read_all(("done",))
    active = check.read_all(("active",))
    ids = [i for g in got for i in g["ids"]] + single_ids
    lost = sum(1 for i in ids if i not in done) + sum(1 for i in ids if i in active)
    probe.close()
    return WritersResult(
        case=case,
        shard_entries_done=largest,
        writers=writers,
        runs=sum(g["runs"] for g in got),
        updates=updates,
        conflicts=conflicts,
        seconds=seconds,
        updates_per_s=updates / seconds if got else 0.0,
        conflicts_per_update=conflicts / updates if updates else float("nan"),
        requests=dict(counts),
        requests_per_update=sum(counts.values()) / updates if updates else float("nan"),
        put_bytes_per_update=sum(g["bytes_out"] for g in got) / updates if updates else 0.0,
        upsert_ms_p50=pct(ups, 50),
        upsert_ms_p99=pct(ups, 99),
        finish_ms_p50=pct(fins, 50),
        finish_ms_p99=pct(fins, 99),
        lost=lost,
        single_upsert_ms=single_up,
        single_finish_ms=single_fin,
        single_requests_per_update=single_req,
        single_runs=single_runs,
        spawn_seconds=spawn_s,
        errors=errors,
    )


# --------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Scale:
    """How much each section does (the full run; ``quick()`` is smaller)."""

    runs: int = 100_000
    running: int = 1_000
    expired: int = 25  # running runs whose lease lapsed (interrupted)
    repeats: int = 5  # per query, fresh Reader each (median reported)
    index_objects: int = 100_000  # runs/<id>/index.json objects for the listing baseline
    create_budget_s: float = 180.0  # stop creating them after this; extrapolate linearly
    list_repeats: int = 1
    get_seq: int = 1000  # sequential index GETs timed for the per-GET estimate
    get_par: int = 4000  # index GETs on 16 threads
    writers: int = 8
    small_runs: int = 25  # per writer, fresh manifest; 3 CAS updates each
    large_runs: int = 4  # per writer, 100k manifest
    writer_deadline_s: float = 60.0  # a writer starts no new run after this
    single_runs: int = 10  # uncontended writer

    @classmethod
    def quick(cls) -> Scale:
        return cls(
            runs=10_000,
            running=100,
            expired=10,
            repeats=3,
            index_objects=10_000,
            create_budget_s=40.0,
            list_repeats=3,
            get_seq=300,
            get_par=1000,
            small_runs=20,
            large_runs=8,
            writer_deadline_s=30.0,
            single_runs=5,
        )


def report(
    env: dict[str, Any],
    pop: PopulateResult,
    qs: list[QueryResult],
    sizes: list[ShardSize],
    bd: Breakdown,
    lst: ListingResult,
    writers: list[WritersResult],
    total_s: float,
) -> tuple[str, list[dict[str, Any]]]:
    out: list[str] = []
    w = out.append
    n = pop.runs
    w("runarchive manifest benchmark")
    w("=" * 100)
    w(
        f"python {env['python']}, {env['cpus']} CPUs, {env['platform']}; SeaweedFS "
        f"(weed mini) on 127.0.0.1, started in {env['seaweed_start_s']:.1f}s; "
        f"temp dir {env['tmp']}"
    )
    w("")
    w(
        f"1. Manifest of {n:,} runs: {pop.finished - pop.failed:,} completed + "
        f"{pop.failed:,} failed + {pop.running:,} running ({pop.expired} with an expired "
        f"lease); {pop.agents} agents; created over {HISTORY_DAYS} days"
    )
    reqs = ", ".join(f"{v} {k}" for k, v in sorted(pop.requests.items()))
    w(
        f"   entries built (RunEntry + model_dump) in {pop.build_seconds:.1f}s; the "
        f"{SHARDS}+{SHARDS} shards written once each with Manifest.update in "
        f"{pop.write_seconds:.2f}s ({reqs})"
    )
    w("")

    base_list = lst.list_extrapolated_s
    base_scan = lst.full_scan_par_s
    ext = " (extrapolated)" if lst.created < lst.target_objects else ""
    w(
        f"2. Queries from a fresh process (a new host): Reader.open(url) then the call; a "
        f"fresh Reader per repeat after one untimed warm-up; median of {len(qs[0].call_seconds)}"
    )
    w(
        f"  {'query':<58} {'results':>8} {'call s':>7} {'open+call':>9} {'req':>4} "
        f"{'MiB read':>8} {'vs list+GETs':>12} {'ok':>3}"
    )
    w("  " + "-" * 116)
    for q in qs:
        w(
            f"  {q.label:<58} {q.results:>8,} {q.call_median:>7.3f} {q.total_median:>9.3f} "
            f"{q.requests:>4} {q.bytes_read / 2**20:>8.2f} {base_scan / q.total_median:>11.0f}x "
            f"{'yes' if q.correct else 'NO':>3}"
        )
    w(
        "  req = requests counted by reader.store (all GETs of shard objects); ok = count and "
        "content as generated (newest first, filters hold, interrupted = the expired leases)"
    )
    w(
        f"  'vs list+GETs' = the manifest-less way to answer the same query at {n:,} runs: "
        f"list runs/ and GET every index on {lst.get_par_threads} threads, "
        f"{base_scan:.1f}s{ext} (section 3)"
    )
    opens = [t - c for q in qs for t, c in zip(q.total_seconds, q.call_seconds, strict=True)]
    w(f"  Reader.open alone (config + boto3 session, client): {statistics.median(opens):.3f}s")
    w("")

    w(
        f"3. Baseline without a manifest: ListObjectsV2 over runs/ holding one index.json per "
        f"run (median index {lst.index_bytes_median} B, no segments)"
    )
    w(
        f"   created {lst.created:,} of {lst.target_objects:,} index objects in "
        f"{lst.create_seconds:.1f}s with {CREATE_THREADS} threads ({lst.create_rate:,.0f} PUT/s)"
        + (
            f"; all {lst.target_objects:,} would take ~{lst.create_extrapolated_s:.0f}s, so the "
            "listing below is extrapolated linearly from the objects created"
            if lst.created < lst.target_objects
            else ""
        )
    )
    lt = ", ".join(f"{t:.2f}" for t in lst.list_seconds)
    w(
        f"   listing {lst.created:,} keys: {lst.list_median:.2f}s (runs: {lt}), "
        f"{lst.list_requests} ListObjectsV2 requests (counted on the wire); "
        f"{lst.list_median / lst.created * 1e6:.0f} us per key"
    )
    w(
        f"   one index GET + parse_index: {lst.get_seq_ms:.2f} ms sequential ({lst.get_seq_n:,} "
        f"timed), {lst.get_par_ms:.3f} ms wall per GET on {lst.get_par_threads} threads "
        f"({lst.get_par_n:,} timed)"
    )
    full = next(q for q in qs if "limit=None)  (every" in q.label)
    intr = next(q for q in qs if q.label.startswith("interrupted"))
    head = f"method, at {n:,} runs"
    w(f"  {head:<70} {'seconds':>8} {'requests':>9} {'vs manifest':>11}")
    w("  " + "-" * 102)

    def brow(label: str, seconds: float, requests: int, ref: QueryResult) -> None:
        w(f"  {label:<70} {seconds:>8.2f} {requests:>9,} {seconds / ref.total_median:>10.1f}x")

    brow("manifest: list_runs(limit=None), fresh Reader", full.total_median, full.requests, full)
    brow(
        f"list runs/ (ids only: no status, agent, owner, lease){ext}",
        base_list,
        lst.list_extrapolated_requests,
        full,
    )
    brow(
        f"list runs/ + GET every index, {lst.get_par_threads} threads{ext}",
        lst.full_scan_par_s,
        lst.full_scan_requests,
        full,
    )
    brow(
        f"list runs/ + GET every index, sequential{ext}",
        lst.full_scan_seq_s,
        lst.full_scan_requests,
        full,
    )
    brow("manifest: interrupted(), fresh Reader", intr.total_median, intr.requests, intr)
    brow(
        f"interrupted without manifest: list + GET every index, {lst.get_par_threads} threads",
        lst.full_scan_par_s,
        lst.full_scan_requests,
        intr,
    )
    w(
        "  the index has no lease: without a manifest a scan can find running runs but not tell "
        "a live one from an interrupted one (it would need another heartbeat object per run)"
    )
    w(
        f"  optimistic for the baseline: real runs also hold segments under runs/<id>/seg/, "
        f"so listing runs/ returns >= 2 keys per run; real indexes are larger than "
        f"{lst.index_bytes_median} B"
    )
    w("")

    w(
        f"4. Manifest CAS updates: {writers[0].writers} writer processes, each running its own "
        "runs through upsert_active (1 CAS on an active shard) + finish (done + active: 2 CAS),"
    )
    w(f"   all on the same {SHARDS}+{SHARDS} shards; started together on a barrier")
    w(
        f"  {'case':<30} {'done shard':>10} {'runs':>5} {'updates':>7} {'secs':>6} "
        f"{'upd/s':>7} {'confl/upd':>9} {'req/upd':>7} {'KiB PUT/upd':>11} "
        f"{'upsert p50/p99 ms':>18} {'finish p50/p99 ms':>18} {'lost':>4}"
    )
    w("  " + "-" * 140)
    for r in writers:
        w(
            f"  {r.case:<30} {r.shard_entries_done:>10,} {r.runs:>5} {r.updates:>7} "
            f"{r.seconds:>6.1f} {r.updates_per_s:>7.1f} {r.conflicts_per_update:>9.2f} "
            f"{r.requests_per_update:>7.2f} {r.put_bytes_per_update / 1024:>11.1f} "
            f"{r.upsert_ms_p50:>8.0f} / {r.upsert_ms_p99:<7.0f} "
            f"{r.finish_ms_p50:>8.0f} / {r.finish_ms_p99:<7.0f} {r.lost:>4}"
        )
    for r in writers:
        ops = ", ".join(f"{k} {v}" for k, v in sorted(r.requests.items()))
        w(
            f"  {r.case}: requests {ops}; one writer alone (shards known): upsert_active "
            f"{r.single_upsert_ms:.1f} ms, finish {r.single_finish_ms:.1f} ms (2 CAS), "
            f"{r.single_requests_per_update:.2f} requests/update"
        )
        for err in r.errors:
            w(f"  ERROR {err}")
    w(
        "  done shard = entries in the largest done shard before the case; lost = writer runs "
        "missing from done or still in active afterwards (must be 0)"
    )
    w("")

    w(f"5. Shard objects at {n:,} runs (zstd level 3, as Manifest writes them)")
    w(f"  {'object':<28} {'entries':>8} {'compressed':>12} {'uncompressed':>14} {'ratio':>6}")
    w("  " + "-" * 72)
    for s in sizes:
        w(
            f"  {shard_key(s.kind, s.shard):<28} {s.entries:>8,} {s.compressed:>12,} "
            f"{s.uncompressed:>14,} {s.uncompressed / max(1, s.compressed):>5.1f}x"
        )
    for kind in KINDS:
        ks = [s for s in sizes if s.kind == kind]
        c = sum(s.compressed for s in ks)
        u = sum(s.uncompressed for s in ks)
        e = sum(s.entries for s in ks)
        w(
            f"  {'total ' + kind:<28} {e:>8,} {c:>12,} {u:>14,} {u / max(1, c):>5.1f}x   "
            f"({c / max(1, e):.0f} B/entry compressed, {u / max(1, e):.0f} B/entry JSON)"
        )
    w(
        f"  a full listing taken apart ({bd.entries:,} entries, same fresh process, one thread, "
        "shard bodies in memory; median of 3; 'gc off' = inside gc.disable()):"
    )
    w(
        f"    16 GETs on 16 threads {bd.get_parallel_s:.3f}s | zstd {bd.zstd_s:.3f}s | "
        f"orjson.loads {bd.orjson_s:.3f}s (gc off {bd.orjson_nogc_s:.3f}s) | "
        f"_decode all 16 {bd.decode_s:.3f}s (gc off {bd.decode_nogc_s:.3f}s)"
    )
    w(
        f"    merge + sort of raw dicts {bd.merge_sort_s:.3f}s | RunEntry.model_validate of "
        f"every entry, kept {bd.validate_s:.3f}s = {bd.validate_us_per_entry:.1f} us/entry "
        f"(gc off {bd.validate_nogc_s:.3f}s = {bd.validate_nogc_us_per_entry:.1f} us/entry)"
    )
    w(
        f"    Manifest.entries(limit=None) on a MemoryStore copy (no network): "
        f"{bd.entries_mem_s:.3f}s; with gc off {bd.entries_mem_nogc_s:.3f}s"
    )
    w(
        f"    what a Manifest keeps after one read_all() (_known: compressed bodies + ETags): "
        f"{bd.known_mib:,.1f} MiB beyond the bodies themselves (tracemalloc)"
    )
    w(
        f"  one write of the largest done shard ({bd.largest_done_entries:,} entries, "
        f"{bd.largest_done_compressed / 1024:,.0f} KiB): _encode {bd.encode_done_shard_s * 1e3:.0f}"
        f" ms; reading it back (_decode) {bd.decode_done_shard_s * 1e3:.0f} ms"
    )
    w("")

    targets: list[dict[str, Any]] = []
    for q in qs:
        if "default limit" in q.label:
            continue
        targets.append(
            {
                "target": f"{q.label.split('  ')[0]}: <= {TARGET_SECONDS:g} s, "
                f"<= {TARGET_REQUESTS} req",
                "value": f"{q.total_median:.3f}s (call {q.call_median:.3f}s), {q.requests} "
                f"requests, {q.results:,} results{'' if q.correct else ' WRONG'}",
                "pass": q.total_median <= TARGET_SECONDS
                and q.requests <= TARGET_REQUESTS
                and q.correct,
            }
        )
    for r in writers:
        targets.append(
            {
                "target": f"no lost update, {r.case}",
                "value": f"{r.lost} lost of {r.runs + r.single_runs} runs; "
                f"{r.updates_per_s:.1f} updates/s",
                "pass": r.lost == 0 and not r.errors,
            }
        )
    w(f"targets (at {n:,} runs; time = median of Reader.open + call, a fresh host's cost)")
    w("-" * 100)
    for t in targets:
        w(f"  {'PASS' if t['pass'] else 'MISS'}  {t['target']:<72} {t['value']}")
    w("")
    w(f"total runtime {total_s:.1f}s")
    return "\n".join(out), targets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="10,000 runs, smaller samples")
    parser.add_argument(
        "--json",
        nargs="?",
        const=str(Path(tempfile.gettempdir()) / "runarchive-bench-manifest.json"),
        metavar="PATH",
        help="also write the results as JSON (default path: %(const)s)",
    )
    args = parser.parse_args(argv)
    scale = Scale.quick() if args.quick else Scale()

    def step(msg: str, t: float) -> None:
        print(f"  {msg} in {time.perf_counter() - t:.1f}s", file=sys.stderr, flush=True)

    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rabench-manifest-") as tmp_name:
        tmp = Path(tmp_name)
        weed = SeaweedFS(tmp / "weed")
        with weed as server, aws_env(server):
            env = {
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "platform": platform.platform(terse=True),
                "seaweed_start_s": weed.startup_seconds or 0.0,
                "tmp": tempfile.gettempdir(),
                "quick": args.quick,
                "scale": dataclasses.asdict(scale),
            }
            print(
                f"SeaweedFS up at {server.endpoint_url}; running (quick={args.quick})...",
                file=sys.stderr,
                flush=True,
            )
            bucket = server.make_bucket("bench-manifest")
            warm_bucket(server, bucket)
            store = CountingStore(S3Store(s3_settings(server.endpoint_url, bucket)))

            t = time.perf_counter()
            now = datetime.now(UTC)
            population = make_population(scale.runs, scale.running, scale.expired, now)
            populate = write_population(store, population)
            population.shards.clear()  # the bucket has them now
            step(f"populated {scale.runs:,} runs", t)

            store.close()
            t = time.perf_counter()
            sizes, breakdown, qs = run_readers(
                server.endpoint_url, bucket, expectations(population), scale.repeats
            )
            step("shard sizes, read-path breakdown and queries (fresh process)", t)

            t = time.perf_counter()
            listing = bench_listing(
                server,
                bucket,
                population,
                scale.index_objects,
                scale.create_budget_s,
                scale.list_repeats,
                scale.get_seq,
                scale.get_par,
            )
            step("listing baseline", t)

            t = time.perf_counter()
            small_bucket = server.make_bucket("bench-writers")
            warm_bucket(server, small_bucket)
            writers = [
                bench_writers(
                    server,
                    small_bucket,
                    "small: fresh manifest",
                    scale.writers,
                    scale.small_runs,
                    scale.writer_deadline_s,
                    scale.single_runs,
                )
            ]
            step("writers on a fresh manifest", t)
            t = time.perf_counter()
            writers.append(
                bench_writers(
                    server,
                    bucket,
                    f"large: {scale.runs:,}-run manifest",
                    scale.writers,
                    scale.large_runs,
                    scale.writer_deadline_s,
                    scale.single_runs,
                )
            )
            step(f"writers on the {scale.runs:,}-run manifest", t)
    total_s = time.perf_counter() - began
    text, targets = report(env, populate, qs, sizes, breakdown, listing, writers, total_s)
    print(text)
    if args.json:
        payload = {
            "env": env,
            "populate": dataclasses.asdict(populate),
            "queries": [dataclasses.asdict(q) for q in qs],
            "shard_sizes": [dataclasses.asdict(s) for s in sizes],
            "breakdown": dataclasses.asdict(breakdown),
            "listing_baseline": dataclasses.asdict(listing),
            "writers": [dataclasses.asdict(r) for r in writers],
            "targets": targets,
            "total_seconds": total_s,
        }
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
        print(f"results written to {args.json}")
    return 0  # a benchmark, not a test: MISS is reported, not an error


if __name__ == "__main__":
    sys.exit(main())
