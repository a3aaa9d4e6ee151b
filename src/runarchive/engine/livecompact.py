"""Live compaction: the writer's flusher merges a running run's segments as they pile up.

:func:`runarchive.engine.levels.plan_live` (pure) picks one step; :class:`LiveCompaction`
(a base of :class:`~runarchive.engine.flush.FlushEngine`) executes it right after a flush,
under the run's lock, in the process that owns the run:

1. GET the segments of the window (each checked against its SHA-256);
2. keep every event and the checkpoints the whole-history policy keeps;
3. PUT the merged segment create-only, then HEAD it (a PUT answered and not stored
   must not leave the index naming a missing object: the inputs would be retired);
4. compare-and-swap the head naming it instead of the window, the replaced objects
   listed in ``retired`` (at most :data:`RETIRED_CAP`, the newest: the head stays
   small; ``gc`` treats the others as orphans, deleted once older than its grace);
5. DELETE the objects this process retired more than ``gc_grace_seconds`` ago (it
   remembers them in memory; after a restart ``gc`` collects what it forgot).

Why in the writer and not in a separate ``compact --live`` process: the head is the
one object whose compare-and-swap fences writers, so a second process rewriting it
would race the writer at every flush (each 412 costing both a re-read), and would need
an ownership protocol of its own. The writer already holds the lock, the head's ETag,
and usually the window in its memory; a step costs it ``fanout`` GETs and 3 writes
every ``fanout`` flushes or so.

The hash chain stays verifiable: a merged segment's ``prev_sha256`` is the first
replaced segment's, and its ``link`` is the value the next segment's ``prev_sha256``
names (the last replaced segment's hash), so ``prev_sha256 in {prev.sha256,
prev.link}`` holds along the index (docs/format.md §12).
"""

from __future__ import annotations

import logging
from collections import deque
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from runarchive.cache.core import RunRow
from runarchive.config import ArchiveConfig
from runarchive.crypto.sealing import seal_segment
from runarchive.engine.healing import Healing
from runarchive.engine.levels import LiveStep, keep_set, name_token, plan_live
from runarchive.engine.lines import Line, read_lines_of
from runarchive.errors import (
    ObjectNotFoundError,
    PreconditionFailedError,
    StoreError,
    StoreUnavailableError,
)
from runarchive.faults import fault_point
from runarchive.format.codec import (
    encode_segment,
    index_key,
    join_lines,
    segment_header,
    segment_key,
)
from runarchive.format.indexpages import to_head
from runarchive.format.model import (
    SEALED_FORMAT,
    DataKey,
    RetiredObject,
    RunIndex,
    SegmentRef,
    utcnow,
)
from runarchive.logs import log_run
from runarchive.policy import Policy
from runarchive.store import IfMatch

log = logging.getLogger("runarchive.livecompact")

RETIRED_CAP = 8  # retired objects a head lists (the newest; bounded head size)
MAX_STEPS = 4  # steps per flush_run: a backlog (an old run) is worked off over flushes


