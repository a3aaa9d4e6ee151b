"""The checking commands: ``verify``, ``export`` and ``verify-export``. Imported only
when one of them runs (start-up time)."""

from __future__ import annotations

import argparse
import json
import sys

from runarchive.cli import exitcodes, progress
from runarchive.cli import recovery as cli_recovery
from runarchive.cli.output import human
from runarchive.compliance.export import verify_export
from runarchive.config import load_config
from runarchive.crypto.keyring import keyring_for
from runarchive.reader import Reader


def cmd_export(args: argparse.Namespace) -> int:
    bar = progress.bar("exporting", args.progress)
    try:
        with Reader.open(args.url) as reader:
            result = reader.export(
                args.run_ids or None,
                agent=args.agent,
                since=args.since,
                until=args.until,
                status=args.status,
                dest=args.out,
                decrypt=args.decrypt,
                progress=bar,
            )
    finally:
        bar.close()
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
        return exitcodes.OK
    for run in result.runs:
        print(
            f"{run.run_id:36} {run.status:10} {run.records:>8} records {run.segments:>5} "
            f"segments  chain head {(run.chain_head or '-')[:16]}"
        )
    print(
        f"exported  {len(result.runs)} run{'' if len(result.runs) == 1 else 's'} to "
        f"{result.dest} ({result.kind}, "
        f"{result.files} files, {human(result.bytes)})"
    )
    print(f"check it  runarchive verify-export {args.out}   (or sha256sum -c, see its README)")
    return exitcodes.OK


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
    return exitcodes.DAMAGE if problems else exitcodes.OK


def cmd_verify(args: argparse.Namespace) -> int:
    bar = progress.bar("verifying", args.progress)
    try:
        with Reader.open(args.url) as reader:
            report = reader.verify(None if args.all else args.runs, progress=bar)
            cache_dir = load_config(url=args.url, cache_dir=args.cache_dir).cache_dir
            where = reader.store.description
    finally:
        bar.close()
    errors = sum(p.severity == "error" for p in report.problems)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2, default=str))
    if report.runs == 0 and not report.problems:
        print(
            f"runarchive: 0 runs checked: {where} lists no run in its manifest, so nothing "
            f"was verified (exit {exitcodes.NOTHING_CHECKED}). Check the URL (--url, "
            "RUNARCHIVE_URL); a run is listed once its first flush is done",
            file=sys.stderr,
        )
        return exitcodes.NOTHING_CHECKED
    if not args.json:
        for problem in report.problems:
            print(problem)
            if (hint := cli_recovery.repair_hint(problem, cache_dir)) is not None:
                print(f"    {hint}")
        print(
            f"{report.runs} runs, {report.segments} segments, {report.records} records, "
            f"{human(report.bytes_read)} read in {report.seconds:.2f} s: {errors} errors, "
            f"{len(report.problems) - errors} warnings"
        )
    return exitcodes.OK if report.ok else exitcodes.DAMAGE
