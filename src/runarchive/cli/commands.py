"""The reading commands: ``show``, ``restore``, ``runs``, ``interrupted``, ``resume``,
``status`` and ``stats``. Imported only when one of them runs (start-up time)."""

from __future__ import annotations

import argparse
import json
import sys

from runarchive.archive import Archive
from runarchive.cache.status import read_status
from runarchive.cli import progress
from runarchive.cli.output import age, human, print_entries, print_index
from runarchive.compliance.stats import format_stats
from runarchive.config import load_config
from runarchive.engine.restore import RestoredRun
from runarchive.format.model import Checkpoint
from runarchive.reader import Reader


def cmd_show(args: argparse.Namespace) -> int:
    with Reader.open(args.url) as reader:
        # --json prints the index as stored; the text form decrypts what it can.
        index = reader.index(args.run, decrypt=not args.json)
    if args.json:
        print(index.model_dump_json(indent=2))
    else:
        print_index(index)
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    bar = progress.bar(f"restoring {args.run}", args.progress)
    try:
        with Reader.open(args.url) as reader:
            restored = reader.restore(args.run, seq=args.seq, at=args.at, progress=bar)
    finally:
        bar.close()
    if args.json:
        doc = {
            "index": restored.index.model_dump(mode="json"),
            "records": [r.model_dump(mode="json") for r in restored.records],
        }
        print(json.dumps(doc, indent=2))
    else:
        _print_restored(restored)
    return 0


def _print_restored(restored: RestoredRun) -> None:
    """The index, then one line per restored record."""
    print_index(restored.index)
    print(f"restored  {len(restored.records)} records")
    for rec in restored.records:
        if isinstance(rec, Checkpoint):
            size = len(json.dumps(rec.state))
            print(f"  {rec.seq:>8} {rec.ts.isoformat()} checkpoint {rec.name} ({size} B state)")
        else:
            print(f"  {rec.seq:>8} {rec.ts.isoformat()} event      {rec.kind} [{rec.lane}]")


def cmd_runs(args: argparse.Namespace) -> int:
    with Reader.open(args.url) as reader:
        entries = reader.list_runs(
            status=args.status,
            agent=args.agent,
            since=args.since,
            until=args.until,
            limit=args.limit or None,
            page=args.page,
        )
    print_entries(entries, as_json=args.json)
    if entries.next_page is not None:
        # stderr: --json output stays one JSON document
        print(f"more: --page {entries.next_page}", file=sys.stderr)
    return 0


def cmd_interrupted(args: argparse.Namespace) -> int:
    with Reader.open(args.url) as reader:
        entries = reader.interrupted(stale_after=args.stale_after)
    print_entries(entries, as_json=args.json)
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    with Archive.open(args.url, cache_dir=args.cache_dir) as archive:
        run = archive.resume(args.run)
        latest = run.latest()
        print(f"resumed   {run.run_id} (agent {run.agent}) into {archive.cache.directory}")
        print(f"next seq  {run.last_seq + 1}")
        if latest is not None:
            print(
                f"latest    seq {latest.seq} checkpoint {latest.name!r} at {latest.ts.isoformat()}"
            )
            print(f"state     {json.dumps(latest.state)[:200]}")
        print("continue it with archive.resume(run_id) (same cache_dir) in the agent process")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    bar = progress.bar("listing objects", args.progress and args.objects)
    try:
        with Reader.open(args.url) as reader:
            result = reader.stats(args.run, objects=args.objects, progress=bar)
    finally:
        bar.close()
    print(
        json.dumps(result.as_dict(), indent=2, default=str) if args.json else format_stats(result)
    )
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    cfg = load_config(cache_dir=args.cache_dir)
    status = read_status(cfg.cache_dir, max_unflushed_bytes=cfg.cache_max_unflushed_bytes)
    if args.json:
        print(json.dumps(status.as_dict(), indent=2))
        return 0
    limit = status.max_unflushed_bytes or 0
    print(f"cache     {status.cache_dir}")
    print(f"archive   {status.archive_url}")
    share = f" ({100 * status.unflushed_bytes / limit:.1f} % of the {human(limit)} limit)"
    print(
        f"unflushed {status.unflushed_records} records, {human(status.unflushed_bytes)}"
        + (share if limit else "")
        + f"; oldest {age(status.oldest_unflushed_age)}; "
        f"{len(status.failing)} of {len(status.runs)} runs failing to flush"
    )
    if status.runs:
        print(f"{'RUN':<28} {'STATUS':<10} {'LAST':>7} {'ARCHIVED':>8} {'UNFLUSHED':>17} OLDEST")
    for r in status.runs:
        flag = " (fenced)" if r.fenced else ""
        pending = f"{r.unflushed_records} / {human(r.unflushed_bytes)}"
        print(
            f"{r.run_id:<28} {r.status:<10} {r.last_seq:>7} {r.archived_seq:>8} "
            f"{pending:>17} {age(r.oldest_unflushed_age)}{flag}"
        )
        if r.last_flush_error:
            at = r.last_flush_error_at.isoformat() if r.last_flush_error_at else "?"
            print(f"    last flush error at {at}: {r.last_flush_error}")
        if r.stranded:
            first, last = r.stranded
            print(
                f"    another host owns this run: seqs {first}-{last} are held only here; "
                f"`runarchive fork {r.run_id} --to NEW_ID` archives them as a new run"
            )
    return 0