class LiveCompaction(Healing):
    """Live compaction of :class:`~runarchive.engine.flush.FlushEngine` (see the module)."""

    config: ArchiveConfig
    # Objects this process retired and will delete after the grace: run -> (key, when).
    _retiring: dict[str, deque[tuple[str, datetime]]]

    if TYPE_CHECKING:

        def policy(self, run_id: str) -> Policy: ...  # provided by FlushEngine

    def compact_live(self, run_id: str) -> int:
        """Run up to :data:`MAX_STEPS` live compaction steps on a run this writer
        holds (caller holds its lock); the number done. A step that loses its
        compare-and-swap re-reads the index (adopt, heal or fence) and stops."""
        done = 0
        while done < MAX_STEPS and self.config.live_compaction:
            row = self.cache.run(run_id)
            if row is None or row.fenced or row.index_etag is None:
                break
            index = self._ours(row)
            if index is None:
                break
            step = plan_live(
                index.segments,
                self.policy(run_id),
                fanout=self.config.compaction_fanout,
                max_bytes=self.config.compaction_max_bytes,
            )
            if step is None:
                break
            if not self._step(row, index, step):
                break
            done += 1
        return done

    def _step(self, row: RunRow, index: RunIndex, step: LiveStep) -> bool:
        refs = list(index.segments)
        window = refs[step.start : step.stop]
        if step.kind == "promote":
            refs[step.start] = window[0].model_copy(update={"level": step.level})
            return self._commit(row, index, refs, [])
        keyring = self.keyring if self.keyring is not None and self.keyring.writes else None
        lines = read_lines_of(self.store, index, window, keyring)
        data_key = keyring.write_key(row.run_id, index.keys) if keyring is not None else None
        plain = data_key[1] if data_key is not None else None
        known = [
            r if r.ckpts is not None else r.model_copy(update={"ckpts": _ckpts(part, plain)})
            for r, part in zip(window, lines, strict=True)
        ]
        kept = keep_set([*refs[: step.start], *known, *refs[step.stop :]], self.policy(row.run_id))
        chosen = [
            ln
            for part in lines
            for ln in part
            if ln.type != "checkpoint" or kept is None or ln.seq in kept
        ]
        after = refs[step.stop] if step.stop < len(refs) else None
        merged, body = self._encode_merge(row, window, after, chosen, step.level, data_key)
        self._put_segment(row.run_id, merged, body)
        fault_point("live.after_segment_put")
        if self.store.head(merged.key) is None:
            raise StoreUnavailableError(
                f"the merged segment {merged.key!r} was answered as stored and is not in "
                f"{self.store.description}; the merge is dropped (nothing changed)",
                key=merged.key,
            )
        refs[step.start : step.stop] = [merged]
        retire = [r.key for r in window if r.key != merged.key]
        return self._commit(row, index, refs, retire)

    def _encode_merge(
        self,
        row: RunRow,
        window: list[SegmentRef],
        after: SegmentRef | None,
        chosen: list[Line],
        level: int,
        data_key: tuple[DataKey, bytes] | None,
    ) -> tuple[SegmentRef, bytes]:
        first, last = window[0].first_seq, window[-1].last_seq
        prev = window[0].prev_sha256
        raws = [ln.raw for ln in chosen]
        fmt = SEALED_FORMAT if data_key is not None else None
        header = segment_header(row.run_id, first, last, len(chosen), prev, fmt or 2)
        dek: str | None = None
        plain: bytes | None = None
        if data_key is None:
            enc = encode_segment(raws, self.config.compression_level, header)
        else:
            key, plain = data_key
            enc = seal_segment(
                row.run_id,
                first,
                last,
                join_lines(raws, header),
                key,
                plain,
                self.config.compression_level,
            )
            dek = key.id
        cps = [ln for ln in chosen if ln.type == "checkpoint"]
        ref = SegmentRef(
            key=segment_key(row.run_id, first, last, enc.sha256, sealed=dek is not None),
            first_seq=first,
            last_seq=last,
            records=len(chosen),
            checkpoints=len(cps),
            events=len(chosen) - len(cps),
            dropped=last - first + 1 - len(chosen),
            stored_bytes=len(enc.body),
            raw_bytes=enc.raw_bytes,
            sha256=enc.sha256,
            first_ts=window[0].first_ts,
            last_ts=window[-1].last_ts,
            prev_sha256=prev,
            level=level,
            # What the next segment names as its predecessor (it was written while the
            # last replaced segment ended the chain).
            link=after.prev_sha256 if after is not None else window[-1].sha256,
            ckpts=tuple((ln.seq, name_token(ln.name, plain)) for ln in cps),
            **({"format": SEALED_FORMAT, "dek": dek} if dek is not None else {}),
        )
        return ref, enc.body

    def _commit(
        self, row: RunRow, index: RunIndex, refs: list[SegmentRef], retire: list[str]
    ) -> bool:
        """CAS the head with ``refs``; False (after adopting the bucket's) on a 412."""
        now = utcnow()
        old = RunIndex.model_validate_json(row.index_json) if row.index_json else None
        old_pages = {p.key for p in old.pages} if old is not None else set()
        retired = [*index.retired, *(RetiredObject(key=k, retired_at=now) for k in retire)]
        grace = timedelta(seconds=self.config.gc_grace_seconds)
        keep = [r for r in retired if r.retired_at + grace > now][-RETIRED_CAP:]
        last = refs[-1] if refs else None
        new = index.model_copy(
            update={
                "segments": tuple(refs),
                "retired": tuple(keep),
                "chain_head": last.sha256 if last else index.chain_head,
                "updated_at": now,
            }
        )
        # Pages the new head no longer names are retired too.
        head = to_head(new)[0]
        gone_pages = sorted(old_pages - {p.key for p in head.pages})
        if gone_pages:
            keep = (keep + [RetiredObject(key=k, retired_at=now) for k in gone_pages])[
                -RETIRED_CAP:
            ]
            new = new.model_copy(update={"retired": tuple(keep)})
        try:
            etag, body = self._save_index(row, new, IfMatch(row.index_etag or ""))
        except PreconditionFailedError:
            self._adopt(row, self._remote_index(row.run_id))
            return False
        fault_point("live.after_index_put")
        self.cache.mark_archived(row.run_id, row.archived_seq, etag, body, None)
        self.stats.live_steps += 1
        queue = self._retiring.setdefault(row.run_id, deque())
        queue.extend((key, now) for key in [*retire, *gone_pages])
        due = []
        while queue and queue[0][1] + grace <= now:
            due.append(queue.popleft()[0])
        if due and not self._head_is(row.run_id, etag):
            # The head this writer just wrote is not the bucket's (answered 200 and never
            # stored, or replaced since): the bucket's head may still name what this
            # writer retired. Delete nothing until a head of ours is confirmed.
            queue.extendleft((key, now - grace) for key in reversed(due))
            due = []
        live = {r.key for r in refs} | {p.key for p in head.pages}
        for key in due:
            if key not in live:  # never an object the index names (defensive)
                self.store.delete(key)
        log_run(
            log,
            logging.DEBUG,
            row.run_id,
            row.archived_seq,
            "live compaction: %d segments now, %d retired, %d deleted",
            len(refs),
            len(retire),
            len(due),
        )
        return True

    def _head_is(self, run_id: str, etag: str) -> bool:
        """Whether the bucket's head is still the one written with ``etag`` (1
        conditional GET: a 304 when it is)."""
        try:
            return self.store.get_if_changed(index_key(run_id), etag) is None
        except (ObjectNotFoundError, StoreError):
            return False


def _ckpts(lines: list[Line], key: bytes | None) -> tuple[tuple[int, str], ...]:
    return tuple((ln.seq, name_token(ln.name, key)) for ln in lines if ln.type == "checkpoint")
