"""Who may write a run: the pure decision a writer makes when the bucket's index is
not the one it last wrote.

A writer holds its own copy of the run's index (the cache's ``index_json``: what it
last wrote, or claimed) and its identity: the ownership ``epoch`` and a random
``writer`` id per claim (``start_run``, ``resume``). When a conditional write of the
index fails, or a process starts again, it reads the bucket's index and decides:

* **adopt**: the bucket's index is this writer's own and at least as far as the
  cache knows (the answer to an index PUT was lost): take its ETag and watermark.
* **heal**: the bucket's index is this writer's own but behind its copy (a PUT was
  answered 200 and never stored), or missing although this writer wrote it, or an
  older owner's that this writer's takeover never replaced: write the copy again,
  after re-uploading the segments the bucket lacks.
* **fence**: another writer owns the run (a higher epoch, or another writer id at the
  same epoch): write nothing; the records the bucket does not have stay in the cache.
* **conflict**: the bucket and the copy diverged in a way no rule above explains.

No I/O here: :class:`~runarchive.engine.flush.FlushEngine` acts on the verdict.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from runarchive.format.model import RunIndex

Action = Literal["adopt", "heal", "fence", "conflict"]


@dataclass(frozen=True)
class Verdict:
    """What to do about the bucket's index, and why (for messages)."""

    action: Action
    reason: str


def extends(longer: RunIndex, shorter: RunIndex) -> bool:
    """Whether ``longer`` holds every segment of ``shorter``: the same object, or
    inside the range of a segment live compaction merged (level > 0), and
    ``shorter``'s segments come first (same writer: merges only ever join them)."""
    keys = {s.key for s in longer.segments}
    # A sweep rewrites one segment at its level (0 too): its ref carries a link.
    merged = [
        (s.first_seq, s.last_seq) for s in longer.segments if s.level > 0 or s.link is not None
    ]
    for ref in shorter.segments:
        if ref.key in keys:
            continue
        if not any(a <= ref.first_seq and ref.last_seq <= b for a, b in merged):
            return False
    return longer.last_seq >= shorter.last_seq


def held_through(ours: RunIndex, remote: RunIndex | None) -> int:
    """The last seq of the longest run of ``ours``'s segments that ``remote`` also
    starts with: what the bucket holds of what this writer archived (0: nothing).
    A fenced writer whose index write was lost counts the rest as not archived."""
    if remote is None:
        return 0
    held = 0
    for mine, theirs in zip(ours.segments, remote.segments, strict=False):
        if mine.key != theirs.key:
            break
        held = mine.last_seq
    # The next epoch began from an index this writer wrote: what it held then is this
    # writer's, wherever the new owner's live compaction has moved it since. (Not when
    # that index was another writer's of the same epoch: a claim this writer lost.)
    start = remote.epoch_starts.get(str(ours.epoch + 1))
    if remote.epoch > ours.epoch and start is not None and start.writer == ours.writer:
        held = max(held, min(start.seq, ours.last_seq))
    return held


def owner_of(index: RunIndex) -> str:
    """``host (pid N, epoch E)`` for messages."""
    who = index.owner_host or "another host"
    return f"{who} (pid {index.owner_pid}, epoch {index.epoch})"


def reconcile(
    *,
    epoch: int,
    writer: str,
    archived_seq: int,
    last_seq: int,
    ours: RunIndex | None,
    remote: RunIndex | None,
) -> Verdict:
    """Decide what a writer (``epoch``, ``writer``; its cache archived through
    ``archived_seq`` and holds up to ``last_seq``; ``ours`` is its copy of the index,
    ``None`` if it never wrote one) does about the bucket's index ``remote``."""
    if remote is None:
        if ours is None:
            return Verdict("adopt", "no index yet; the first flush writes it")
        return Verdict("heal", "the bucket has no index although this writer wrote one")
    if remote.epoch > epoch:
        return Verdict("fence", f"taken over by {owner_of(remote)}")
    if remote.epoch == epoch and remote.writer != writer:
        return Verdict("fence", f"claimed by {owner_of(remote)} at the same epoch")
    if remote.epoch < epoch:
        # This writer's takeover (or claim) never reached the bucket. It may be
        # written again only if the previous owner wrote nothing since.
        if ours is not None and extends(ours, remote) and remote.last_seq <= archived_seq:
            return Verdict("heal", "this writer's takeover was not stored")
        return Verdict(
            "fence",
            f"{owner_of(remote)} wrote on after this writer's takeover was lost",
        )
    if remote.last_seq > last_seq:
        return Verdict(
            "conflict",
            f"the bucket holds seqs up to {remote.last_seq}, beyond this host's last seq "
            f"{last_seq}, under this writer's own id: the cache lost records",
        )
    if remote.last_seq >= archived_seq:
        if ours is not None and not extends(remote, ours):
            if remote.last_seq == ours.last_seq and extends(ours, remote):
                # A live compaction's head write was answered and never stored: the
                # bucket holds the segments this writer merged, the copy the merge.
                return Verdict("heal", "a live compaction's index write was not stored")
            return Verdict("conflict", "the bucket's segments are not the ones this writer wrote")
        return Verdict("adopt", "this writer's own index (a lost response)")
    if ours is not None and extends(ours, remote):
        return Verdict(
            "heal",
            f"the bucket's index ends at seq {remote.last_seq}, this writer's at "
            f"{archived_seq}: an index write was answered and not stored",
        )
    return Verdict(
        "conflict",
        f"the bucket's index ends at seq {remote.last_seq}, before this host's "
        f"{archived_seq}, and is not a prefix of what this writer wrote",
    )
