"""``runarchive`` command line. Exit codes: 0 ok, 1 error, 2 usage, 3 ``verify --all``
found no run to check.

Read-only commands (``runs``, ``show``, ``restore``, ``verify``, ``export``,
``stats``...) open a :class:`Reader`, which creates nothing: on a ``file://``
archive that does not exist they exit 1 and say how to create one.

``--json`` output is stable (documented in ``docs/cli.md``): ``show`` prints the
run index as stored (``docs/format.md``); ``restore`` prints
``{"index": <run index>, "records": [<record>, ...]}``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from runarchive.archive import Archive
from runarchive.cache.status import read_status
from runarchive.cli import recovery as cli_recovery
from runarchive.cli.demo import cmd_demo
from runarchive.cli.demo import human as _human
from runarchive.compliance.export import verify_export
from runarchive.compliance.stats import format_stats
from runarchive.config import load_config
from runarchive.crypto.keyring import keyring_for
from runarchive.crypto.providers import add_key_to_file, new_local_key
from runarchive.engine.manifest.core import RunEntry
from runarchive.engine.restore import RestoredRun
from runarchive.errors import RunArchiveError
from runarchive.format.model import Checkpoint, RunIndex
from runarchive.reader import Reader


def _parse_time(text: str) -> datetime:
    try:
        ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    if ts.tzinfo is None:
        raise argparse.ArgumentTypeError(f"give a timezone, e.g. {text}Z")
    return ts


def _print_index(index: RunIndex) -> None:
    print(f"run       {index.run_id}")
    print(f"agent     {index.agent}")
    print(f"status    {index.status}" + (f"  ({index.error})" if index.error else ""))
    print(f"created   {index.created_at.isoformat()}")
    if index.ended_at:
        print(f"ended     {index.ended_at.isoformat()}")
    if index.metadata:
        print(f"metadata  {json.dumps(index.metadata)}")
    if index.keys:
        keks = sorted({k.kek for k in index.keys})
        print(f"encrypted AES-256-GCM, {len(index.keys)} data key(s) under {', '.join(keks)}")
    print(
        f"records   seq 1..{index.last_seq}: "
        f"{sum(s.checkpoints for s in index.segments)} checkpoints, "
        f"{sum(s.events for s in index.segments)} events archived, "
        f"{sum(s.dropped for s in index.segments)} checkpoints dropped by the policy"
    )
    print(
        f"segments  {len(index.segments)}, {_human(index.stored_bytes)} stored "
        f"({_human(index.raw_bytes)} uncompressed)"
    )
    for seg in index.segments:
        print(
            f"  {seg.first_seq:>8}-{seg.last_seq:<8} {seg.records:>6} rec "
            f"{_human(seg.stored_bytes):>10}  {seg.key}"
        )


def cmd_show(args: argparse.Namespace) -> int:
    with Reader.open(args.url) as reader:
        # --json prints the index as stored; the text form decrypts what it can.
        index = reader.index(args.run, decrypt=not args.json)
    if args.json:
        print(index.model_dump_json(indent=2))
    else:
        _print_index(index)
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    with Reader.open(args.url) as reader:
        restored = reader.restore(args.run, seq=args.seq, at=args.at)
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
    _print_index(restored.index)
    print(f"restored  {len(restored.records)} records")
    for rec in restored.records:
        if isinstance(rec, Checkpoint):
            size = len(json.dumps(rec.state))
            print(f"  {rec.seq:>8} {rec.ts.isoformat()} checkpoint {rec.name} ({size} B state)")
        else:
            print(f"  {rec.seq:>8} {rec.ts.isoformat()} event      {rec.kind} [{rec.lane}]")


def _emit_entries(entries: list[RunEntry], *, as_json: bool) -> None:
    if as_json:
        print(json.dumps([e.model_dump(mode="json") for e in entries], indent=2))
        return
    print(f"{'run':36} {'agent':16} {'status':10} {'last seq':>8} {'owner':24} {'lease until'}")
    for e in entries:
        owner = f"{e.owner_host}:{e.owner_pid}#{e.epoch}" if e.owner_host else "-"
        lease = e.lease_expires_at.isoformat(timespec="seconds") if e.lease_expires_at else "-"
        print(f"{e.run_id:36} {e.agent[:16]:16} {e.status:10} {e.last_seq:>8} {owner:24} {lease}")
    print(f"{len(entries)} runs")


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
    _emit_entries(entries, as_json=args.json)
    if entries.next_page is not None:
        # stderr: --json output stays one JSON document
        print(f"more: --page {entries.next_page}", file=sys.stderr)
    return 0


def cmd_interrupted(args: argparse.Namespace) -> int:
    with Reader.open(args.url) as reader:
        entries = reader.interrupted(stale_after=args.stale_after)
    _emit_entries(entries, as_json=args.json)
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


def cmd_export(args: argparse.Namespace) -> int:
    with Reader.open(args.url) as reader:
        result = reader.export(
            args.run_ids or None,
            agent=args.agent,
            since=args.since,
            until=args.until,
            status=args.status,
            dest=args.out,
            decrypt=args.decrypt,
        )
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
        return 0
    for run in result.runs:
        print(
            f"{run.run_id:36} {run.status:10} {run.records:>8} records {run.segments:>5} "
            f"segments  chain head {(run.chain_head or '-')[:16]}"
        )
    print(
        f"exported  {len(result.runs)} run{'' if len(result.runs) == 1 else 's'} to "
        f"{result.dest} ({result.kind}, "
        f"{result.files} files, {_human(result.bytes)})"
    )
    print(f"check it  runarchive verify-export {args.out}   (or sha256sum -c, see its README)")
    return 0


def cmd_verify_export(args: argparse.Namespace) -> int:
    config = load_config(url=args.url)
    # With keys configured, encrypted runs are decrypted and checked in full.
    problems = verify_export(args.bundle, config=config, keyring=keyring_for(config))
    if args.json:
        doc = {
            "bundle": args.bundle,
            "ok": not problems,
            "problems": [{"path": p.path, "problem": p.problem} for p in problems],
        }
        print(json.dumps(doc, indent=2))
    else:
        for problem in problems:
            print(problem)
        print(f"{args.bundle}: " + (f"{len(problems)} problems" if problems else "sound"))
    return 1 if problems else 0


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


EXIT_NOTHING_CHECKED = 3  # verify --all: the archive has no run, nothing was verified


def cmd_verify(args: argparse.Namespace) -> int:
    with Reader.open(args.url) as reader:
        report = reader.verify(None if args.all else args.runs)
        cache_dir = load_config(url=args.url, cache_dir=args.cache_dir).cache_dir
        where = reader.store.description
    errors = sum(p.severity == "error" for p in report.problems)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2, default=str))
    if report.runs == 0 and not report.problems:
        print(
            f"runarchive: 0 runs checked: {where} lists no run in its manifest, so nothing "
            "was verified (exit 3). Check the URL (--url, RUNARCHIVE_URL); a run is listed "
            "once its first flush is done",
            file=sys.stderr,
        )
        return EXIT_NOTHING_CHECKED
    if not args.json:
        for problem in report.problems:
            print(problem)
            if (hint := cli_recovery.repair_hint(problem, cache_dir)) is not None:
                print(f"    {hint}")
        print(
            f"{report.runs} runs, {report.segments} segments, {report.records} records, "
            f"{_human(report.bytes_read)} read in {report.seconds:.2f} s: {errors} errors, "
            f"{len(report.problems) - errors} warnings"
        )
    return 0 if report.ok else 1


def cmd_compact(args: argparse.Namespace) -> int:
    with _maintenance(args) as archive:
        results = archive.compact(
            None if args.all else args.run, dry_run=args.dry_run, reencrypt=args.reencrypt
        )
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
            f" -> {row['records_after']}, JSON {_human(row['raw_bytes_before'])} -> "
            f"{_human(row['raw_bytes_after'])}, read {_human(row['bytes_read'])}"
        )
    print(f"{len(rows)} runs; replaced segments are deleted by `runarchive gc` after the grace")
    return 0


def cmd_rekey(args: argparse.Namespace) -> int:
    with _maintenance(args) as archive:
        results = archive.rekey(None if args.all else args.run)
    if args.json:
        print(json.dumps([r.__dict__ for r in results], indent=2))
        return 0
    for r in results:
        what = f"{r.rewrapped} of {r.keys} data keys re-wrapped" if r.keys else "plaintext"
        froms = f" (from {', '.join(r.from_keks)})" if r.from_keks else ""
        print(f"{r.run_id:36} {what}{froms}")
    moved = sum(r.rewrapped for r in results)
    print(f"{len(results)} runs, {moved} data keys now under {archive.keyring.current}")
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    if args.file is None:  # print a key for RUNARCHIVE_ENCRYPTION_KEYS
        print(f"{args.id or 'k1'}={new_local_key()}")
        return 0
    kid = add_key_to_file(args.file, args.id)
    print(f"{kid} added to {args.file} and made current (older keys stay for reading)")
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    with _maintenance(args) as archive:
        report = archive.gc(dry_run=args.dry_run, grace=args.grace)
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
        f"{len(report.plan.objects)} objects, {_human(report.plan.bytes)}"
        + (" (dry run: nothing deleted)" if args.dry_run else " freed")
    )
    return 0


def cmd_hold(args: argparse.Namespace) -> int:
    with _maintenance(args) as archive:
        n = archive.hold(args.run) if args.command == "hold" else archive.release(args.run)
    what = "legal hold on" if args.command == "hold" else "legal hold released from"
    print(f"{what} {n} segment objects of run {args.run}")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    with Reader.open(args.url) as reader:
        result = reader.stats(args.run, objects=args.objects)
    print(
        json.dumps(result.as_dict(), indent=2, default=str) if args.json else format_stats(result)
    )
    return 0


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def cmd_status(args: argparse.Namespace) -> int:
    cfg = load_config(cache_dir=args.cache_dir)
    status = read_status(cfg.cache_dir, max_unflushed_bytes=cfg.cache_max_unflushed_bytes)
    if args.json:
        print(json.dumps(status.as_dict(), indent=2))
        return 0
    limit = status.max_unflushed_bytes or 0
    print(f"cache     {status.cache_dir}")
    print(f"archive   {status.archive_url}")
    share = f" ({100 * status.unflushed_bytes / limit:.1f} % of the {_human(limit)} limit)"
    print(
        f"unflushed {status.unflushed_records} records, {_human(status.unflushed_bytes)}"
        + (share if limit else "")
        + f"; oldest {_age(status.oldest_unflushed_age)}; "
        f"{len(status.failing)} of {len(status.runs)} runs failing to flush"
    )
    if status.runs:
        print(f"{'RUN':<28} {'STATUS':<10} {'LAST':>7} {'ARCHIVED':>8} {'UNFLUSHED':>17} OLDEST")
    for r in status.runs:
        flag = " (fenced)" if r.fenced else ""
        pending = f"{r.unflushed_records} / {_human(r.unflushed_bytes)}"
        print(
            f"{r.run_id:<28} {r.status:<10} {r.last_seq:>7} {r.archived_seq:>8} "
            f"{pending:>17} {_age(r.oldest_unflushed_age)}{flag}"
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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for docs and tests)."""
    parser = argparse.ArgumentParser(
        prog="runarchive", description="Archival checkpointer for long-running AI agents."
    )
    parser.add_argument(
        "--url", help="archive URL (default: $RUNARCHIVE_URL or ./.runarchive/archive)"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run a small simulated agent and report what was stored")
    demo.add_argument("--cache-dir", help="cache directory (default: ./.runarchive/cache)")
    demo.add_argument("--runs", type=int, default=4)
    demo.add_argument("--steps", type=int, default=300)
    demo.add_argument("--seed", type=int, default=7)
    demo.set_defaults(func=cmd_demo)

    show = sub.add_parser("show", help="print a run's metadata and segments")
    show.add_argument("run")
    show.add_argument("--json", action="store_true", help="print the run index as JSON")
    show.set_defaults(func=cmd_show)

    restore = sub.add_parser("restore", help="restore a run from the bucket and print it")
    restore.add_argument("run")
    restore.add_argument("--json", action="store_true", help="print index and records as JSON")
    restore.add_argument("--seq", type=int, help="restore up to this seq")
    restore.add_argument("--at", type=_parse_time, help="restore up to this time (ISO 8601)")
    restore.set_defaults(func=cmd_restore)

    runs = sub.add_parser("runs", help="list runs from the manifest (never lists the bucket)")
    runs.add_argument("--status", choices=["running", "completed", "failed"])
    runs.add_argument("--agent")
    runs.add_argument("--since", type=_parse_time, help="created at or after (ISO 8601)")
    runs.add_argument("--until", type=_parse_time, help="created at or before (ISO 8601)")
    runs.add_argument(
        "--limit", type=int, default=1000, help="runs per page (0: every run, one whole scan)"
    )
    runs.add_argument("--page", help="the page token the previous page printed (on stderr)")
    runs.add_argument("--json", action="store_true", help="print the manifest entries as JSON")
    runs.set_defaults(func=cmd_runs)

    interrupted = sub.add_parser(
        "interrupted", help="running runs whose owner stopped renewing its lease"
    )
    interrupted.add_argument(
        "--stale-after", type=float, default=0.0, help="seconds past the lease (default 0)"
    )
    interrupted.add_argument("--json", action="store_true")
    interrupted.set_defaults(func=cmd_interrupted)

    resume = sub.add_parser("resume", help="take over an interrupted run on this host")
    resume.add_argument("run")
    resume.add_argument("--cache-dir", help="cache directory (default: ./.runarchive/cache)")
    resume.set_defaults(func=cmd_resume)

    export = sub.add_parser(
        "export", help="write a self-contained, checkable bundle of runs (docs/export.md)"
    )
    export.add_argument("run_ids", nargs="*", metavar="RUN", help="run ids (or use a filter)")
    export.add_argument("--agent", help="runs of this agent (from the manifest)")
    export.add_argument("--since", type=_parse_time, help="created at or after (ISO 8601)")
    export.add_argument("--until", type=_parse_time, help="created at or before (ISO 8601)")
    export.add_argument("--status", choices=["running", "completed", "failed"])
    export.add_argument(
        "--out", required=True, help="a new FILE.tar, a new directory, or an s3:// / file:// URL"
    )
    export.add_argument(
        "--decrypt", action="store_true", help="decrypt encrypted runs into the bundle (needs keys)"
    )
    export.add_argument("--json", action="store_true", help="print the result as JSON")
    export.set_defaults(func=cmd_export)

    verify = sub.add_parser(
        "verify-export", help="check an export bundle; exit 0 only if it is sound"
    )
    verify.add_argument("bundle", metavar="PATH", help="a bundle .tar, directory or URL")
    verify.add_argument("--json", action="store_true", help="print the problems as JSON")
    verify.set_defaults(func=cmd_verify_export)

    check = sub.add_parser(
        "verify", help="read back runs and check checksums, chain, seqs; exit 0 only if sound"
    )
    check.add_argument("runs", nargs="*", metavar="RUN")
    check.add_argument("--all", action="store_true", help="every run of the archive")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.add_argument(
        "--cache-dir",
        help="a cache that may hold what the bucket lacks (default: ./.runarchive/cache); "
        "verify then says when `runarchive repair` can restore it",
    )
    check.set_defaults(func=cmd_verify)

    compact = sub.add_parser(
        "compact", help="re-apply the policy over ended runs and merge their segments"
    )
    compact.add_argument("run", nargs="?", metavar="RUN")
    compact.add_argument("--all", action="store_true", help="every completed or failed run")
    compact.add_argument("--dry-run", action="store_true", help="print the plan, write nothing")
    compact.add_argument(
        "--reencrypt", action="store_true", help="re-encrypt under a new data key (after rekey)"
    )
    compact.add_argument("--json", action="store_true")
    compact.add_argument("--cache-dir", help="cache directory (default: a temporary one)")
    compact.set_defaults(func=cmd_compact)

    gc = sub.add_parser("gc", help="delete retired and orphan objects older than the grace")
    gc.add_argument("--dry-run", action="store_true", help="print what would go, delete nothing")
    gc.add_argument("--grace", type=float, help="seconds (default: gc_grace_seconds, 3600)")
    gc.add_argument("--json", action="store_true")
    gc.add_argument("--cache-dir", help="cache directory (default: a temporary one)")
    gc.set_defaults(func=cmd_gc)

    status = sub.add_parser(
        "status", help="this host's unflushed backlog per run (read-only, beside a live agent)"
    )
    status.add_argument("--cache-dir", help="cache directory (default: ./.runarchive/cache)")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.set_defaults(func=cmd_status)

    rekey = sub.add_parser(
        "rekey", help="re-wrap runs' data keys with the current key (bodies stay as they are)"
    )
    rekey.add_argument("run", nargs="?", metavar="RUN")
    rekey.add_argument("--all", action="store_true", help="every run of the archive")
    rekey.add_argument("--json", action="store_true")
    rekey.add_argument("--cache-dir", help="cache directory (default: a temporary one)")
    rekey.set_defaults(func=cmd_rekey)

    keygen = sub.add_parser("keygen", help="make a local encryption key (docs/encryption.md)")
    keygen.add_argument("--file", help="add it to this key file and make it current")
    keygen.add_argument("--id", help="key id (default: k1 printed, or k<n>-<random> in a file)")
    keygen.set_defaults(func=cmd_keygen)

    stats = sub.add_parser("stats", help="a run's or the archive's storage, requests and cost")
    stats.add_argument("run", nargs="?", metavar="RUN", help="one run (default: the archive)")
    stats.add_argument("--objects", action="store_true", help="count objects (1 LIST/1,000)")
    stats.add_argument("--json", action="store_true", help="print the figures as JSON")
    stats.set_defaults(func=cmd_stats)

    for name, text in (
        ("hold", "put a legal hold on every segment of a run (S3 Object Lock)"),
        ("release", "lift the legal hold from every segment of a run"),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("run", metavar="RUN")
        cmd.add_argument("--cache-dir", help="cache directory (default: a temporary one)")
        cmd.set_defaults(func=cmd_hold)
    cli_recovery.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 on usage errors
    if args.command == "demo" and (args.runs < 1 or args.steps < 1):
        parser.error("--runs and --steps must be at least 1")
    if args.command == "verify" and bool(args.runs) == bool(args.all):
        parser.error("verify: give run ids or --all (not both)")
    if args.command in ("compact", "rekey") and bool(args.run) == bool(args.all):
        parser.error(f"{args.command}: give a run id or --all (not both)")
    try:
        return int(args.func(args))
    except RunArchiveError as exc:
        print(f"runarchive: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `runarchive restore X | head`
        return 0


if __name__ == "__main__":
    sys.exit(main())
