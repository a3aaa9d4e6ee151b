"""Compaction: re-apply the policy over a run's whole history, in fewer, larger segments.

At each flush the policy only sees that flush's checkpoints, so a checkpoint kept as
"latest of its name" then stays archived after a later one of that name arrives,
and a long run leaves one small segment per flush. Compaction fixes both:

1. :func:`plan_compaction` (pure) takes the run's archived record lines and decides
   which checkpoints the policy keeps over the whole history (events always stay)
   and how to cut them into segments of at most ``max_records`` / ``max_bytes``;
2. :func:`compact_run` reads the segments (checking each SHA-256), writes the new
   segments as a fresh hash chain (create-only), swaps the run index by
   compare-and-swap, and lists the replaced segments as ``retired``: they stay in the
   bucket until ``gc`` deletes them after the grace period, so a restore or an export
   that read the previous index never finds an object missing.

Only runs that have ended are compacted: a running run's index belongs to its writer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from runarchive import telemetry
from runarchive.config import ArchiveConfig
from runarchive.crypto.keyring import Keyring
from runarchive.crypto.sealing import open_index, seal_index, seal_segment, sealed_metadata
from runarchive.engine.lines import Line, read_lines
from runarchive.engine.manifest.core import Manifest
from runarchive.errors import (
    ConfigError,
    EncryptionError,
    IndexConflictError,
    ObjectNotFoundError,
    PreconditionFailedError,
    RunNotFoundError,
    RunStateError,
)
from runarchive.faults import fault_point
from runarchive.format.codec import (
    encode_segment,
    index_key,
    join_lines,
    segment_header,
    segment_key,
)
from runarchive.format.indexpages import load_index
from runarchive.format.model import (
    SEALED_FORMAT,
    CompactionRecord,
    RetiredObject,
    RunIndex,
    SegmentRef,
    utcnow,
    validate_run_id,
)
from runarchive.logs import log_run
from runarchive.policy import PendingCheckpoint, Policy, select_checkpoints
from runarchive.store import IfMatch, Store

log = logging.getLogger("runarchive.compact")


@dataclass(frozen=True)
class PlannedSegment:
    """A segment the compaction will write: its seq range and its record lines."""

    first_seq: int
    last_seq: int
    lines: tuple[Line, ...]

    @property
    def raw_bytes(self) -> int:
        """Bytes of the record lines (newlines included, header excluded)."""
        return sum(len(line.raw) + 1 for line in self.lines)


@dataclass(frozen=True)
class CompactionPlan:
    """What a compaction reads, writes and retires."""

    run_id: str
    before: tuple[SegmentRef, ...]
    after: tuple[PlannedSegment, ...]
    records_before: int
    dropped: tuple[int, ...]  # seqs of checkpoints the policy no longer keeps
    reencrypt: bool = False  # segments or fields not under the current key (or plaintext)

    @property
    def records_after(self) -> int:
        """Records in the new segments."""
        return sum(len(s.lines) for s in self.after)

    @property
    def worthwhile(self) -> bool:
        """Whether it would drop a checkpoint, reduce the number of segments or move the
        run under the current encryption key."""
        return bool(self.dropped) or len(self.after) < len(self.before) or self.reencrypt

    def summary(self) -> dict[str, Any]:
        """Objects read, written and retired; record and byte counts (``--dry-run``)."""
        return {
            "run_id": self.run_id,
            "objects_read": len(self.before),
            "bytes_read": sum(s.stored_bytes for s in self.before),
            "objects_written": len(self.after) if self.worthwhile else 0,
            "objects_retired": len(self.before) if self.worthwhile else 0,
            "records_before": self.records_before,
            "records_after": self.records_after,
            "checkpoints_dropped": len(self.dropped),
            "raw_bytes_before": sum(s.raw_bytes for s in self.before),
            "raw_bytes_after": sum(s.raw_bytes for s in self.after),
            "stored_bytes_before": sum(s.stored_bytes for s in self.before),
        }


def plan_compaction(
    index: RunIndex,
    lines: list[Line],
    policy: Policy,
    *,
    max_records: int = 16_384,
    max_bytes: int = 32 * 1024 * 1024,
) -> CompactionPlan:
    """Decide the compacted layout of a run from its archived record lines. Pure.

    The policy is applied to every archived checkpoint at once (the run's first
    checkpoint is the lowest archived one); events are all kept. The new segments
    cover ``1..index.last_seq`` contiguously, each at most ``max_records`` records
    and about ``max_bytes`` of JSON.
    """
    lines = sorted(lines, key=lambda ln: ln.seq)
    cps = [PendingCheckpoint(ln.seq, ln.name) for ln in lines if ln.type == "checkpoint"]
    kept = select_checkpoints(cps, policy, cps[0].seq if cps else None)
    chosen = [ln for ln in lines if ln.type != "checkpoint" or ln.seq in kept]
    dropped = tuple(c.seq for c in cps if c.seq not in kept)
    groups: list[list[Line]] = [[]]
    size = 0
    for ln in chosen:
        if groups[-1] and (len(groups[-1]) >= max_records or size + len(ln.raw) > max_bytes):
            groups.append([])
            size = 0
        groups[-1].append(ln)
        size += len(ln.raw) + 1
    after: list[PlannedSegment] = []
    first = 1
    for i, group in enumerate(groups):
        last = index.last_seq if i == len(groups) - 1 else group[-1].seq
        after.append(PlannedSegment(first, last, tuple(group)))
        first = last + 1
    if index.last_seq == 0:
        after = []
    return CompactionPlan(index.run_id, index.segments, tuple(after), len(lines), dropped)


@dataclass
class CompactionResult:
    """What :func:`compact_run` did (or, with ``dry_run``, would do)."""

    plan: CompactionPlan
    done: bool
    stored_bytes_after: int = 0
    written: list[str] = field(default_factory=list)
    skipped: str | None = None  # why the run was not even read (compact --all)

    @classmethod
    def skip(cls, index: RunIndex, why: str) -> CompactionResult:
        """A run left alone: nothing read, nothing written."""
        return cls(CompactionPlan(index.run_id, index.segments, (), 0, ()), False, skipped=why)


@telemetry.traced(
    "runarchive.compact",
    lambda store, index, *_, **__: {"run_id": index.run_id, "segments_before": len(index.segments)},
    lambda res: {"segments_after": len(res.plan.after if res.done else res.plan.before)},
)
def compact_run(
    store: Store,
    index: RunIndex,
    etag: str,
    policy: Policy,
    *,
    level: int = 3,
    dry_run: bool = False,
    workers: int = 8,
    max_records: int = 16_384,
    max_bytes: int = 32 * 1024 * 1024,
    keyring: Keyring | None = None,
    fresh_key: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> CompactionResult:
    """Compact one ended run whose index (with ETag ``etag``) was just read.

    With a ``keyring`` that encrypts, the new segments and the index's sealed fields
    are (re-)encrypted under the current key, and a run with anything not under it
    is worth compacting for that alone; an encrypted run without one is refused.
    ``fresh_key`` re-encrypts everything under a new data key even when the run's
    keys are already under the current KEK (after ``rekey``: a data key an old KEK
    once wrapped is retired with it).
    Raises ``RunStateError`` for a running run and ``IndexConflictError`` if the index
    changed meanwhile (the new segments are then deleted again). Cost: 1 GET per old
    segment, 1 PUT per new one, 1 PUT for the index; nothing is deleted here.
    ``progress`` is told ``(segments read, segments)``.
    """
    if index.status == "running":
        raise RunStateError(
            f"run {index.run_id!r} is still running; compact it once it has completed or "
            "failed (its writer owns the index until then)"
        )
    sealer = keyring if keyring is not None and keyring.writes else None
    if sealer is None and index.keys:
        raise EncryptionError(
            f"run {index.run_id!r} is encrypted and this archive has no key to encrypt with: "
            "compacting it would rewrite it in plaintext. Set encryption and its key."
        )
    plan = plan_compaction(
        index,
        read_lines(store, index, workers, keyring, progress),
        policy,
        max_records=max_records,
        max_bytes=max_bytes,
    )
    if sealer is not None and (fresh_key or _needs_reencryption(index, sealer)):
        plan = replace(plan, reencrypt=True)
    if dry_run or not plan.worthwhile:
        return CompactionResult(plan, done=False)
    refs: list[SegmentRef] = []
    written: list[str] = []
    prev: str | None = None
    data_key = None
    if sealer is not None:
        data_key = (
            sealer.new_key(index.run_id)
            if fresh_key
            else sealer.write_key(index.run_id, index.keys)
        )
        opened = seal_index(
            open_index(index, keyring, index_key(index.run_id)).model_copy(update={"sealed": {}}),
            sealer,
            data_key,
        )
    for seg in plan.after:
        lines = [ln.raw for ln in seg.lines]
        if data_key is None:
            header = segment_header(index.run_id, seg.first_seq, seg.last_seq, len(seg.lines), prev)
            enc = encode_segment(lines, level, header)
        else:
            header = segment_header(
                index.run_id, seg.first_seq, seg.last_seq, len(seg.lines), prev, SEALED_FORMAT
            )
            enc = seal_segment(
                index.run_id,
                seg.first_seq,
                seg.last_seq,
                join_lines(lines, header),
                data_key[0],
                data_key[1],
                level,
            )
        key = segment_key(
            index.run_id, seg.first_seq, seg.last_seq, enc.sha256, sealed=data_key is not None
        )
        cps = sum(ln.type == "checkpoint" for ln in seg.lines)
        span = seg.last_seq - seg.first_seq + 1
        known = any(old.key == key for old in index.segments)
        if not known:
            try:
                store.put(key, enc.body, mode="create", immutable=True)
                written.append(key)
            except PreconditionFailedError:
                pass  # an earlier, interrupted compaction wrote the same bytes
        refs.append(
            SegmentRef(
                key=key,
                first_seq=seg.first_seq,
                last_seq=seg.last_seq,
                records=len(seg.lines),
                checkpoints=cps,
                events=len(seg.lines) - cps,
                dropped=span - len(seg.lines),
                stored_bytes=len(enc.body),
                raw_bytes=enc.raw_bytes,
                sha256=enc.sha256,
                first_ts=_first_ts(seg, index),
                last_ts=_last_ts(seg, index),
                prev_sha256=prev,
                **({} if data_key is None else {"format": SEALED_FORMAT, "dek": data_key[0].id}),
            )
        )
        prev = enc.sha256
    fault_point("compact.after_segments")
    now = utcnow()
    new_keys = {r.key for r in refs}
    retired = (
        *index.retired,
        *(
            RetiredObject(key=s.key, retired_at=now)
            for s in index.segments
            if s.key not in new_keys
        ),
    )
    record = CompactionRecord(
        at=now,
        segments_before=len(index.segments),
        segments_after=len(refs),
        records_before=plan.records_before,
        records_after=plan.records_after,
        stored_bytes_before=index.stored_bytes,
        stored_bytes_after=sum(r.stored_bytes for r in refs),
        old_chain_head=index.chain_head,
    )
    new = index.model_copy(
        update={
            "segments": tuple(refs),
            "chain_head": prev,
            "retired": retired,
            "compactions": (*index.compactions, record),
            "updated_at": now,
        }
    )
    if sealer is not None:
        used = {r.dek for r in refs} | {v.dek for v in opened.sealed.values()}
        new = new.model_copy(
            update={
                "format": SEALED_FORMAT,
                "sealed": opened.sealed,
                "metadata": opened.metadata,  # emptied by seal_index
                "result": opened.result,
                "error": opened.error,
                # Keys of the retired segments are dropped: readers of the previous
                # index have them, and rekey then only needs to touch live ones.
                "keys": tuple(k for k in opened.keys if k.id in used),
            }
        )
    try:
        store.put(index_key(index.run_id), new.model_dump_json().encode(), mode=IfMatch(etag))
    except PreconditionFailedError:
        for key in written:
            store.delete(key)
        raise IndexConflictError(
            f"run {index.run_id!r}: its index changed during the compaction; nothing was "
            "changed, run it again"
        ) from None
    fault_point("compact.after_index")
    if sealer is not None:
        sealer.persisted(index.run_id, new.keys)
    log_run(
        log,
        logging.DEBUG,
        index.run_id,
        index.last_seq,
        "compacted %d segments into %d (%d records into %d)",
        len(index.segments),
        len(refs),
        plan.records_before,
        plan.records_after,
    )
    return CompactionResult(plan, True, record.stored_bytes_after, written)


def compact_runs(
    store: Store,
    manifest: Manifest,
    keyring: Keyring,
    config: ArchiveConfig,
    run_id: str | None,
    *,
    index_of: Callable[[str], RunIndex],
    dry_run: bool = False,
    reencrypt: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> list[CompactionResult]:
    """Compact one ended run, or (``None``) every completed or failed run the
    ``manifest`` lists, then patch each one's manifest entry to the new chain; see
    :meth:`Archive.compact`. ``config`` gives the default policy, the compression
    level and the workers; ``index_of`` reads a run's index as stored (after a
    compaction, for the entry). ``progress`` is told ``(segments read, segments)`` for
    one run, ``(runs done, runs)`` for all."""
    if reencrypt and not keyring.writes:
        raise ConfigError(
            "compact --reencrypt needs a key to encrypt with: set encryption "
            "(RUNARCHIVE_ENCRYPTION) and the current key"
        )
    if run_id is None:
        listed = {e.run_id: e for e in manifest.entries(limit=None)}
        ids = [r for r, e in listed.items() if e.status != "running"]
    else:
        ids = [validate_run_id(run_id)]
        listed = manifest.lookup(ids)
    results: list[CompactionResult] = []
    for rid in ids:
        if progress is not None and run_id is None and results:
            progress(len(results), len(ids))
        key = index_key(rid)
        try:
            got = store.get(key)
        except ObjectNotFoundError:
            raise RunNotFoundError(f"no run {rid!r} in {store.description}") from None
        index = load_index(store, got.body, key)
        if run_id is None and index.keys and not keyring.writes:
            log_run(
                log,
                logging.WARNING,
                rid,
                index.last_seq,
                "encrypted and this archive has no key to encrypt with: not compacted",
            )
            results.append(CompactionResult.skip(index, "encrypted; no key to encrypt"))
            continue
        own = Policy.model_validate(index.policy) if index.policy else config.policy
        result = compact_run(
            store,
            index,
            got.etag,
            own,
            level=config.compression_level,
            dry_run=dry_run,
            workers=config.restore_workers,
            keyring=keyring,
            fresh_key=reencrypt,
            progress=progress if run_id is not None else None,
        )
        entry = listed.get(rid)
        # Also when nothing was compacted now: a compaction killed between its index
        # swap and this patch left the manifest on the old chain.
        stale = entry is not None and getattr(entry, "chain_head", None) != index.chain_head
        if result.done or (stale and not dry_run):
            _patch_entry(manifest, rid, index_of(rid) if result.done else index)
        results.append(result)
    if progress is not None and run_id is None and ids:
        progress(len(results), len(ids))
    return results


def _patch_entry(manifest: Manifest, run_id: str, new: RunIndex) -> None:
    """Point a finished run's manifest entry at its new chain (and sealed metadata)."""
    sealed = sealed_metadata(new)
    manifest.patch_done(
        run_id,
        {
            "chain_head": new.chain_head,
            "stored_bytes": new.stored_bytes,
            "records": sum(s.records for s in new.segments),
        }
        | (
            {  # re-encrypted: the entry's copy follows the index's
                "sealed_metadata": sealed.value.model_dump(mode="json"),
                "metadata_key": sealed.key.model_dump(mode="json"),
            }
            if sealed is not None
            else {}
        ),
    )


def _needs_reencryption(index: RunIndex, keyring: Keyring) -> bool:
    """Whether a segment or sealed field of ``index`` is not under the current key."""
    current = {k.id for k in index.keys if k.kek == keyring.current}
    return any(r.dek not in current for r in index.segments) or any(
        v.dek not in current for v in index.sealed.values()
    )


def _first_ts(seg: PlannedSegment, index: RunIndex) -> datetime:
    # The ts of the record at first_seq, which may be a dropped one: the old refs
    # that start there know it; otherwise the first kept line's.
    for ref in index.segments:
        if ref.first_seq == seg.first_seq:
            return ref.first_ts
    return datetime.fromisoformat(seg.lines[0].ts) if seg.lines else index.created_at


def _last_ts(seg: PlannedSegment, index: RunIndex) -> datetime:
    for ref in index.segments:
        if ref.last_seq == seg.last_seq:
            return ref.last_ts
    return datetime.fromisoformat(seg.lines[-1].ts) if seg.lines else index.updated_at
