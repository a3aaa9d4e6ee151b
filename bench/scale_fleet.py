"""Fleet scale of the manifest (issue 13, parts 3 and the fleet half of 4).

``.venv/bin/python bench/scale_fleet.py [--quick] [--seaweed] [--json [PATH]]``

1. **finish() at 1,000 vs 1,000,000 finished runs.** The done partitions of the big
   archive are written directly through the store (one object per writer process and
   hour, as the real layout; the bodies are copies of a template — finish() never reads
   another process's objects, so their contents cannot matter). Then the real
   ``Manifest.finish`` of a fresh writer is timed, with the requests and bytes it writes.
   Memory store: no network, so the ratio isolates what grows with the archive.

2. **Fleet simulation: 1,000 hosts, 1,000,000 runs.** Why a discrete-event simulation
   with a virtual clock driving the *real* manifest code on a memory store (rather
   than a model of it): the request counts, keys and bytes are then those the code
   makes, not our idea of them; the virtual clock (``utcnow`` of the manifest modules
   and the store's LastModified) lets a simulated half hour run in about 1.5 minutes
   on 2 cores (the scale trick: half an hour, not a month). One process per host;
   10 running runs each (10,000 running), mean run length 1 h, so 10,000 finishes/h;
   leases of 60 s renewed every 20 s; 1 % of hosts die during the first half and a
   monitor (interrupted() + the first page of list_runs()
   every minute) takes their runs over once their lease passed. The archive starts
   with 1,000,000 finished runs (100 h of history). Events run one at a time, so a 412
   happens exactly when another writer wrote the key since this writer last did —
   which is when real concurrent writers could collide; with format 1 every renewal
   of every host went to the same 8 keys. Figures: requests per second per key (the
   hot spots), 412s per 1,000 renewals, and the month's bill at S3 Standard list
   prices (the simulated half hour x 1,440 — the fleet is in steady state from its
   first minute: each host renews 90 times in it; manifest requests and storage only,
   the runs' own segments and indexes are the same in both formats).

3. **interrupted() at 10,000 running runs on 1,000 hosts** on the simulated fleet
   (requests) and, with ``--seaweed``, on a real SeaweedFS (1,000 writer objects of
   10 runs, 5 of them stale): latency and requests. ``--seaweed`` also runs several
   processes x many runs through the real ``Archive`` and reports finish latency,
   412s and the manifest's objects.
"""

from __future__ import annotations

import argparse
import bisect
import heapq
import json
import math
import multiprocessing as mp
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))

from common import aws_env, warm_bucket  # noqa: E402
from support.servers import SeaweedFS  # noqa: E402

import runarchive.engine.manifest.core as manifest_mod  # noqa: E402
import runarchive.engine.manifest.listing as list_mod  # noqa: E402
import runarchive.engine.manifest.live as live_mod  # noqa: E402
from runarchive import Archive  # noqa: E402
from runarchive.engine.manifest.core import Manifest, RunEntry  # noqa: E402
from runarchive.engine.manifest.format import DONE_CAP, done_key, encode, new_writer_key  # noqa: E402
from runarchive.store import (  # noqa: E402
    CountingStore,
    MemoryStore,
    ObjectMeta,
    S3Settings,
    S3Store,
    Store,
)

PRICE_PUT = 0.005 / 1000  # PUT, COPY, POST, LIST per request (S3 Standard, us-east-1)
PRICE_GET = 0.0004 / 1000
PRICE_GB_MONTH = 0.023
HOURS_PER_MONTH = 720


