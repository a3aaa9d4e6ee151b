"""The flush protocol: what one flush of one run does to the bucket (cache → segment →
index → manifest), and what one lease renewal writes. *When* flushes and renewals
happen, and the retries with back-off, are the background flusher's
(:mod:`runarchive.engine.flusher`).

One flush of one run, in order:

1. read the run's oldest pending records from the cache (at most
   ``max_segment_records``);
2. apply the compression policy; encode kept checkpoints and all events as one
   zstd segment;
3. PUT the segment create-only under its deterministic key (a 412 means the same
   bytes are already there: a retried flush);
4. PUT the run index with the segment appended, If-Match the ETag we last wrote
   (create-only for the first); on 412 re-read the index and reconcile;
5. move the run's archived-seq watermark in the cache (one row); evict old records.

A crash between any two steps loses nothing: records stay pending in the cache
until step 5, and step 4 is the only step that makes a segment visible. A crash
after 3 leaves an orphan segment that no index names; a crash after 4 is found at
the next flush by the 412 of step 4 (or by the first-flush index read).
"""

from __future__ import annotations

import logging
import os
import threading
from datetime import datetime, timedelta

from runarchive import telemetry
from runarchive.cache.core import Cache, RecordInfo, RunRow
from runarchive.config import ArchiveConfig
from runarchive.crypto.keyring import Keyring
from runarchive.crypto.sealing import seal_index, seal_segment, sealed_metadata
from runarchive.engine.healing import FlushStats, HealReport
from runarchive.engine.levels import name_token
from runarchive.engine.livecompact import LiveCompaction
from runarchive.engine.manifest.core import Manifest, RunEntry
from runarchive.errors import (
    EncryptionError,
    FencedError,
    IndexConflictError,
    PreconditionFailedError,
)
from runarchive.faults import fault_point
from runarchive.format.codec import (
    encode_segment,
    join_lines,
    segment_header,
    segment_key,
)
from runarchive.format.jsonvalue import loads
from runarchive.format.model import SEALED_FORMAT, RunIndex, SegmentRef, utcnow
from runarchive.logs import log_run
from runarchive.policy import PendingCheckpoint, Policy, select_checkpoints
from runarchive.store import IfMatch, PutMode, Store

log = logging.getLogger("runarchive.flush")

# FlushStats and HealReport live in runarchive.engine.healing; importable from here too.
__all__ = ["FlushEngine", "FlushStats", "HealReport"]


def _index_from_row(row: RunRow) -> RunIndex:
    return RunIndex(
        run_id=row.run_id,
        agent=row.agent,
        metadata=loads(row.metadata),
        created_at=datetime.fromisoformat(row.created_at),
        updated_at=datetime.fromisoformat(row.updated_at),
        policy=loads(row.policy) if row.policy else None,
    )


def _finished(row: RunRow) -> bool:
    """Ended, every record and the end in the bucket, listed as done: nothing to flush."""
    return (
        row.status != "running"
        and bool(row.status_archived)
        and row.manifest_state == 2
        and row.archived_seq == row.last_seq
    )


