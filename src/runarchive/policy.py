"""The compression policy: which checkpoints a flush archives. Pure, no I/O.

Of a run's checkpoints, a flush keeps the first one of the run, the latest of
each name, and the last ``keep_last``; the others are dropped from the archive
(they stay readable from the local cache while it holds them). Events are never
dropped. The decision for a flush depends only on the records up to the flush's
last seq, so a retried flush of the same range makes the same choice and the
same bytes.

A checkpoint kept as "latest of its name" at one flush stays archived when a
later checkpoint of that name arrives; re-applying the policy over the whole
history is compaction's job.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field


class Policy(BaseModel):
    """Which checkpoints to archive. ``Policy(keep_all=True)`` archives every one."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    keep_all: bool = False
    keep_first: bool = True
    keep_latest_per_name: bool = True
    keep_last: int = Field(default=20, ge=0, le=2**63 - 1)  # SQLite INTEGER


@dataclass(frozen=True)
class PendingCheckpoint:
    """What the policy needs to know of one unflushed checkpoint."""

    seq: int
    name: str


def select_checkpoints(
    pending: Sequence[PendingCheckpoint], policy: Policy, first_checkpoint_seq: int | None
) -> set[int]:
    """Seqs of the ``pending`` checkpoints (in seq order, the run's newest ones) to archive.

    ``first_checkpoint_seq`` is the seq of the run's very first checkpoint.
    """
    if policy.keep_all:
        return {c.seq for c in pending}
    kept: set[int] = set()
    if policy.keep_first and first_checkpoint_seq is not None:
        kept.update(c.seq for c in pending if c.seq == first_checkpoint_seq)
    if policy.keep_latest_per_name:
        latest: dict[str, int] = {}
        for c in pending:
            latest[c.name] = c.seq
        kept.update(latest.values())
    if policy.keep_last:
        kept.update(c.seq for c in pending[-policy.keep_last :])
    return kept


@dataclass
class KeptBytes:
    """Running estimate of the uncompressed size of the next segment, updated per append.

    It applies the same rule as :func:`select_checkpoints` incrementally (O(names +
    keep_last) per checkpoint), so the flusher's byte trigger measures what a
    flush would really upload rather than every dropped snapshot.
    """

    policy: Policy
    first_checkpoint_seq: int | None = None
    events: int = 0
    _all: int = 0
    _latest: dict[str, tuple[int, int]] = field(default_factory=dict)
    _recent: deque[tuple[int, int]] = field(default_factory=deque)
    _first: tuple[int, int] | None = None

    def add_event(self, size: int) -> None:
        """Count an appended event's line size."""
        self.events += size

    def add_checkpoint(self, seq: int, name: str, size: int) -> None:
        """Count an appended checkpoint's line size."""
        self._all += size
        if self.first_checkpoint_seq is None:
            self.first_checkpoint_seq = seq
        if seq == self.first_checkpoint_seq:
            self._first = (seq, size)
        self._latest[name] = (seq, size)
        self._recent.append((seq, size))
        while len(self._recent) > self.policy.keep_last:
            self._recent.popleft()

    @property
    def total(self) -> int:
        """Estimated uncompressed bytes the next flush would upload."""
        if self.policy.keep_all:
            return self.events + self._all
        chosen: dict[int, int] = {}
        if self.policy.keep_first and self._first is not None:
            chosen[self._first[0]] = self._first[1]
        if self.policy.keep_latest_per_name:
            chosen.update(self._latest.values())
        chosen.update(self._recent)
        return self.events + sum(chosen.values())

    def reset(self, carried: Iterable[tuple[int, str, int]] = ()) -> None:
        """Start over after a flush; ``carried`` are checkpoints still pending."""
        self.events = self._all = 0
        self._latest.clear()
        self._recent.clear()
        self._first = None
        for seq, name, size in carried:
            self.add_checkpoint(seq, name, size)
