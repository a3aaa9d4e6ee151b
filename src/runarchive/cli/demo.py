"""``runarchive demo``: a few simulated agents on the configured (or embedded) archive,
and a report of what was stored. Kept apart from :mod:`runarchive.cli.main` for size."""

from __future__ import annotations

import argparse
import random
import shutil
import sys
from typing import Any

from runarchive.archive import Archive
from runarchive.cli.output import human

_WORDS = (
    "plan", "search", "read", "summarise", "draft", "check", "call", "tool", "result",
    "answer", "user", "asks", "about", "the", "quarterly", "report", "weather", "forecast",
    "database", "schema", "migration", "error", "retry", "fix", "test",
)  # fmt: skip


def _simulate(archive: Archive, rng: random.Random, agent: str, steps: int, crash: bool) -> str:
    run_id = ""
    try:
        with archive.start_run(agent=agent, metadata={"demo": True, "steps": steps}) as run:
            run_id = run.run_id
            messages: list[dict[str, Any]] = [{"role": "user", "content": "Plan the task."}]
            for step in range(steps):
                text = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(20, 60)))
                messages.append({"role": rng.choice(["assistant", "tool"]), "content": text})
                name = ("plan", "act", "observe", "reflect")[step % 4]
                run.checkpoint(name, {"messages": messages, "step": step})
                run.event("llm_call", {"step": step, "tokens": rng.randint(50, 800)})
                if crash and step == steps // 2:
                    raise RuntimeError("simulated tool failure")
    except RuntimeError as exc:
        if str(exc) != "simulated tool failure":
            raise
    return run_id


def cmd_demo(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    with Archive.open(args.url, cache_dir=args.cache_dir) as archive:
        print(f"archive   {archive.url}")
        print(f"cache     {archive.cache.directory}")
        archive.store.reset()  # count the demo's requests, not the open-time probe
        run_ids = [
            _simulate(archive, rng, f"agent-{i}", args.steps, crash=(i == args.runs - 1))
            for i in range(args.runs)
        ]
        archive.flush()
        appended, appended_bytes = archive.appended_records, archive.appended_bytes
        counts = dict(archive.store.counts)
        indexes = [archive.index(r) for r in run_ids]
        listed = archive.list_runs(limit=None)
    print(f"\n{'run':36} {'status':10} {'records':>8} {'segments':>8} {'stored':>10}")
    for index in indexes:
        recs = sum(s.records for s in index.segments)
        print(
            f"{index.run_id:36} {index.status:10} {recs:>8} {len(index.segments):>8} "
            f"{human(index.stored_bytes):>10}"
        )
    objects = sum(len(i.segments) + 1 for i in indexes)
    stored = sum(i.stored_bytes for i in indexes)
    ratio = 100 * stored / appended_bytes if appended_bytes else 0.0
    print(
        f"\n{len(indexes)} runs, {appended} records appended ({human(appended_bytes)} of JSON), "
        f"{objects} objects in the bucket, {human(stored)} of segments "
        f"({ratio:.2f} % of the raw JSON)"
    )
    print(f"requests  {sum(counts.values())} ({', '.join(f'{k} {v}' for k, v in counts.items())})")
    running = sum(1 for e in listed if e.status == "running")
    print(f"manifest  {len(listed)} runs listed in the archive ({running} running)")
    if shutil.which("runarchive"):
        exe = "runarchive"
    elif sys.argv[0].endswith("__main__.py"):  # python -m runarchive.cli
        exe = f"{sys.executable} -m runarchive.cli"
    else:
        exe = sys.argv[0]
    print(f"\nnext: {exe} show {run_ids[0]}\n      {exe} restore {run_ids[-1]}")
    return 0
