"""Benchmark of the run viewer in a real headless Chromium: page times against the goal.

On ``file://`` archives in a temporary directory, served by ``runarchive ui``'s server
in this process, and Debian's ``chromium`` driven by Playwright (no download):

1. a run of 10,000 records (half checkpoints, events on two lanes): the time from
   opening its page to the timeline built (fetch, verify and render; the page's
   ``performance.now``), median of 3; goal ≤ 1 s;
2. the runs page (first 100 runs built in the table) of an archive of ``--runs`` runs
   (100,000 by default; ``--quick`` 10,000), against the same page of an archive of
   1,000 runs measured in the same run, interleaved, median of 5 each; goal ≤ 1 s
   whatever the number of runs, and a ratio big / small near 1 (the manifest is read
   a page at a time). Then ten pages deep, and the server's ``/api/runs`` alone.

The runs archives are written as manifest objects directly (done partitions of 256
runs a writer and hour, as ``Manifest.finish`` writes them, plus 50 running runs in
live objects): the runs page reads nothing else. That takes seconds instead of the
hours 100,000 real runs would.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import empty_checkpoint  # the langgraph extra
from playwright.sync_api import sync_playwright

from runarchive import Archive, Policy, Reader
from runarchive.engine.manifest.core import Manifest, RunEntry
from runarchive.engine.manifest.format import DONE_CAP, done_key, encode, new_writer_key
from runarchive.langgraph import ArchiveSaver
from runarchive.store import FileStore
from runarchive.viewer.server import serving

GOAL_MS = 1000.0
RECORDS = 10_000
# Keeps chromium off the network (it is closed here): no background requests.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def build_run(root: Path) -> str:
    """An archive holding one run of ``RECORDS`` records."""
    url = (root / "bucket").as_uri()
    with Archive.open(url, cache_dir=root / "cache", policy=Policy(keep_all=True)) as archive:
        with archive.start_run(agent="bulk", run_id="run-big") as run:
            for i in range(RECORDS // 2):
                run.checkpoint("step", {"i": i, "text": "x" * 40})
                run.event("tick", {"i": i}, lane="tools" if i % 2 else "main")
        archive.flush()
    return url


def build_thread(root: Path) -> str:
    """An archive holding one LangGraph thread of ``RECORDS`` records: checkpoints in
    two namespaces, each with a pending write (an ``lg.writes`` event)."""
    url = (root / "bucket").as_uri()
    with Archive.open(url, cache_dir=root / "cache", policy=Policy(keep_all=True)) as archive:
        saver = ArchiveSaver(archive)
        parents: dict[str, Any] = {}
        for i in range(RECORDS // 2):
            ns = "" if i % 4 else "tools:1"
            config: Any = {"configurable": {"thread_id": "big", "checkpoint_ns": ns}}
            if ns in parents:
                config["configurable"]["checkpoint_id"] = parents[ns]
            cp = empty_checkpoint()
            cp["channel_values"] = {"i": i, "text": "x" * 40}
            meta: Any = {"source": "loop", "step": i, "parents": {}}
            saved = saver.put(config, cp, meta, {})
            parents[ns] = saved["configurable"]["checkpoint_id"]
            saver.put_writes(saved, [("messages", {"i": i})], f"task-{i}")
        archive.flush()
    return url


def _entry(run_id: str, host: str, at: datetime, **fields: Any) -> dict[str, Any]:
    return RunEntry(
        run_id=run_id,
        agent=f"agent-{hash(run_id) % 7}",
        created_at=at - timedelta(minutes=5),
        updated_at=at,
        owner_host=host,
        owner_pid=1000,
        epoch=1,
        last_seq=12,
        records=12,
        stored_bytes=4096,
        **fields,
    ).model_dump(mode="json")


def build_runs(root: Path, runs: int, writers: int = 20) -> str:
    """An archive whose manifest lists ``runs`` runs: 50 running, the rest finished
    by ``writers`` processes, ``DONE_CAP`` per done object, over the hours before now."""
    url = (root / "bucket").as_uri()
    store = FileStore(root / "bucket")
    now = datetime.now(UTC)
    live = [Manifest(store, host=f"live{w}", pid=w + 1) for w in range(5)]
    for n in range(50):
        at = now - timedelta(minutes=n)
        live[n % 5].upsert_active(RunEntry.model_validate(_entry(f"run-live-{n:03d}", "l", at)))
    keys = [new_writer_key(f"h{w:03d}", 1000, 60) for w in range(writers)]
    done, n, hour = runs - 50, 0, 0
    while n < done:
        end = now - timedelta(hours=hour + 1)
        day, hh = end.strftime("%Y%m%d"), end.strftime("%H")
        for w in keys:
            batch = min(DONE_CAP, done - n)
            if batch <= 0:
                break
            entries = {}
            for i in range(batch):
                rid = f"run-{n + i:07d}"
                at = end - timedelta(seconds=i)
                entries[rid] = _entry(rid, w, at, status="completed", ended_at=at)
            doc = {"format": 2, "kind": "done", "writer": w, "partition": f"{day}/{hh}"}
            store.put(done_key(day, hh, w, 0), encode({**doc, "runs": entries}))
            n += batch
        hour += 1
    return url


def timed(page: Any, site: str, hash_: str, ready: str) -> float:
    page.goto(site + "#/nowhere-" + str(time.monotonic_ns()))
    page.wait_for_selector("main")
    page.evaluate(f"window.t0 = performance.now(); location.hash = '{hash_}'")
    page.wait_for_function("() => window.routedAt > window.t0", timeout=120_000)
    page.wait_for_selector(f"{ready}, #error", timeout=120_000)
    # The page's own clock: the rest of a long timeline is still being appended, and
    # an evaluate() would wait behind it.
    ms: float = page.evaluate("window.routedAt - window.t0")
    if page.locator("#error").count():
        raise PageError(page.locator("#error").inner_text())
    return ms


class PageError(Exception):
    """The page showed an error instead of its table."""


@contextmanager
def site_for(url: str) -> Iterator[str]:
    """``runarchive ui``'s server for ``url`` on a free port, in a thread."""
    with Reader.open(url) as reader, serving(reader) as port:
        yield f"http://127.0.0.1:{port}/"


