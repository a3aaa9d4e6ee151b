"""Benchmark of the run viewer in a real headless Chromium: page times against the goal.

On a ``file://`` archive in a temporary directory, served by ``runarchive ui``'s server
in this process, and Debian's ``chromium`` driven by Playwright (no download):

1. a run of 10,000 records (half checkpoints, events on two lanes): the time from
   opening its page to the timeline built (fetch, verify and render; the page's
   ``performance.now``), median of 3; goal ≤ 1 s;
2. the runs page of an archive of ``--runs`` runs (100,000 by default; ``--quick``
   2,000): the first page (100 runs) built, median of 3; goal ≤ 1 s whatever the
   number of runs (the manifest is read a page at a time).

The figures are ratios to the goal (≤ 1.0 passes). Writing 100,000 runs takes
minutes; the timed part is the page.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from playwright.sync_api import sync_playwright

from runarchive import Archive, Policy, Reader
from runarchive.viewer.server import make_server

GOAL_MS = 1000.0
RECORDS = 10_000


def build(root: Path, runs: int) -> str:
    url = (root / "bucket").as_uri()
    with Archive.open(url, cache_dir=root / "cache", policy=Policy(keep_all=True)) as archive:
        with archive.start_run(agent="bulk", run_id="run-big") as run:
            for i in range(RECORDS // 2):
                run.checkpoint("step", {"i": i, "text": "x" * 40})
                run.event("tick", {"i": i}, lane="tools" if i % 2 else "main")
        for n in range(runs - 1):
            with archive.start_run(agent=f"agent-{n % 7}") as run:
                run.checkpoint("only", {"n": n})
        archive.flush()
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


def measure(runs: int) -> dict[str, Any]:
    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("no chromium on PATH: apt-get install -y chromium (make test does)")
    with tempfile.TemporaryDirectory(prefix="rabench-viewer-") as tmp:
        t = time.perf_counter()
        url = build(Path(tmp), runs)
        build_s = time.perf_counter() - t
        with Reader.open(url) as reader:
            server = make_server(reader, "127.0.0.1", 0)
            thread = threading.Thread(target=server.serve_forever, daemon=True)
            thread.start()
            site = f"http://127.0.0.1:{server.server_address[1]}/"
            error = ""
            try:
                with sync_playwright() as pw:
                    browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
                    page = browser.new_page()
                    run_ms = [
                        timed(page, site, "#/run/run-big", "#timeline tbody tr") for _ in range(3)
                    ]
                    try:
                        runs_ms = [timed(page, site, "#/", "#runs tbody tr") for _ in range(3)]
                    except PageError as exc:
                        runs_ms, error = [float("nan")], str(exc)
                    browser.close()
            finally:
                server.shutdown()
                server.server_close()
    run_page, runs_page = statistics.median(run_ms), statistics.median(runs_ms)
    if error:
        print(f"runs page failed: {error}", file=sys.stderr)
    return {
        "records": RECORDS,
        "runs": runs,
        "build_s": build_s,
        "run_page_ms": run_page,
        "runs_page_ms": runs_page,
        "run_page_ratio": run_page / GOAL_MS,
        "runs_page_ratio": runs_page / GOAL_MS,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 runs instead of 100,000")
    parser.add_argument("--runs", type=int, help="runs in the archive (default 100,000)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    got = measure(args.runs or (2_000 if args.quick else 100_000))
    print(f"archive built in {got['build_s']:.1f} s ({got['runs']:,} runs)")
    print(
        f"run page, {RECORDS:,} records: {got['run_page_ms']:.0f} ms = "
        f"{got['run_page_ratio']:.2f}x the 1 s goal "
        f"{'PASS' if got['run_page_ratio'] <= 1 else 'MISS'}"
    )
    print(
        f"runs page, {got['runs']:,} runs (first 100): {got['runs_page_ms']:.0f} ms = "
        f"{got['runs_page_ratio']:.2f}x the 1 s goal "
        f"{'PASS' if got['runs_page_ratio'] <= 1 else 'MISS'}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(got, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