def _ts(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _with_status(index: RunIndex, row: RunRow) -> RunIndex:
    return index.model_copy(
        update={
            "status": row.status,
            "ended_at": datetime.fromisoformat(row.ended_at) if row.ended_at else None,
            "result": loads(row.result) if row.result is not None else None,
            "error": row.error,
            "updated_at": utcnow(),
        }
    )


class FlushEngine(LiveCompaction):
    """Runs the flush protocol for one run at a time (per-run lock); thread-safe."""

    def __init__(
        self, cache: Cache, store: Store, config: ArchiveConfig, keyring: Keyring | None = None
    ) -> None:
        self.cache, self.store, self.config = cache, store, config
        self.keyring = keyring
        self.manifest = Manifest(
            store, keyring, host=config.host_id, lease_seconds=config.lease_seconds
        )
        self.pid = os.getpid()
        # Runs another host took over (appends refuse), with what this host learnt of it.
        self.fenced: dict[str, str] = {}
        # Runs this process writes (started, resumed or reattached here). Only their
        # leases are renewed: a run merely recovered from the cache of a process that
        # died must be allowed to look interrupted.
        self.live: set[str] = set()
        self.stats = FlushStats()
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._synced: set[str] = set()
        self._policies: dict[str, Policy] = {}
        self._retiring = {}

    def policy(self, run_id: str) -> Policy:
        """The compression policy of a run: its own, else the archive's."""
        got = self._policies.get(run_id)
        if got is None:
            row = self.cache.run(run_id)
            own = row.policy if row is not None else None
            got = Policy.model_validate_json(own) if own else self.config.policy
            self._policies[run_id] = got
        return got

    def forget(self, run_id: str) -> None:
        """Drop what this engine remembers of a run (deleted, or ended and archived):
        a later flush of it re-reads its index first."""
        self._policies.pop(run_id, None)
        self._synced.discard(run_id)
        self.fenced.pop(run_id, None)
        self.live.discard(run_id)
        with self._locks_guard:
            self._locks.pop(run_id, None)

    def mark_synced(self, run_id: str) -> None:
        """The run was created by this process: its cache is the truth, no index read needed."""
        self._synced.add(run_id)

    def _lock_for(self, run_id: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(run_id, threading.Lock())

    def flush_run(self, run_id: str) -> int:
        """Flush what is pending for ``run_id`` now; return the seq archived through.

        Records appended while the flush runs are left for the next one: draining
        them too would cut a busy stream into many tiny segments. Raises
        ``StoreError`` subclasses when the bucket fails; the records then stay pending
        in the cache and the next flush retries them.
        """
        with self._lock_for(run_id):
            start = self.cache.run(run_id)
            if start is None:
                return 0
            if start.fenced:
                why = self.fenced.setdefault(run_id, "taken over by another host")
                raise FencedError(
                    f"run {run_id!r} was {why}; this writer is fenced. Its records the "
                    f"bucket lacks stay in {self.cache.path} (`runarchive status` lists "
                    f"them, `runarchive fork {run_id} --to NEW_ID` archives them)."
                )
            if _finished(start):
                return start.last_seq  # ended, all archived, listed as done: no I/O
            if run_id not in self._synced:
                self._sync(start)
                self._synced.add(run_id)
            upto = start.last_seq
            conflicts = 0
            while True:
                row = self.cache.run(run_id)
                if row is None:
                    return upto
                batch = self.cache.pending(run_id, self.config.max_segment_records, upto)
                # Done when nothing up to `upto` is pending and either the status is in
                # the bucket or records past `upto` remain: the status must not reach
                # the bucket before them, and the next flush will carry both.
                if not batch and (row.status_archived or row.last_seq > row.archived_seq):
                    state = self._sync_manifest(row)
                    if state < 0:  # the read-back healed or adopted the index: again
                        conflicts += 1
                        if conflicts < 10:
                            continue
                        raise IndexConflictError(
                            f"run {run_id!r}: the bucket's index kept differing from what "
                            "this writer wrote under 10 read-backs; is another process "
                            "writing this run?"
                        )
                    if state == 2 and row.last_seq == row.archived_seq:
                        # Ended, all in the bucket, listed as done: nothing of this run
                        # is needed in memory any more (a process may write millions).
                        self.forget(run_id)
                    elif row.status == "running":
                        self._compact_quietly(run_id)
                    return upto
                try:
                    done = self._flush_once(row, batch)
                except Exception:
                    # The outcome of the last PUT is unknown (it may have landed): read
                    # the index before writing anything next time, so a retry does
                    # not leave an orphan segment behind.
                    self._synced.discard(run_id)
                    raise
                if done:
                    continue
                conflicts += 1
                if conflicts >= 10:
                    raise IndexConflictError(
                        f"run {run_id!r}: the index kept changing under 10 flush attempts; "
                        "is another process writing this run?"
                    )

    def _compact_quietly(self, run_id: str) -> None:
        """Live compaction after a flush. Its failure loses nothing (the records are in
        segments the index names) and is retried after the next flush: logged, not
        raised; a fence is raised, as from a flush."""
        try:
            self.compact_live(run_id)
        except FencedError:
            raise
        except Exception as exc:
            self.stats.live_errors += 1
            log_run(
                log,
                logging.WARNING,
                run_id,
                None,
                "live compaction failed (retried later): %s",
                exc,
            )

    @telemetry.traced(
        "runarchive.flush",
        lambda self, row, batch: {"run_id": row.run_id, "records": 0, "stored_bytes": 0},
    )
    def _flush_once(self, row: RunRow, batch: list[RecordInfo]) -> bool:
        """One segment (or a status-only index update). False if the index moved under us."""
        base = self._ours(row) or _index_from_row(row)
        keyring = self.keyring if self.keyring is not None and self.keyring.writes else None
        if keyring is None and base.keys:
            raise EncryptionError(
                f"run {row.run_id!r} is encrypted, and this archive has no key to encrypt "
                "with: set encryption (RUNARCHIVE_ENCRYPTION) and its key, or its records "
                f"would be archived in plaintext. They stay in {self.cache.path} meanwhile."
            )
        ref: SegmentRef | None = None
        if batch:
            prev = base.segments[-1].sha256 if base.segments else None
            ref, body = self._encode(row, batch, prev, base, keyring)
            log_run(
                log,
                logging.DEBUG,
                row.run_id,
                ref.last_seq,
                "flushing seqs %d-%d: %d of %d records kept, %d bytes",
                ref.first_seq,
                ref.last_seq,
                ref.records,
                len(batch),
                ref.stored_bytes,
                key=ref.key,
            )
            ref = self._put_segment(row.run_id, ref, body)
            fault_point("flush.after_segment_put")
        if base.policy is None:
            # The run carries the policy it is archived under: live compaction re-applies
            # it over the whole run, and a host that resumes the run must apply the same.
            base = base.model_copy(update={"policy": self.policy(row.run_id).model_dump()})
        new = base.model_copy(
            update={
                "epoch": row.epoch,
                "writer": row.writer,
                "owner_host": self.config.host_id,
                "owner_pid": self.pid,
            }
        )
        if ref is not None:
            new = new.model_copy(
                update={
                    "segments": (*new.segments, ref),
                    "chain_head": ref.sha256,
                    "last_seq": ref.last_seq,
                    "updated_at": utcnow(),
                }
            )
        # Re-read the status now, not at the start: complete() often lands while the
        # segment uploads, and carrying it in this index write saves a request.
        now_row = self.cache.run(row.run_id) or row
        covered = batch[-1].seq if batch else now_row.archived_seq
        if now_row.status != "running" and covered >= now_row.last_seq:
            new = _with_status(new, now_row)
        if keyring is not None:
            new = seal_index(new, keyring)
        mode: PutMode = IfMatch(row.index_etag) if row.index_etag else "create"
        try:
            etag, body_json = self._save_index(row, new, mode)
        except PreconditionFailedError:
            log_run(
                log,
                logging.WARNING,
                row.run_id,
                row.archived_seq,
                "its index changed in the bucket; re-reading it",
            )
            telemetry.hooks.retried.add(1, {"source": "index"})
            self._adopt(row, self._remote_index(row.run_id))
            return False
        fault_point("flush.after_index_put")
        if keyring is not None:
            keyring.persisted(row.run_id, new.keys)
        self.stats.index_writes += 1
        if ref is not None:
            self.stats.records += ref.records
            self.stats.dropped += ref.dropped
            telemetry.hooks.flushed_bytes.add(ref.stored_bytes)
            telemetry.hooks.annotate(
                first_seq=ref.first_seq, records=ref.records, stored_bytes=ref.stored_bytes
            )
        telemetry.hooks.annotate(last_seq=new.last_seq)
        records, stored = (ref.records, ref.stored_bytes) if ref else (0, 0)
        log_run(
            log,
            logging.DEBUG,
            row.run_id,
            new.last_seq,
            "archived through seq %d (%d records, %d bytes, status %s)",
            new.last_seq,
            records,
            stored,
            new.status,
            records=records,
            stored_bytes=stored,
        )
        self.cache.mark_archived(row.run_id, new.last_seq, etag, body_json, new.status)
        fault_point("flush.after_cache_mark")
        self.cache.evict(
            row.run_id, self.config.cache_keep_records, max(20, self.policy(row.run_id).keep_last)
        )
        return True

    def entry(self, row: RunRow) -> RunEntry:
        """The manifest entry of a cached run, with a fresh lease if it is running."""
        index = self._ours(row)
        running = row.status == "running"
        sealed = sealed_metadata(index) if index is not None and index.keys else None
        return RunEntry(
            run_id=row.run_id,
            agent=row.agent,
            status=row.status,
            created_at=datetime.fromisoformat(row.created_at),
            updated_at=utcnow(),
            ended_at=_ts(row.ended_at),
            owner_host=self.config.host_id,
            owner_pid=self.pid,
            epoch=row.epoch,
            lease_expires_at=(
                utcnow() + timedelta(seconds=self.config.lease_seconds) if running else None
            ),
            last_seq=row.archived_seq,
            records=sum(s.records for s in index.segments) if index else 0,
            stored_bytes=index.stored_bytes if index else 0,
            # An encrypted run's metadata is listed sealed, as its index holds it.
            metadata={} if index is not None and index.keys else loads(row.metadata),
            sealed_metadata=sealed.value if sealed else None,
            metadata_key=sealed.key if sealed else None,
            chain_head=index.chain_head if index else None,
        )

    def _sync_manifest(self, row: RunRow) -> int:
        """List the run in the manifest once its index exists; move it to ``done`` once
        the index carries its end. Costs 1-2 requests per change, none otherwise.
        Returns the run's manifest state now (0 unlisted, 1 active, 2 done), or -1 when
        the read-back before ``done`` changed the cache's idea of the index (look again)."""
        want = 1 if row.status == "running" else 2
        if row.manifest_state >= want or row.index_etag is None:
            return row.manifest_state
        if want == 2 and not row.status_archived:
            return row.manifest_state
        if want == 2 and self.config.read_back:
            if not self._read_back(row):
                return -1
            self.cache.set_run_fields(row.run_id, verified_seq=row.archived_seq)
        if want == 1:
            # A run this process does not write (a dead process's backlog) is listed
            # where no renewal vouches for it: it must be allowed to look interrupted.
            self.manifest.upsert_active(self.entry(row), vouched=row.run_id in self.live)
        else:
            self.manifest.finish(self.entry(row), listed=row.manifest_state >= 1)
        self.cache.set_run_fields(row.run_id, manifest_state=want)
        return want

    def renew_leases(self) -> int:
        """Renew the leases of every running run this process owns: one PUT of its own
        manifest object (with none, it only tidies that object now and then).

        Returns the number of runs renewed.
        """
        entries = [
            self.entry(row)
            for row in self.cache.runs()
            if row.run_id in self.live
            and row.status == "running"
            and row.manifest_state == 1
            and not row.fenced
        ]
        lost = self.manifest.renew(entries)
        if not entries:
            return 0
        log.debug("renewed the leases of %d runs (%d lost)", len(entries) - len(lost), len(lost))
        for run_id in lost:
            row = self.cache.run(run_id)
            if row is None or row.status != "running" or row.manifest_state != 1:
                continue  # it ended here meanwhile: finish() took it out of "active"
            # Another host took it over, finished or deleted it: stop writing it now
            # rather than at the next flush. The index says how far the bucket holds
            # what this writer archived (1 GET): the rest is listed as stranded.
            with self._lock_for(run_id):
                self._synced.discard(run_id)
                try:
                    self._sync(row)
                except FencedError:
                    continue  # fenced, with the bucket's view of what it holds
                except Exception as exc:
                    log_run(log, logging.WARNING, run_id, None, "index check failed: %s", exc)
                self.fenced[run_id] = (
                    "taken from this host in the manifest (resumed, finished or deleted elsewhere)"
                )
                self.cache.set_run_fields(run_id, fenced=1)
            log_run(
                log,
                logging.WARNING,
                run_id,
                row.archived_seq,
                "no longer ours in the manifest; this writer is fenced",
            )
        return len(entries) - len(lost)

    def _encode(
        self,
        row: RunRow,
        batch: list[RecordInfo],
        prev_sha256: str | None,
        base: RunIndex | None = None,
        keyring: Keyring | None = None,
    ) -> tuple[SegmentRef, bytes]:
        pending = [PendingCheckpoint(r.seq, r.name) for r in batch if r.type == "checkpoint"]
        kept = select_checkpoints(pending, self.policy(row.run_id), row.first_checkpoint_seq)
        chosen = [r for r in batch if r.type != "checkpoint" or r.seq in kept]
        # Only the kept lines are read: most snapshots of a busy run are dropped.
        lines = self.cache.lines(row.run_id, [r.seq for r in chosen])
        first, last = batch[0].seq, batch[-1].seq
        level = self.config.compression_level
        dek: str | None = None
        plain: bytes | None = None
        if keyring is None:
            header = segment_header(row.run_id, first, last, len(chosen), prev_sha256)
            enc = encode_segment(lines, level, header)
        else:
            key, plain = keyring.write_key(row.run_id, base.keys if base is not None else ())
            header = segment_header(
                row.run_id, first, last, len(chosen), prev_sha256, SEALED_FORMAT
            )
            raw = join_lines(lines, header)
            enc = seal_segment(row.run_id, first, last, raw, key, plain, level)
            dek = key.id
        ref = SegmentRef(
            key=segment_key(row.run_id, first, last, enc.sha256, sealed=dek is not None),
            first_seq=first,
            last_seq=last,
            records=len(chosen),
            checkpoints=sum(1 for r in chosen if r.type == "checkpoint"),
            events=sum(1 for r in chosen if r.type != "checkpoint"),
            dropped=len(batch) - len(chosen),
            stored_bytes=len(enc.body),
            raw_bytes=enc.raw_bytes,
            sha256=enc.sha256,
            first_ts=datetime.fromisoformat(batch[0].ts),
            last_ts=datetime.fromisoformat(batch[-1].ts),
            prev_sha256=prev_sha256,
            ckpts=tuple(
                (r.seq, name_token(r.name, plain)) for r in chosen if r.type == "checkpoint"
            ),
            **({"format": SEALED_FORMAT, "dek": dek} if dek is not None else {}),
        )
        return ref, enc.body
