"""Live compaction's planner: which segments of a running run to merge next. Pure.

A flush writes one small segment (level 0). Left alone, a week-long run would own
one object per flush, and the policy, applied per flush, would keep nearly every
checkpoint of a run that flushes often. Live compaction (``runarchive.engine.livecompact``)
fixes both while the run is live, one step at a time, chosen here:

* **merge**: when ``fanout`` consecutive segments of one level exist, the oldest
  ``fanout`` of them become one segment of the next level (at most ``max_bytes`` of
  raw JSON Lines: a segment that big is promoted instead, and at ``MAX_LEVEL``
  segments stay as they are). Levels never increase along the run (older segments
  have higher levels), so a run of ``n`` flushes has ``O(fanout * log n)`` segments.
* **sweep**: when the index holds more checkpoints the whole-history policy would
  drop than ``stale_ratio`` of those it keeps (at least ``min_stale``), the segment
  holding the most of them per byte is rewritten without them.

Every rewrite applies the policy over the **whole run** (:func:`keep_set`): the first
checkpoint, the latest of each name and the last ``keep_last``, taken from the
``ckpts`` the refs carry. A ref written before format 4 has no ``ckpts``: its
checkpoints count as kept and their names as unknown, so nothing is dropped because
of what it might hold; the merge that reads it learns them.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from runarchive.format.model import SegmentRef
from runarchive.policy import Policy

MAX_LEVEL = 12


def name_token(name: str, key: bytes | None) -> str:
    """How a checkpoint name is written into a ref's ``ckpts``: as is, or for an
    encrypted run (``key``: its data key) ``~`` and 16 hex digits of an HMAC, which
    tells names apart without revealing them."""
    if key is None:
        return name
    return "~" + hmac.new(key, b"runarchive:name:" + name.encode(), hashlib.sha256).hexdigest()[:16]


@dataclass(frozen=True)
class LiveStep:
    """One live compaction step over ``refs[start:stop]``."""

    kind: Literal["merge", "promote", "sweep"]
    start: int
    stop: int
    level: int  # of the resulting segment


def keep_set(refs: Sequence[SegmentRef], policy: Policy) -> set[int] | None:
    """Seqs of the checkpoints the whole-history policy keeps among the refs' known
    ``ckpts`` (``None``: keep everything, ``keep_all``)."""
    if policy.keep_all:
        return None
    kept: set[int] = set()
    if policy.keep_first:
        for ref in refs:
            if ref.checkpoints:
                if ref.ckpts:
                    kept.add(min(seq for seq, _ in ref.ckpts))
                break  # the run's first checkpoint is in the first ref that has any
    if policy.keep_latest_per_name:
        latest: dict[str, int] = {}
        for ref in refs:
            for seq, name in ref.ckpts or ():
                if seq > latest.get(name, 0):
                    latest[name] = seq
        kept.update(latest.values())
    need = policy.keep_last
    for ref in reversed(refs):
        if need <= 0:
            break
        if ref.ckpts is None:
            need -= ref.checkpoints  # unknown seqs: they are kept anyway
            continue
        newest = sorted((seq for seq, _ in ref.ckpts), reverse=True)[:need]
        kept.update(newest)
        need -= len(newest)
    return kept


def recent_floor(refs: Sequence[SegmentRef], policy: Policy) -> int:
    """The lowest seq among the last ``keep_last`` checkpoints (0: none protected)."""
    need, floor = policy.keep_last, 0
    for ref in reversed(refs):
        if need <= 0 or not ref.checkpoints:
            if need <= 0:
                break
            continue
        if ref.ckpts is None:
            need -= ref.checkpoints
            floor = ref.first_seq
            continue
        newest = sorted((seq for seq, _ in ref.ckpts), reverse=True)[:need]
        need -= len(newest)
        floor = newest[-1]
    return floor


def stale(ref: SegmentRef, kept: set[int] | None) -> int:
    """Checkpoints of ``ref`` the whole-history policy no longer keeps."""
    if kept is None or ref.ckpts is None:
        return 0
    return sum(1 for seq, _ in ref.ckpts if seq not in kept)


def _blocks(refs: Sequence[SegmentRef]) -> list[tuple[int, int]]:
    """``(start, stop)`` of each maximal run of refs of one level."""
    out: list[tuple[int, int]] = []
    start = 0
    for i in range(1, len(refs) + 1):
        if i == len(refs) or refs[i].level != refs[start].level:
            out.append((start, i))
            start = i
    return out


def plan_live(
    refs: Sequence[SegmentRef],
    policy: Policy,
    *,
    fanout: int = 8,
    max_bytes: int = 64 * 1024 * 1024,
    stale_ratio: float = 0.25,
    min_stale: int = 8,
) -> LiveStep | None:
    """The next step for a run whose index lists ``refs`` (``None``: nothing to do)."""
    # A merge above level 0 waits until its segments hold none of the last
    # ``keep_last`` checkpoints: merged earlier, those would go stale inside a big
    # segment, and dropping them then means rewriting it.
    floor = recent_floor(refs, policy) if not policy.keep_all else 0
    # Lowest level first: merging small recent segments is cheap and frequent.
    for start, stop in sorted(_blocks(refs), key=lambda b: refs[b[0]].level):
        level = refs[start].level
        if level >= MAX_LEVEL or stop - start < fanout:
            continue
        size, end = 0, start
        while end < start + fanout and size + refs[end].raw_bytes <= max_bytes:
            size += refs[end].raw_bytes
            end += 1
        if level > 0 and floor and refs[end - 1].last_seq >= floor:
            continue
        if end - start >= 2:
            return LiveStep("merge", start, end, level + 1)
        return LiveStep("promote", start, start + 1, level + 1)
    kept = keep_set(refs, policy)
    if kept is None:
        return None
    counts = [stale(r, kept) for r in refs]
    total = sum(counts)
    if total <= max(min_stale, stale_ratio * len(kept)):
        return None
    best = max(range(len(refs)), key=lambda i: (counts[i] / (refs[i].raw_bytes + 1), -i))
    if counts[best] == 0:
        return None
    return LiveStep("sweep", best, best + 1, refs[best].level)
