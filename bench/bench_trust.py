"""What the trust rules of issue 12 cost, on a real SeaweedFS over loopback.

Each figure is a ratio against a baseline measured in the same run (these machines are
noisy; absolute milliseconds are printed for orientation only):

1. **claim**: ``start_run(run_id=...)`` (1 create-only index PUT) against a generated
   id (no request).
2. **revalidation**: the first ``archive.run(id)`` of a process on a run its cache
   holds: a conditional GET of the index (304, no body) against an unconditional GET of
   the same index (what a check without ``If-None-Match`` would read), for an index
   naming many segments.
3. **non-owner read**: ``ArchiveSaver.get_tuple`` on a thread another host owns, when
   nothing changed: requests and bytes per call.
4. **read-back**: ``complete()`` + listing as done, ``read_back`` on against off:
   requests and time per finished run.

Run: ``make bench-trust`` (about 1 minute; ``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from common import aws_env  # noqa: E402
from langgraph.checkpoint.conformance.test_utils import generate_checkpoint  # noqa: E402
from support.servers import S3Server, SeaweedFS  # noqa: E402

from runarchive import Archive  # noqa: E402
from runarchive.langgraph import ArchiveSaver  # noqa: E402
from runarchive.store import CountingStore, S3Settings, S3Store  # noqa: E402

PREFIX = "bench"


def _store(server: S3Server, bucket: str) -> CountingStore:
    return CountingStore(
        S3Store(
            S3Settings(
                bucket=bucket,
                prefix=PREFIX,
                endpoint_url=server.endpoint_url,
                region=server.region,
                addressing_style="path",
            )
        )
    )


def _open(server: S3Server, bucket: str, cache: Path, **settings: Any) -> Archive:
    return Archive.open(
        server.url(bucket, PREFIX),
        store=_store(server, bucket),
        cache_dir=cache,
        flush_age=300.0,
        **settings,
    )


def _timed(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def _counts(archive: Archive) -> CountingStore:
    store = archive.store
    assert isinstance(store, CountingStore)
    return store


def bench_claim(server: S3Server, tmp: Path, n: int) -> dict[str, float]:
    archive = _open(server, server.make_bucket(), tmp / "claim")
    store = _counts(archive)
    counter = iter(range(10**9))
    store.reset()
    given = _timed(lambda: archive.start_run("bench", f"given-{next(counter)}"), n)
    given_requests = store.total / n
    store.reset()
    generated = _timed(lambda: archive.start_run("bench"), n)
    generated_requests = store.total / n
    archive.close()
    return {
        "given_ms": statistics.median(given),
        "generated_ms": statistics.median(generated),
        "given_requests": given_requests,
        "generated_requests": generated_requests,
    }


def bench_revalidation(server: S3Server, tmp: Path, n: int, segments: int) -> dict[str, float]:
    bucket = server.make_bucket()
    cache = tmp / "reval"
    archive = _open(server, bucket, cache)
    run = archive.start_run("bench", "long")
    for i in range(segments):
        run.checkpoint("step", {"i": i, "pad": "x" * 200})
        run.flush()
    archive.close()
    index_bytes = len(_store(server, bucket).get("runs/long/index.json").body)
    conditional, plain, bytes_in = [], [], 0
    for _ in range(n):
        again = _open(server, bucket, cache)
        store = _counts(again)
        store.reset()
        t = time.perf_counter()
        again.run("long")
        conditional.append((time.perf_counter() - t) * 1000)
        bytes_in += store.bytes_in
        assert store.total == 1, store.counts
        plain += _timed(lambda store=store: store.get("runs/long/index.json"), 1)
        again.close()
    return {
        "segments": segments,
        "index_bytes": index_bytes,
        "conditional_ms": statistics.median(conditional),
        "plain_ms": statistics.median(plain),
        "conditional_bytes": bytes_in / n,
    }


def bench_nonowner_reads(server: S3Server, tmp: Path, n: int) -> dict[str, float]:
    bucket = server.make_bucket()
    owner = _open(server, bucket, tmp / "owner")
    saver = ArchiveSaver(owner)
    config: dict[str, Any] = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
    parent = None
    for i in range(50):
        conf = {"configurable": {**config["configurable"]}}
        if parent:
            conf["configurable"]["checkpoint_id"] = parent
        cp = generate_checkpoint(channel_values={"i": i})
        parent = saver.put(conf, cp, {"step": i}, {})["configurable"]["checkpoint_id"]  # type: ignore[arg-type]
    owner.flush()
    reader = _open(server, bucket, tmp / "reader")
    other = ArchiveSaver(reader)
    other.get_tuple(config)  # type: ignore[arg-type]  # first read: index + segments
    store = _counts(reader)
    store.reset()
    read = _timed(lambda: other.get_tuple(config), n)  # type: ignore[arg-type]
    requests, bytes_in = store.total / n, store.bytes_in / n
    own = _counts(owner)
    own.reset()
    owned = _timed(lambda: saver.get_tuple(config), n)  # type: ignore[arg-type]
    owned_requests = own.total / n
    owner.close()
    reader.close()
    return {
        "nonowner_ms": statistics.median(read),
        "owner_ms": statistics.median(owned),
        "nonowner_requests": requests,
        "nonowner_bytes": bytes_in,
        "owner_requests": owned_requests,
    }


def bench_read_back(server: S3Server, tmp: Path, n: int, segments: int) -> dict[str, float]:
    out: dict[str, float] = {"segments": segments}
    for read_back in (False, True):
        archive = _open(
            server, server.make_bucket(), tmp / f"rb-{segments}-{read_back}", read_back=read_back
        )
        store = _counts(archive)
        times, requests = [], []
        for _ in range(n):
            run = archive.start_run("bench")
            for i in range(segments):
                run.checkpoint("step", {"i": i})
                run.flush()
            store.reset()
            t = time.perf_counter()
            run.complete()
            times.append((time.perf_counter() - t) * 1000)
            requests.append(store.total)
        archive.close()
        key = "on" if read_back else "off"
        out[f"{key}_ms"] = statistics.median(times)
        out[f"{key}_requests"] = statistics.median(requests)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few samples (smoke run)")
    args = parser.parse_args()
    n = 5 if args.quick else 40
    with tempfile.TemporaryDirectory(prefix="ratrust-") as name:
        tmp = Path(name)
        with SeaweedFS(tmp / "weed") as server, aws_env(server):
            claim = bench_claim(server, tmp, n)
            reval = bench_revalidation(server, tmp, max(3, n // 4), 20 if args.quick else 200)
            reads = bench_nonowner_reads(server, tmp, n)
            rb1 = bench_read_back(server, tmp, max(3, n // 4), 1)
            rb20 = bench_read_back(server, tmp, max(3, n // 4), 20)
    print("## Trust costs (SeaweedFS on 127.0.0.1; medians; ratios within this run)\n")
    print("| figure | value | baseline | ratio |")
    print("|---|---|---|---|")
    print(
        f"| start_run(run_id=...) (claim: {claim['given_requests']:.0f} PUT) vs generated id "
        f"({claim['generated_requests']:.0f} requests) | {claim['given_ms']:.2f} ms | "
        f"{claim['generated_ms']:.2f} ms | {claim['given_ms'] / claim['generated_ms']:.1f}x |"
    )
    print(
        f"| first archive.run() of a process: conditional GET of a "
        f"{reval['segments']:.0f}-segment index ({reval['index_bytes'] / 1024:.0f} KiB), "
        f"{reval['conditional_bytes']:.0f} B read | {reval['conditional_ms']:.2f} ms | plain GET "
        f"{reval['plain_ms']:.2f} ms | {reval['conditional_ms'] / reval['plain_ms']:.2f}x |"
    )
    print(
        f"| get_tuple on a thread another host owns, unchanged: "
        f"{reads['nonowner_requests']:.1f} requests, {reads['nonowner_bytes']:.0f} B | "
        f"{reads['nonowner_ms']:.2f} ms | owner {reads['owner_ms']:.2f} ms "
        f"({reads['owner_requests']:.0f} requests) | "
        f"{reads['nonowner_ms'] / reads['owner_ms']:.1f}x |"
    )
    for rb in (rb1, rb20):
        print(
            f"| complete() with read_back, {rb['segments']:.0f}-segment run: "
            f"{rb['on_requests']:.0f} requests vs {rb['off_requests']:.0f} | "
            f"{rb['on_ms']:.2f} ms | off {rb['off_ms']:.2f} ms | "
            f"{rb['on_ms'] / rb['off_ms']:.2f}x |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