class Clock:
    """The simulation's time: ``utcnow`` of the manifest modules while installed."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


@contextmanager
def virtual_time(clock: Clock) -> Iterator[None]:
    mods = (manifest_mod, live_mod, list_mod)
    saved = [m.utcnow for m in mods]  # type: ignore[attr-defined]
    for m in mods:
        m.utcnow = clock  # type: ignore[attr-defined]
    try:
        yield
    finally:
        for m, f in zip(mods, saved, strict=True):
            m.utcnow = f  # type: ignore[attr-defined]


class SimStore(MemoryStore):
    """A memory store whose LastModified is the simulation's clock, with a sorted key
    index so that a LIST costs what it returns (MemoryStore scans every key: with
    100,000 done objects that, not the manifest, was 2/3 of the simulation's time)."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock
        self._sorted: list[str] = []
        self._etags: dict[str, str] = {}

    def put(
        self, key: str, body: bytes, *, mode: Any = "overwrite", immutable: bool = False
    ) -> str:
        etag = super().put(key, body, mode=mode, immutable=immutable)
        with self._lock:
            self._modified[key] = self.clock.now
            if key not in self._etags:
                bisect.insort(self._sorted, key)
            self._etags[key] = etag
        return etag

    def delete(self, key: str, *, bypass_governance: bool = False) -> None:
        super().delete(key, bypass_governance=bypass_governance)
        with self._lock:
            if self._etags.pop(key, None) is not None:
                self._sorted.pop(bisect.bisect_left(self._sorted, key))

    def list(self, prefix: str = "") -> Iterator[ObjectMeta]:
        with self._lock:
            lo = bisect.bisect_left(self._sorted, prefix)
            hi = bisect.bisect_left(self._sorted, prefix + "\U0010ffff")
            items = [
                ObjectMeta(k, len(self._objects[k]), self._etags[k], self._modified[k])
                for k in self._sorted[lo:hi]
            ]
        yield from items


class KeyCounter(CountingStore):
    """Counts requests per key too (and which writer wrote each key)."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner)
        self.by_key: Counter[str] = Counter()
        self.by_op: Counter[str] = Counter()
        self.conflict_keys: Counter[str] = Counter()

    def _count(self, op: str, key: str, bytes_in: int = 0, bytes_out: int = 0) -> None:
        super()._count(op, key, bytes_in, bytes_out)
        with self._lock:
            self.by_key[key] += 1
            self.by_op[op] += 1

    def put(
        self, key: str, body: bytes, *, mode: Any = "overwrite", immutable: bool = False
    ) -> str:
        try:
            return super().put(key, body, mode=mode, immutable=immutable)
        except Exception:
            with self._lock:
                self.conflict_keys[key] += 1
            raise


def entry(run_id: str, host: str, now: datetime, **fields: Any) -> RunEntry:
    base: dict[str, Any] = {
        "run_id": run_id,
        "agent": f"agent-{hash(run_id) % 12}",
        "created_at": now,
        "updated_at": now,
        "owner_host": host,
        "owner_pid": 1000,
        "epoch": 1,
        "lease_expires_at": now + timedelta(seconds=60),
        "last_seq": 10,
        "records": 10,
        "stored_bytes": 4096,
        "metadata": {"ticket": "OPS-1"},
    }
    return RunEntry(**{**base, **fields})


def populate_done(store: Store, runs: int, writers: int, end: datetime) -> int:
    """Write ``runs`` finished runs as done partitions: each of ``writers`` processes
    finishes the same number per hour, in the hours before ``end``. One template body
    per object size (see the module docstring). Returns the objects written."""
    per_hour = max(1, writers * 10)  # 10 finishes per process and hour
    hours = math.ceil(runs / per_hour)
    per_object = min(DONE_CAP, max(1, runs // (hours * writers)))
    t = end - timedelta(hours=hours)
    template = encode(
        {
            "format": 2,
            "kind": "done",
            "writer": "template",
            "partition": "template",
            "runs": {
                f"old-{i}": entry(f"old-{i}", "h", t, status="completed", ended_at=t).model_dump(
                    mode="json"
                )
                for i in range(per_object)
            },
        }
    )
    keys = [new_writer_key(f"h{w:04d}", 1000, 60) for w in range(writers)]
    written = 0
    objects = 0
    for h in range(hours):
        ts = t + timedelta(hours=h)
        day, hour = ts.strftime("%Y%m%d"), ts.strftime("%H")
        for w in keys:
            if written >= runs:
                break
            store.put(done_key(day, hour, w, 0), template)
            written += per_object
            objects += 1
    return objects


# -- 1. finish() at 1,000 vs 1,000,000 --------------------------------------------------


class _FinishSetup:
    """An archive of ``archive_runs`` finished runs and a writer with ``samples``
    running runs to finish."""

    def __init__(self, archive_runs: int, samples: int) -> None:
        self.store = CountingStore(MemoryStore())
        self.now = datetime.now(UTC)
        writers = 1000 if archive_runs >= 100_000 else 10
        self.archive_runs = archive_runs
        self.objects = populate_done(self.store, archive_runs, writers, self.now)
        self.m = Manifest(self.store, host="measured", pid=1, seed=1)
        for i in range(samples):
            self.m.upsert_active(entry(f"m-{i}", "measured", self.now))
        self.times: list[float] = []
        self.requests: list[int] = []
        self.sizes: list[int] = []

    def finish(self, i: int) -> None:
        before_req, before_bytes = self.store.total, self.store.bytes_out
        done = entry(f"m-{i}", "measured", self.now, status="completed", ended_at=self.now)
        t0 = time.perf_counter()
        self.m.finish(done)
        self.times.append(time.perf_counter() - t0)
        self.requests.append(self.store.total - before_req)
        self.sizes.append(self.store.bytes_out - before_bytes)

    def figures(self) -> dict[str, Any]:
        return {
            "archive_runs": self.archive_runs,
            "done_objects": self.objects,
            "finish_ms_median": statistics.median(self.times) * 1000,
            "finish_ms_p95": sorted(self.times)[int(0.95 * (len(self.times) - 1))] * 1000,
            "requests_per_finish": statistics.mean(self.requests),
            "bytes_per_finish": statistics.mean(self.sizes),
            "bytes_per_finish_max": max(self.sizes),
        }


def finish_scaling(small: int = 1000, big: int = 1_000_000, samples: int = 300) -> dict[str, Any]:
    """finish() of one writer in an archive of ``small`` vs ``big`` finished runs. The
    two are measured alternately, so that load on the machine hits both alike."""
    a, b = _FinishSetup(small, samples), _FinishSetup(big, samples)
    for i in range(samples):
        a.finish(i)
        b.finish(i)
    fa, fb = a.figures(), b.figures()
    return {
        "small": fa,
        "big": fb,
        "time_ratio": fb["finish_ms_median"] / fa["finish_ms_median"],
        "bytes_ratio": fb["bytes_per_finish"] / fa["bytes_per_finish"],
        "requests_ratio": fb["requests_per_finish"] / fa["requests_per_finish"],
    }


# -- 2. the fleet simulation -----------------------------------------------------------


def simulate_fleet(
    hosts: int = 1000,
    running_per_host: int = 10,
    archive_runs: int = 1_000_000,
    hours: float = 0.5,
    mean_run_s: float = 3600.0,
    lease_s: int = 60,
    dead_fraction: float = 0.01,
    seed: int = 1,
) -> dict[str, Any]:
    rng = random.Random(seed)
    start = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    clock = Clock(start)
    store = KeyCounter(SimStore(clock))
    populate_done(store, archive_runs, hosts, start)
    store.reset()
    store.by_key.clear()
    store.by_op.clear()
    wall = time.perf_counter()
    end = start + timedelta(hours=hours)
    names = [f"h{i:04d}" for i in range(hosts)]
    with virtual_time(clock):
        writers = {
            h: Manifest(store, host=h, pid=1000, lease_seconds=lease_s, seed=i)
            for i, h in enumerate(names)
        }
        running: dict[str, dict[str, RunEntry]] = {h: {} for h in names}
        events: list[tuple[datetime, int, str, str, str]] = []
        seq = 0

        def push(at: datetime, kind: str, host: str, run: str = "") -> None:
            nonlocal seq
            seq += 1
            heapq.heappush(events, (at, seq, kind, host, run))

        def start_run(host: str) -> None:
            run_id = f"{host}-{seq:08d}"
            e = entry(
                run_id, host, clock.now, lease_expires_at=clock.now + timedelta(seconds=lease_s)
            )
            running[host][run_id] = e
            writers[host].upsert_active(e)
            push(
                clock.now + timedelta(seconds=rng.expovariate(1 / mean_run_s)),
                "finish",
                host,
                run_id,
            )

        for h in names:  # the fleet as it was at the start: already running
            for _ in range(running_per_host):
                start_run(h)
            push(start + timedelta(seconds=rng.uniform(0, lease_s / 3)), "renew", h)
        store.reset()
        store.by_key.clear()
        store.by_op.clear()
        for m in writers.values():
            m._next_cleanup = 0.0  # every process sweeps its host once, as at its start
        dead = set(rng.sample(names, int(hosts * dead_fraction)))
        for h in dead:
            push(start + timedelta(seconds=rng.uniform(0, hours * 3600 / 2)), "die", h)
        for k in range(int(hours * 60)):
            push(start + timedelta(minutes=k, seconds=30), "monitor", "monitor")
        gone: set[str] = set()
        renewals = finishes = takeovers = 0
        monitor = Manifest(store)
        interrupted_reqs: list[int] = []
        next_sweep = start + timedelta(minutes=10)
        while events and events[0][0] < end:
            at, _, kind, host, run = heapq.heappop(events)
            clock.now = at
            if at >= next_sweep:  # CLEANUP_EVERY of real time, on the virtual clock
                next_sweep += timedelta(minutes=10)
                for m in writers.values():
                    m._next_cleanup = 0.0
            if host in gone:
                continue
            if kind == "renew":
                lease = clock.now + timedelta(seconds=lease_s)
                group = [
                    e.model_copy(update={"lease_expires_at": lease, "updated_at": clock.now})
                    for e in running[host].values()
                ]
                lost = writers[host].renew(group)
                for r in lost:
                    running[host].pop(r, None)
                renewals += 1
                push(at + timedelta(seconds=lease_s / 3), "renew", host)
            elif kind == "finish":
                e = running[host].pop(run, None)
                if e is None:
                    continue  # taken over meanwhile
                writers[host].finish(
                    e.model_copy(
                        update={
                            "status": "completed",
                            "ended_at": clock.now,
                            "updated_at": clock.now,
                            "lease_expires_at": None,
                        }
                    )
                )
                finishes += 1
                start_run(host)
            elif kind == "die":
                gone.add(host)
            elif kind == "monitor":
                before = store.total
                found = monitor.interrupted()
                interrupted_reqs.append(store.total - before)
                monitor.page(limit=100)
                for e in found:  # a rescuer takes each over (epoch + 1), as resume() does
                    rescuer = rng.choice([h for h in names if h not in gone])
                    writers[rescuer].moved(e.run_id, e.owner_host, e.owner_pid)
                    taken = e.model_copy(
                        update={
                            "epoch": e.epoch + 1,
                            "owner_host": rescuer,
                            "lease_expires_at": clock.now + timedelta(seconds=lease_s),
                        }
                    )
                    writers[rescuer].upsert_active(taken)
                    running[rescuer][e.run_id] = taken
                    push(
                        clock.now + timedelta(seconds=rng.expovariate(1 / mean_run_s)),
                        "finish",
                        rescuer,
                        e.run_id,
                    )
                    takeovers += 1
        clock.now = end
        # interrupted() at the end: 10,000 running runs on the live hosts.
        store.reset()
        t0 = time.perf_counter()
        still = Manifest(store).interrupted()
        interrupted_s = time.perf_counter() - t0
        interrupted_counts = dict(store.counts)
        live_objects = sum(1 for _ in store.inner.list("manifest/live/"))
    sim_seconds = hours * 3600
    by_key = store.by_key
    top = [
        {"key": k, "requests": n, "per_second": n / sim_seconds} for k, n in by_key.most_common(8)
    ]
    conflicts = sum(m.conflicts for m in writers.values())
    live_conflicts = sum(n for k, n in store.conflict_keys.items() if "/live/" in k)
    puts_lists = sum(n for op, n in store.by_op.items() if op in ("put", "list", "delete"))
    gets = store.by_op.get("get", 0)
    storage_bytes = sum(len(store.inner.get(m.key).body) for m in store.inner.list("manifest/"))
    month = {
        "put_list_requests": puts_lists * HOURS_PER_MONTH / hours,
        "get_requests": gets * HOURS_PER_MONTH / hours,
    }
    month["requests_usd"] = (
        month["put_list_requests"] * PRICE_PUT + month["get_requests"] * PRICE_GET
    )
    # The archive grows by the month's finishes: storage at the month's end.
    per_run = storage_bytes / max(1, archive_runs + finishes)
    month_end_runs = archive_runs + finishes * HOURS_PER_MONTH / hours
    month["storage_gb_at_month_end"] = per_run * month_end_runs / 1e9
    month["storage_usd"] = month["storage_gb_at_month_end"] * PRICE_GB_MONTH
    month["total_usd"] = month["requests_usd"] + month["storage_usd"]
    return {
        "hosts": hosts,
        "running_runs": hosts * running_per_host,
        "archive_runs_at_start": archive_runs,
        "simulated_hours": hours,
        "wall_seconds": time.perf_counter() - wall,
        "renewals": renewals,
        "finishes": finishes,
        "takeovers": takeovers,
        "requests_by_op": dict(store.by_op),
        "hot_keys": top,
        "max_requests_per_second_per_key": top[0]["per_second"] if top else 0.0,
        "conflicts_total": conflicts,
        "live_object_conflicts": live_conflicts,
        "conflicts_per_1000_renewals": 1000 * live_conflicts / max(1, renewals),
        "interrupted_end": {
            "seconds_memory_store": interrupted_s,
            "requests": interrupted_counts,
            "s3_list_pages": math.ceil(live_objects / 1000) + 1,
            "found": len(still),
        },
        "interrupted_monitor_requests_max": max(interrupted_reqs, default=0),
        "manifest_bytes": storage_bytes,
        "bytes_per_finished_run": per_run,
        "month": month,
    }


# -- 3. SeaweedFS ------------------------------------------------------------------------


def _child(url: str, settings: dict[str, Any], cache: str, host: str, runs: int, out: Any) -> None:
    times: list[float] = []
    with Archive.open(url, cache_dir=cache, host_id=host, **settings) as archive:
        for i in range(runs):
            run = archive.start_run(agent="fleet", run_id=f"{host}-{i:05d}")
            run.event("step", {"i": i})
            run.flush()
            t0 = time.perf_counter()
            run.complete()
            run.flush()  # the finish: index status, done object, live object
            times.append(time.perf_counter() - t0)
        conflicts = archive.engine.manifest.conflicts
    out.put({"host": host, "finish_s": times, "conflicts": conflicts})


def seaweed_fleet(
    processes: int = 4, runs_per_process: int = 150, writers: int = 1000
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="rafleet-") as tmp_name:
        tmp = Path(tmp_name)
        with SeaweedFS(tmp / "weed") as server, aws_env(server):
            bucket = server.make_bucket("fleet")
            warm_bucket(server, bucket)
            # Not conftest's helpers: importing conftest (as the spawned children
            # re-import this module) replaces the credentials with moto's.
            settings = {
                "endpoint_url": server.endpoint_url,
                "region": server.region,
                "addressing_style": "path",
                "lease_seconds": 30,
                "flush_age": 3600,
            }
            ctx = mp.get_context("spawn")
            q: Any = ctx.Queue()
            procs = [
                ctx.Process(
                    target=_child,
                    args=(
                        server.url(bucket, "a"),
                        settings,
                        str(tmp / f"c{i}"),
                        f"p{i}",
                        runs_per_process,
                        q,
                    ),
                )
                for i in range(processes)
            ]
            t0 = time.perf_counter()
            for p in procs:
                p.start()
            results = [q.get(timeout=900) for _ in procs]
            for p in procs:
                p.join()
            elapsed = time.perf_counter() - t0
            finish = [t for r in results for t in r["finish_s"]]
            # interrupted() at 10,000 running runs on `writers` processes, 5 stale.
            store = S3Store(
                S3Settings(
                    bucket=bucket,
                    prefix="b",
                    endpoint_url=server.endpoint_url,
                    region=server.region,
                    addressing_style="path",
                )
            )
            now = datetime.now(UTC)

            fleet: dict[int, tuple[Manifest, list[RunEntry]]] = {}

            def fill(w: int) -> None:
                # 5 processes with a 3 s lease stop renewing: stale by the time we look.
                m = Manifest(store, host=f"w{w:04d}", pid=w + 1, lease_seconds=3 if w < 5 else 60)
                runs = [entry(f"w{w}-{j}", f"w{w:04d}", now) for j in range(10)]
                for e in runs:
                    m.upsert_active(e)
                fleet[w] = (m, runs)

            def renew(w: int) -> None:
                m, runs = fleet[w]
                m.renew(runs)

            with ThreadPoolExecutor(32) as pool:
                list(pool.map(fill, range(writers)))
                time.sleep(4)
                # The healthy ones renew as they do every 20 s (filling took longer).
                list(pool.map(renew, range(5, writers)))
            counting = CountingStore(store)
            t1 = time.perf_counter()
            found = Manifest(counting).interrupted()
            interrupted_s = time.perf_counter() - t1
            interrupted_counts = dict(counting.counts)
            listed = Manifest(counting)
            counting.reset()
            t2 = time.perf_counter()
            page = listed.page(limit=1000)
            page_s = time.perf_counter() - t2
            return {
                "processes": processes,
                "runs": processes * runs_per_process,
                "elapsed_s": elapsed,
                "finish_ms_median": statistics.median(finish) * 1000,
                "finish_ms_p95": sorted(finish)[int(0.95 * (len(finish) - 1))] * 1000,
                "manifest_conflicts": sum(r["conflicts"] for r in results),
                "interrupted_writers": writers,
                "interrupted_running_runs": writers * 10,
                "interrupted_seconds": interrupted_s,
                "interrupted_found": len(found),
                "interrupted_requests": interrupted_counts,
                "first_page_seconds": page_s,
                "first_page_runs": len(page),
                "first_page_requests": dict(counting.counts),
            }


# -- report ----------------------------------------------------------------------------


def figures(quick: bool = False, seaweed: bool = False) -> dict[str, Any]:
    """Every figure of this benchmark, as a dict (``quick``: tiny sizes, seconds)."""
    out: dict[str, Any] = {}
    if quick:
        out["finish"] = finish_scaling(100, 20_000, samples=40)
        out["fleet"] = simulate_fleet(hosts=30, archive_runs=5_000, hours=0.05)
    else:
        out["finish"] = finish_scaling()
        out["fleet"] = simulate_fleet()
    if seaweed:
        out["seaweed"] = seaweed_fleet(2, 20, 50) if quick else seaweed_fleet()
    return out


def _finish_line(r: dict[str, Any]) -> str:
    return (
        f"  {r['archive_runs']:>9,} runs: {r['finish_ms_median']:.2f} ms, "
        f"{r['requests_per_finish']:.1f} requests, {r['bytes_per_finish']:,.0f} B"
    )


def report(f: dict[str, Any]) -> str:
    """The figures as text."""
    fin, fleet = f["finish"], f["fleet"]
    month = {k: round(v, 2) for k, v in fleet["month"].items()}
    lines = [
        "finish() — real code, memory store, median of samples",
        _finish_line(fin["small"]),
        _finish_line(fin["big"]),
        f"  ratio time {fin['time_ratio']:.2f}x, bytes {fin['bytes_ratio']:.2f}x (goal <= 2x)",
        "",
        f"fleet simulation — {fleet['hosts']} hosts, {fleet['running_runs']:,} running, "
        f"{fleet['archive_runs_at_start']:,} finished at start, {fleet['simulated_hours']} h "
        f"simulated in {fleet['wall_seconds']:.0f} s",
        f"  renewals {fleet['renewals']:,}, finishes {fleet['finishes']:,}, "
        f"takeovers {fleet['takeovers']}",
        f"  requests {fleet['requests_by_op']}",
        f"  412s on live objects per 1,000 renewals: {fleet['conflicts_per_1000_renewals']:.2f} "
        f"(all 412s: {fleet['conflicts_total']}; goal 0)",
        "  hottest keys (requests/s):",
        *(f"    {t['per_second']:8.3f}  {t['key']}" for t in fleet["hot_keys"]),
        f"  interrupted() at the end: {fleet['interrupted_end']}",
        f"  month at S3 list prices: {json.dumps(month)}",
    ]
    if "seaweed" in f:
        lines += ["", f"SeaweedFS: {json.dumps(f['seaweed'], default=str)}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds)")
    parser.add_argument("--seaweed", action="store_true", help="also run on a real SeaweedFS")
    parser.add_argument(
        "--json", nargs="?", const=str(Path(tempfile.gettempdir()) / "runarchive-scale-fleet.json")
    )
    args = parser.parse_args(argv)
    f = figures(quick=args.quick, seaweed=args.seaweed)
    print(report(f))
    if args.json:
        Path(args.json).write_text(json.dumps(f, indent=2, default=str) + "\n")
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
