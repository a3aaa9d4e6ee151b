"""``runarchive repair`` and ``runarchive fork``: the CLI side of :mod:`runarchive.engine.takeover`.

Both open the archive with the host's cache directory (the one holding the records),
so they run while the agent on that host is stopped (the cache allows one process).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from runarchive.archive import Archive
from runarchive.cache.status import held_records
from runarchive.compliance.verify import Problem

_SEG_RANGE = re.compile(r"/seg/(\d+)-(\d+)-")


def repair_hint(problem: Problem, cache_dir: str | Path) -> str | None:
    """For a segment the bucket lacks: whether the cache in ``cache_dir`` holds its
    records, so that ``runarchive repair`` there can put it back (read-only query)."""
    if problem.kind != "missing" or problem.key is None:
        return None
    found = _SEG_RANGE.search(problem.key)
    if found is None:
        return None
    first, last = int(found[1]), int(found[2])
    held = held_records(cache_dir, problem.run_id, first, last)
    if held == last - first + 1:
        return (
            f"repairable: the cache {cache_dir} holds seqs {first}-{last}; run "
            f"`runarchive repair {problem.run_id} --cache-dir {cache_dir}` (agent stopped)"
        )
    return f"not repairable from the cache {cache_dir} (it holds {held} of seqs {first}-{last})"


def cmd_repair(args: argparse.Namespace) -> int:
    with Archive.open(args.url, cache_dir=args.cache_dir) as archive:
        report = archive.repair(args.run)
    if not report.changed:
        print(f"{report.run_id}: sound ({report.reason}); nothing written")
        return 0
    print(f"{report.run_id}: repaired ({report.reason})")
    for key in report.reuploaded:
        print(f"    re-uploaded {key}")
    return 0


def cmd_fork(args: argparse.Namespace) -> int:
    with Archive.open(args.url, cache_dir=args.cache_dir) as archive:
        run = archive.fork(args.run, to=args.to)
        origin = run.metadata["forked_from"]
    print(
        f"forked    seqs {origin['first_seq']}-{origin['last_seq']} of {args.run} into "
        f"{run.run_id} ({run.last_seq} records, completed)"
    )
    return 0