def api_ms(site: str, pages: int) -> float:
    """``/api/runs`` alone: the first page, then ``pages`` - 1 more by token (ms each)."""
    t = time.perf_counter()
    token = None
    for _ in range(pages):
        query = "" if token is None else "?page=" + token
        with urllib.request.urlopen(site + "api/runs" + query) as answer:
            token = json.load(answer)["next_page"]
    return (time.perf_counter() - t) * 1000 / pages


def measure(runs: int) -> dict[str, Any]:
    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("no chromium on PATH: apt-get install -y chromium (make test does)")
    with tempfile.TemporaryDirectory(prefix="rabench-viewer-") as tmp:
        t = time.perf_counter()
        run_url = build_run(Path(tmp) / "run")
        thread_url = build_thread(Path(tmp) / "thread")
        small_url = build_runs(Path(tmp) / "small", 1_000)
        big_url = build_runs(Path(tmp) / "big", runs)
        build_s = time.perf_counter() - t
        with (
            site_for(run_url) as run_site,
            site_for(thread_url) as thread_site,
            site_for(small_url) as small_site,
            site_for(big_url) as big_site,
            sync_playwright() as pw,
        ):
            browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            page = browser.new_page()
            run_ms = [
                timed(page, run_site, "#/run/run-big", "#timeline tbody tr") for _ in range(3)
            ]
            thread_ms = [
                timed(page, thread_site, "#/run/lg-big", "#timeline tbody tr") for _ in range(3)
            ]
            small_ms: list[float] = []
            big_ms: list[float] = []
            for _ in range(5):  # interleaved, so that both see the same machine
                small_ms.append(timed(page, small_site, "#/", "#runs tbody tr"))
                big_ms.append(timed(page, big_site, "#/", "#runs tbody tr"))
            browser.close()
            api_small, api_big = api_ms(small_site, 1), api_ms(big_site, 1)
            api_deep = api_ms(big_site, 10)
    run_page = statistics.median(run_ms)
    small, big = statistics.median(small_ms), statistics.median(big_ms)
    return {
        "records": RECORDS,
        "runs": runs,
        "build_s": build_s,
        "run_page_ms": run_page,
        "run_page_ratio": run_page / GOAL_MS,
        "thread_page_ms": statistics.median(thread_ms),
        "thread_page_ratio": statistics.median(thread_ms) / GOAL_MS,
        "runs_page_small_ms": small,
        "runs_page_ms": big,
        "runs_page_ratio": big / GOAL_MS,
        "runs_page_big_over_small": big / small,
        "api_runs_small_ms": api_small,
        "api_runs_ms": api_big,
        "api_runs_ten_pages_ms_each": api_deep,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10,000 runs instead of 100,000")
    parser.add_argument("--runs", type=int, help="runs in the archive (default 100,000)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    got = measure(args.runs or (10_000 if args.quick else 100_000))
    print(f"archive built in {got['build_s']:.1f} s ({got['runs']:,} runs)")
    print(
        f"run page, {RECORDS:,} records: {got['run_page_ms']:.0f} ms = "
        f"{got['run_page_ratio']:.2f}x the 1 s goal "
        f"{'PASS' if got['run_page_ratio'] <= 1 else 'MISS'}"
    )
    print(
        f"LangGraph thread page, {RECORDS:,} records: {got['thread_page_ms']:.0f} ms = "
        f"{got['thread_page_ratio']:.2f}x the 1 s goal "
        f"{'PASS' if got['thread_page_ratio'] <= 1 else 'MISS'}"
    )
    print(
        f"runs page, {got['runs']:,} runs (first 100): {got['runs_page_ms']:.0f} ms = "
        f"{got['runs_page_ratio']:.2f}x the 1 s goal "
        f"{'PASS' if got['runs_page_ratio'] <= 1 else 'MISS'}; "
        f"{got['runs_page_big_over_small']:.2f}x the same page at 1,000 runs "
        f"({got['runs_page_small_ms']:.0f} ms)"
    )
    print(
        f"/api/runs alone: {got['api_runs_ms']:.0f} ms at {got['runs']:,} runs, "
        f"{got['api_runs_small_ms']:.0f} ms at 1,000; "
        f"{got['api_runs_ten_pages_ms_each']:.0f} ms a page over the first ten"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(got, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
