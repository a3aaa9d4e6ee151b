"""The maintenance commands: ``compact``, ``gc``, ``rekey``, ``hold``, ``release`` and
``keygen``. Imported only when one of them runs (start-up time)."""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
from collections.abc import Iterator
from typing import Any

from runarchive.archive import Archive
from runarchive.cli import progress
from runarchive.cli.output import human
from runarchive.crypto.providers import add_key_to_file, new_local_key


@contextlib.contextmanager
def _maintenance(args: argparse.Namespace) -> Iterator[Archive]:
    # Maintenance writes only to the bucket: a throwaway cache keeps it clear of the
    # cache (and its lock) of an agent running in this directory.
    if args.cache_dir:
        with Archive.open(args.url, cache_dir=args.cache_dir) as archive:
            yield archive
        return
    with (
        tempfile.TemporaryDirectory(prefix="runarchive-") as tmp,
        Archive.open(args.url, cache_dir=tmp) as archive,
    ):
        yield archive


def cmd_compact(args: argparse.Namespace) -> int:
    label = "compacting runs" if args.all else f"reading {args.run}"
    bar = progress.bar(label, args.progress)
    try:
        with _maintenance(args) as archive:
            results = archive.compact(
                None if args.all else args.run,
                dry_run=args.dry_run,
                reencrypt=args.reencrypt,
                progress=bar,
            )
    finally:
        bar.close()
    rows = [
        {**r.plan.summary(), "done": r.done, "stored_bytes_after": r.stored_bytes_after}
        | ({"skipped": r.skipped} if r.skipped else {})
        for r in results
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        if row.get("skipped"):
            print(f"{row['run_id']:36} skipped ({row['skipped']})")
            continue
        verb = (
            "compacted"
            if row["done"]
            else ("would compact" if args.dry_run and row["objects_written"] else "unchanged")
        )
        print(
            f"{row['run_id']:36} {verb:13} segments {row['objects_read']} -> "
            f"{row['objects_written'] or row['objects_read']}, records {row['records_before']}"
            f" -> {row['records_after']}, JSON {human(row['raw_bytes_before'])} -> "
            f"{human(row['raw_bytes_after'])}, read {human(row['bytes_read'])}"
        )
    print(f"{len(rows)} runs; replaced segments are deleted by `runarchive gc` after the grace")
    return 0


def cmd_rekey(args: argparse.Namespace) -> int:
    bar = progress.bar("re-wrapping", args.progress)
    try:
        with _maintenance(args) as archive:
            results = archive.rekey(None if args.all else args.run, progress=bar)
            current = archive.keyring.current
    finally:
        bar.close()
    if args.json:
        print(json.dumps([r.__dict__ for r in results], indent=2))
        return 0
    for r in results:
        what = f"{r.rewrapped} of {r.keys} data keys re-wrapped" if r.keys else "plaintext"
        froms = f" (from {', '.join(r.from_keks)})" if r.from_keks else ""
        print(f"{r.run_id:36} {what}{froms}")
    moved = sum(r.rewrapped for r in results)
    print(f"{len(results)} runs, {moved} data keys now under {current}")
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    if args.file is None:  # print a key for RUNARCHIVE_ENCRYPTION_KEYS
        print(f"{args.id or 'k1'}={new_local_key()}")
        return 0
    kid = add_key_to_file(args.file, args.id)
    print(f"{kid} added to {args.file} and made current (older keys stay for reading)")
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    bar = progress.bar("gc", args.progress)
    try:
        with _maintenance(args) as archive:
            report = archive.gc(dry_run=args.dry_run, grace=args.grace, progress=bar)
    finally:
        bar.close()
    expired = report.plan.expired_runs if args.dry_run else report.expired
    doc: dict[str, Any] = {
        "dry_run": report.dry_run,
        "objects": [{"key": d.key, "why": d.why, "bytes": d.size} for d in report.plan.objects],
        "bytes": report.plan.bytes,
        "expired_runs": expired,
        "kept_locked": report.kept_locked,
    }
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    for d in report.plan.objects:
        print(f"{'would delete' if args.dry_run else 'deleted':12} {d.why:9} {d.key}")
    for run_id in expired:
        print(f"{'would expire' if args.dry_run else 'expired':12} run       {run_id}")
    for line in report.kept_locked:
        print(f"kept (locked) {line}")
    print(
        f"{len(report.plan.objects)} objects, {human(report.plan.bytes)}"
        + (" (dry run: nothing deleted)" if args.dry_run else " freed")
    )
    return 0


def cmd_hold(args: argparse.Namespace) -> int:
    with _maintenance(args) as archive:
        n = archive.hold(args.run) if args.command == "hold" else archive.release(args.run)
    what = "legal hold on" if args.command == "hold" else "legal hold released from"
    print(f"{what} {n} segment objects of run {args.run}")
    return 0
