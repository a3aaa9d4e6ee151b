"""Soak test: many concurrent runs in several processes against a real S3 server.

``make soak`` (or ``.venv/bin/python bench/soak.py --seconds 120``). Starts its own
SeaweedFS, then ``--procs`` writer processes; each keeps ``--runs`` runs going at once
(one thread per run: checkpoints with a growing-then-trimmed transcript, events; every
run completes after ``--steps`` records and a new one starts) until ``--seconds`` have
passed. Each process samples its RSS and open file descriptors every second after a
warm-up, and times every append. At the end every run is restored from the bucket on
a fresh reader and compared with what was acknowledged.

Exit status 1 when a record is lost or duplicated, or when memory or descriptors grow
(RSS over the last 80 % of the run beyond ``--rss-growth-mb``, any descriptor growth
beyond 4): this one is a test, opt-in because it is long.
"""

from __future__ import annotations

import argparse
import base64
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from common import S3Server, aws_env, pct
from support.servers import SeaweedFS

from runarchive import Archive, Reader


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def writer(spec: dict[str, Any], out: Any) -> None:
    archive = Archive.open(spec["url"], cache_dir=spec["cache"], **spec["settings"])
    stop_at = time.monotonic() + spec["seconds"]
    warm_at = time.monotonic() + spec["seconds"] * 0.2
    lat: list[float] = []
    acked: dict[str, int] = {}
    lock = threading.Lock()

    def one_slot(slot: int) -> None:
        n = 0
        while time.monotonic() < stop_at:
            run = archive.start_run(agent=f"soak-{spec['proc']}", metadata={"slot": slot})
            messages: list[dict[str, str]] = []
            for step in range(spec["steps"]):
                messages = [*messages[-40:], {"role": "assistant", "content": f"{n} {step} " * 20}]
                t = time.perf_counter()
                if step % 3 == 2:
                    run.event("tool", {"step": step, "out": "x" * 100})
                else:
                    run.checkpoint(("plan", "act")[step % 2], {"messages": messages, "step": step})
                dt = time.perf_counter() - t
                if time.monotonic() > warm_at:
                    with lock:
                        lat.append(dt * 1000)
            run.complete()
            with lock:
                acked[run.run_id] = run.last_seq
            n += 1

    threads = [threading.Thread(target=one_slot, args=(i,)) for i in range(spec["runs"])]
    for th in threads:
        th.start()
    samples: list[tuple[float, float, int]] = []
    while any(th.is_alive() for th in threads):
        time.sleep(1.0)
        if time.monotonic() > warm_at:
            samples.append((time.monotonic(), rss_mb(), fds()))
    archive.close()
    out.put({"proc": spec["proc"], "lat": lat, "acked": acked, "samples": samples})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=90.0)
    parser.add_argument("--procs", type=int, default=3)
    parser.add_argument("--runs", type=int, default=8, help="concurrent runs per process")
    parser.add_argument("--steps", type=int, default=300, help="records per run")
    parser.add_argument("--rss-growth-mb", type=float, default=30.0)
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument(
        "--encrypted", action="store_true", help="client-side encryption on (a random local key)"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="rasoak-") as tmp_name:
        tmp = Path(tmp_name)
        with SeaweedFS(tmp / "weed") as server, aws_env(server):
            result = soak(server, tmp, args)
    text, ok = report(result, args)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str) + "\n")
    return 0 if ok else 1


def soak(server: S3Server, tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    bucket = server.make_bucket("soak")
    url = server.url(bucket, "a")
    settings = {"endpoint_url": server.endpoint_url, "addressing_style": "path"}
    if args.encrypted:
        key = base64.b64encode(os.urandom(32)).decode()
        settings |= {"encryption": "local", "encryption_keys": f"soak={key}"}
    queue: Any = mp.get_context("spawn").Queue()
    procs = []
    began = time.monotonic()
    for p in range(args.procs):
        spec = {
            "proc": p,
            "url": url,
            "cache": str(tmp / f"cache{p}"),
            "settings": settings,
            "seconds": args.seconds,
            "runs": args.runs,
            "steps": args.steps,
        }
        proc = mp.get_context("spawn").Process(target=writer, args=(spec, queue))
        proc.start()
        procs.append(proc)
    results = [queue.get(timeout=args.seconds + 300) for _ in procs]
    for proc in procs:
        proc.join(60)
    elapsed = time.monotonic() - began
    acked: dict[str, int] = {}
    for r in results:
        acked.update(r["acked"])
    lost = dup = sealed = 0
    with Reader.open(url, **settings) as reader:  # type: ignore[arg-type]
        for run_id, last in acked.items():
            restored = reader.restore(run_id)
            seqs = [rec.seq for rec in restored.records]
            index = restored.index
            sealed += bool(index.keys) and all(s.dek for s in index.segments)
            dup += len(seqs) - len(set(seqs))
            if index.last_seq != last or index.status != "completed":
                lost += 1
        listed = len(reader.list_runs(limit=None))
    lat = [x for r in results for x in r["lat"]]
    growth = []
    for r in results:
        s = r["samples"]
        if len(s) >= 2:
            growth.append(
                {
                    "proc": r["proc"],
                    "rss_mb": s[-1][1] - s[0][1],
                    "fds": s[-1][2] - s[0][2],
                    "rss_end_mb": s[-1][1],
                }
            )
    return {
        "elapsed_s": elapsed,
        "runs": len(acked),
        "records": sum(acked.values()),
        "records_per_s": sum(acked.values()) / elapsed,
        "append_p50_ms": statistics.median(lat) if lat else float("nan"),
        "append_p99_ms": pct(lat, 99),
        "append_max_ms": max(lat) if lat else float("nan"),
        "lost_runs": lost,
        "duplicates": dup,
        "manifest_runs": listed,
        "sealed_runs": sealed,
        "growth": growth,
    }


def report(r: dict[str, Any], args: argparse.Namespace) -> tuple[str, bool]:
    lines = [
        "runarchive soak",
        "=" * 72,
        f"{args.procs} processes x {args.runs} concurrent runs, {args.steps} records per run, "
        f"{args.seconds:.0f} s (+ drain) against SeaweedFS",
        f"runs completed      {r['runs']}   (manifest lists {r['manifest_runs']})",
        f"records             {r['records']:,}   = {r['records_per_s']:,.0f} records/s",
        f"append latency      p50 {r['append_p50_ms']:.2f} ms   p99 {r['append_p99_ms']:.2f} ms"
        f"   max {r['append_max_ms']:.1f} ms",
        f"lost runs           {r['lost_runs']}",
        f"duplicate records   {r['duplicates']}",
    ]
    ok = r["lost_runs"] == 0 and r["duplicates"] == 0 and r["manifest_runs"] == r["runs"]
    if args.encrypted:
        lines.append(f"sealed runs         {r['sealed_runs']} of {r['runs']}")
        ok = ok and r["sealed_runs"] == r["runs"]
    for g in r["growth"]:
        grew = g["rss_mb"] > args.rss_growth_mb or g["fds"] > 4
        ok = ok and not grew
        lines.append(
            f"process {g['proc']}: RSS {g['rss_end_mb']:.0f} MB, growth after warm-up "
            f"{g['rss_mb']:+.1f} MB, fds {g['fds']:+d}" + ("  GROWTH" if grew else "")
        )
    lines.append("PASS" if ok else "FAIL")
    return "\n".join(lines), ok


if __name__ == "__main__":
    sys.exit(main())
