"""Text output shared by the commands: sizes, ages, a run index, manifest entries."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported by the commands that print them; --help loads none
    from runarchive.engine.manifest.core import RunEntry
    from runarchive.format.model import RunIndex


def human(n: float) -> str:
    """Bytes as B, KiB, MiB or GiB."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def age(seconds: float | None) -> str:
    """Seconds as ``41.0 s`` or ``3.5 min``; ``-`` for none."""
    if seconds is None:
        return "-"
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def print_index(index: RunIndex) -> None:
    """A run's metadata and segments, one per line."""
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
        f"segments  {len(index.segments)}, {human(index.stored_bytes)} stored "
        f"({human(index.raw_bytes)} uncompressed)"
    )
    for seg in index.segments:
        print(
            f"  {seg.first_seq:>8}-{seg.last_seq:<8} {seg.records:>6} rec "
            f"{human(seg.stored_bytes):>10}  {seg.key}"
        )


def print_entries(entries: list[RunEntry], *, as_json: bool) -> None:
    """Manifest entries as a table, or as a JSON list."""
    if as_json:
        print(json.dumps([e.model_dump(mode="json") for e in entries], indent=2))
        return
    print(f"{'run':36} {'agent':16} {'status':10} {'last seq':>8} {'owner':24} {'lease until'}")
    for e in entries:
        owner = f"{e.owner_host}:{e.owner_pid}#{e.epoch}" if e.owner_host else "-"
        lease = e.lease_expires_at.isoformat(timespec="seconds") if e.lease_expires_at else "-"
        print(f"{e.run_id:36} {e.agent[:16]:16} {e.status:10} {e.last_seq:>8} {owner:24} {lease}")
    print(f"{len(entries)} runs")
