"""The flush protocol (cache → segment → index) and the background flusher thread.

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
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NoReturn

from runarchive import telemetry
from runarchive.cache import Cache, RecordInfo, RunRow
from runarchive.codec import (
    decompress_segment,
    encode_segment,
    index_key,
    join_lines,
    run_prefix,
    segment_header,
    segment_key,
)
from runarchive.config import ArchiveConfig
from runarchive.crypto import Keyring, check_stored, seal_index, seal_segment, sealed_metadata
from runarchive.errors import (
    EncryptionError,
    FencedError,
    IndexConflictError,
    MissingRecordsError,
    ObjectNotFoundError,
    PreconditionFailedError,
    RunExistsError,
    RunNotFoundError,
    StoreUnavailableError,
)
from runarchive.faults import fault_point
from runarchive.jsonvalue import loads
from runarchive.logs import log_run
from runarchive.manifest import Manifest, RunEntry
from runarchive.model import SEALED_FORMAT, RunIndex, SegmentRef, parse_index, utcnow
from runarchive.ownership import owner_of, reconcile
from runarchive.policy import PendingCheckpoint, Policy, select_checkpoints
from runarchive.store import IfMatch, PutMode, Store

log = logging.getLogger(__name__)


@dataclass
class FlushStats:
    """Totals of what flushes wrote in this process."""

    segments: int = 0
    records: int = 0
    dropped: int = 0
    raw_bytes: int = 0
    stored_bytes: int = 0
    index_writes: int = 0


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


class _Unchanged(Exception):
    """The bucket's index still has the ETag this writer last wrote (a 304)."""


@dataclass(frozen=True)
class HealReport:
    """What a heal or ``repair`` did to one run."""

    run_id: str
    changed: bool  # anything written
    reuploaded: list[str]  # segment keys put again from the cache
    reason: str


class FlushEngine:
    """Runs the flush protocol for one run at a time (per-run lock); thread-safe."""

    def __init__(
        self, cache: Cache, store: Store, config: ArchiveConfig, keyring: Keyring | None = None
    ) -> None:
        self.cache, self.store, self.config = cache, store, config
        self.keyring = keyring
        self.manifest = Manifest(store, keyring)
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

    def _remote_index(self, run_id: str, etag: str | None = None) -> tuple[RunIndex, str] | None:
        """The bucket's index and its ETag (``None``: missing). With ``etag``, a
        conditional GET: raises :class:`_Unchanged` when the index is still that one."""
        key = index_key(run_id)
        try:
            if etag is None:
                got = self.store.get(key)
            else:
                changed = self.store.get_if_changed(key, etag)
                if changed is None:
                    raise _Unchanged
                got = changed
        except ObjectNotFoundError:
            return None
        return parse_index(got.body, key), got.etag

    def _sync(self, row: RunRow) -> None:
        """Make this writer agree with the bucket before it writes (first flush of the
        process, or after a failure): 1 conditional GET, no body when nothing changed."""
        try:
            remote = self._remote_index(row.run_id, row.index_etag)
        except _Unchanged:
            return
        self._adopt(row, remote)

    def _fence(self, row: RunRow, reason: str) -> NoReturn:
        self.fenced[row.run_id] = reason
        self.cache.set_run_fields(row.run_id, fenced=1)
        stranded = row.last_seq - row.archived_seq
        log_run(log, logging.WARNING, row.run_id, row.archived_seq, "fenced: %s", reason)
        if stranded:
            raise FencedError(
                f"run {row.run_id!r} was {reason}; this writer (epoch {row.epoch}) is fenced "
                f"and writes nothing more. Its {stranded} records the bucket does not have "
                f"(seqs {row.archived_seq + 1}-{row.last_seq}) stay in {self.cache.path}: "
                f"`runarchive status` lists them, `runarchive fork {row.run_id} --to NEW_ID` "
                "archives them as a new run."
            )
        raise FencedError(
            f"run {row.run_id!r} was {reason}; this writer (epoch {row.epoch}) is fenced and "
            "writes nothing more (every record it acknowledged is in the bucket)."
        )

    def _adopt(self, row: RunRow, remote: tuple[RunIndex, str] | None) -> None:
        """Act on the bucket's index when it is not the one this writer last wrote
        (:func:`~runarchive.ownership.reconcile`): adopt it, heal it, or be fenced."""
        ours = RunIndex.model_validate_json(row.index_json) if row.index_json else None
        verdict = reconcile(
            epoch=row.epoch,
            writer=row.writer,
            archived_seq=row.archived_seq,
            last_seq=row.last_seq,
            ours=ours,
            remote=remote[0] if remote else None,
        )
        if verdict.action == "fence":
            self._fence(row, verdict.reason)
        if verdict.action == "conflict":
            raise IndexConflictError(
                f"run {row.run_id!r}: {verdict.reason}. Nothing was overwritten; "
                f"{index_key(row.run_id)!r} in {self.store.description} and the cache "
                f"{self.cache.path} need a look (`runarchive verify`, `runarchive status`)."
            )
        if verdict.action == "heal":
            assert ours is not None  # reconcile heals only a copy this writer has
            self._heal(row, ours, remote, verdict.reason)
            return
        if remote is not None:
            index, etag = remote
            self.cache.mark_archived(
                row.run_id, index.last_seq, etag, index.model_dump_json(), index.status
            )

    def _heal(
        self, row: RunRow, ours: RunIndex, remote: tuple[RunIndex, str] | None, reason: str
    ) -> HealReport:
        """Write this writer's copy of the index again, after re-uploading from the
        cache every segment it names that the bucket lacks. Raises
        ``MissingRecordsError`` (once, naming every gap) when the cache no longer holds
        a lost segment's records, and writes nothing then."""
        have = len(remote[0].segments) if remote else 0
        todo = list(ours.segments[have:])
        present = self._present(row.run_id, todo)
        lost: list[tuple[int, int]] = []
        bodies: list[tuple[SegmentRef, bytes]] = []
        for ref in todo:
            if ref.key in present:
                continue
            body = self._reencode(row, ours, ref)
            if body is None:
                lost.append((ref.first_seq, ref.last_seq))
            else:
                bodies.append((ref, body))
        if lost:
            raise MissingRecordsError(row.run_id, lost, f"this host's cache {self.cache.path}")
        for ref, body in bodies:
            self._put_segment(row.run_id, ref, body)
        body_json = row.index_json or ours.model_dump_json()
        mode: PutMode = IfMatch(remote[1]) if remote else "create"
        etag = self.store.put(index_key(row.run_id), body_json.encode(), mode=mode)
        self.cache.mark_archived(row.run_id, ours.last_seq, etag, body_json, ours.status)
        log_run(
            log,
            logging.WARNING,
            row.run_id,
            ours.last_seq,
            "healed (%s): index written again through seq %d, %d lost segments re-uploaded",
            reason,
            ours.last_seq,
            len(bodies),
        )
        return HealReport(row.run_id, True, [r.key for r, _ in bodies], reason)

    def _present(self, run_id: str, refs: list[SegmentRef]) -> dict[str, int]:
        """Sizes of the objects of ``refs`` the bucket has (HEADs for a few, else one
        LIST per 1,000 segments of the run)."""
        if len(refs) <= 2:
            found = {ref.key: self.store.head(ref.key) for ref in refs}
            return {k: m.size for k, m in found.items() if m is not None}
        wanted = {ref.key for ref in refs}
        return {
            m.key: m.size for m in self.store.list(run_prefix(run_id) + "seg/") if m.key in wanted
        }

    def _reencode(self, row: RunRow, ours: RunIndex, ref: SegmentRef) -> bytes | None:
        """The segment ``ref`` again, from the cache's records (``None``: some are gone).
        The policy and the encoding are deterministic, so the same records give the
        same key; a different key means the cache cannot reproduce it."""
        infos = self.cache.infos(row.run_id, ref.first_seq, ref.last_seq)
        if len(infos) != ref.last_seq - ref.first_seq + 1:
            return None
        keyring = self.keyring if self.keyring is not None and self.keyring.writes else None
        again, body = self._encode(row, infos, ref.prev_sha256, ours, keyring)
        return body if again.key == ref.key else None

    def _put_segment(self, run_id: str, ref: SegmentRef, body: bytes) -> SegmentRef:
        """PUT a segment create-only. A 412 counts as done only if the object is there
        with this segment's content (a retried flush; the compression level may
        differ); a 412 for an object that is not there (a proxy, a gateway) is retried.
        Cost: 1 PUT; a 412 adds 1 GET."""
        for _ in range(3):
            try:
                self.store.put(ref.key, body, mode="create", immutable=True)
            except PreconditionFailedError:
                try:
                    got = self.store.get(ref.key)
                except ObjectNotFoundError:
                    log_run(
                        log,
                        logging.WARNING,
                        run_id,
                        ref.last_seq,
                        "create-only PUT of %s answered 412 but the object is not there; again",
                        ref.key,
                        key=ref.key,
                    )
                    continue
                if got.body != body:  # the same records at another level, or not ours
                    if ref.format == SEALED_FORMAT:
                        check_stored(got.body, ref)
                    else:
                        decompress_segment(got.body, ref.key, ref.sha256)
                log_run(
                    log,
                    logging.INFO,
                    run_id,
                    ref.last_seq,
                    "segment %s already present (retried flush)",
                    ref.key,
                    key=ref.key,
                )
                return ref.model_copy(update={"stored_bytes": len(got.body)})
            self.stats.segments += 1
            self.stats.stored_bytes += ref.stored_bytes
            self.stats.raw_bytes += ref.raw_bytes
            return ref
        raise StoreUnavailableError(
            f"create-only PUT of {ref.key!r} answered 412 three times, yet the object is "
            f"not in {self.store.description}: something between this host and the bucket "
            "refuses conditional writes. The records stay in the cache.",
            key=ref.key,
        )

    def claim(self, run_id: str, index: RunIndex) -> tuple[str, str]:
        """Create ``run_id``'s index create-only before anything is acknowledged: of two
        hosts starting the same id, exactly one wins. Returns the ``(etag, json)`` of
        the claim; the loser gets ``RunExistsError`` and has written nothing. Cost: 1
        PUT (a 412 or an unanswered PUT costs 1 GET more, to recognise our own)."""
        keyring = self.keyring if self.keyring is not None and self.keyring.writes else None
        if keyring is not None:
            index = seal_index(index, keyring)
        body = index.model_dump_json()
        key = index_key(run_id)
        for _ in range(3):
            try:
                etag = self.store.put(key, body.encode(), mode="create")
            except (PreconditionFailedError, StoreUnavailableError) as exc:
                remote = self._remote_index(run_id)
                if remote is not None and remote[0].writer == index.writer:
                    etag = remote[1]  # ours landed; its answer was lost
                elif remote is not None:
                    raise RunExistsError(
                        f"run {run_id!r} already exists in {self.store.description}: "
                        f"{owner_of(remote[0])} started it. Nothing was recorded; choose "
                        "another run_id, or read the run and resume it."
                    ) from None
                elif isinstance(exc, PreconditionFailedError):
                    continue  # a 412 for an object that is not there: again
                else:
                    raise
            if keyring is not None:
                keyring.persisted(run_id, index.keys)
            return etag, body
        raise StoreUnavailableError(
            f"create-only PUT of {key!r} answered 412 three times, yet the object is not in "
            f"{self.store.description}: something between this host and the bucket refuses "
            "conditional writes. Nothing was recorded.",
            key=key,
        )

    def revalidate(self, run_id: str) -> bool:
        """Whether this host still owns ``run_id``, checked against the bucket once per
        process (1 conditional GET, no body when nothing changed; 0 for runs this
        process started, claimed or resumed). A run another host took over is marked
        fenced here: its appends raise ``FencedError`` and its records the bucket does
        not have stay listed by ``runarchive status``."""
        with self._lock_for(run_id):
            row = self.cache.run(run_id)
            if row is None or row.fenced:
                return False
            if run_id in self._synced or (row.index_etag is None and row.archived_seq == 0):
                return True  # agreed already, or never in the bucket: nothing to check
            try:
                self._sync(row)
            except FencedError:
                return False
            self._synced.add(run_id)
            return True

    def repair(self, run_id: str) -> HealReport:
        """Check the bucket against this host's copy of a run and heal what it lacks
        (``runarchive repair``): its index, and the segments the cache can re-upload.
        Cost: 1 GET, 1 LIST per 1,000 segments (HEADs for 1-2), the PUTs it needs."""
        with self._lock_for(run_id):
            row = self.cache.run(run_id)
            if row is None:
                raise RunNotFoundError(
                    f"run {run_id!r} is not in this host's cache {self.cache.directory}: "
                    "repair runs on a host whose cache holds the run's records"
                )
            ours = RunIndex.model_validate_json(row.index_json) if row.index_json else None
            if ours is None:
                return HealReport(run_id, False, [], "nothing archived from this host yet")
            remote = self._remote_index(run_id)
            verdict = reconcile(
                epoch=row.epoch,
                writer=row.writer,
                archived_seq=row.archived_seq,
                last_seq=row.last_seq,
                ours=ours,
                remote=remote[0] if remote else None,
            )
            if verdict.action == "heal":
                self._synced.discard(run_id)
                return self._heal(row, ours, remote, verdict.reason)
            if verdict.action != "adopt" or remote is None:
                raise IndexConflictError(
                    f"run {run_id!r}: {verdict.reason}; this host's copy cannot repair it"
                )
            # The index is sound: check the objects it names (a segment PUT answered
            # and never stored leaves an index naming a missing object).
            index, etag = remote
            present = self._present(run_id, list(index.segments))
            lost: list[tuple[int, int]] = []
            fixed: list[str] = []
            for ref in index.segments:
                if ref.key in present:
                    continue
                body = self._reencode(row, ours, ref)
                if body is None:
                    lost.append((ref.first_seq, ref.last_seq))
                    continue
                self._put_segment(run_id, ref, body)
                fixed.append(ref.key)
            if lost:
                raise MissingRecordsError(run_id, lost, f"this host's cache {self.cache.path}")
            self.cache.mark_archived(run_id, index.last_seq, etag, index.model_dump_json(), None)
            return HealReport(
                run_id, bool(fixed), fixed, "segments re-uploaded" if fixed else "nothing missing"
            )

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

    @telemetry.traced(
        "runarchive.flush",
        lambda self, row, batch: {"run_id": row.run_id, "records": 0, "stored_bytes": 0},
    )
    def _flush_once(self, row: RunRow, batch: list[RecordInfo]) -> bool:
        """One segment (or a status-only index update). False if the index moved under us."""
        base = (
            RunIndex.model_validate_json(row.index_json) if row.index_json else _index_from_row(row)
        )
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
        body_json = new.model_dump_json()
        mode: PutMode = IfMatch(row.index_etag) if row.index_etag else "create"
        try:
            etag = self.store.put(index_key(row.run_id), body_json.encode(), mode=mode)
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
        index = RunIndex.model_validate_json(row.index_json) if row.index_json else None
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
        if want == 2 and self.config.read_back and not self._read_back(row):
            return -1
        if want == 1:
            self.manifest.upsert_active(self.entry(row))
        else:
            self.manifest.finish(self.entry(row))
        self.cache.set_run_fields(row.run_id, manifest_state=want)
        return want

    def _read_back(self, row: RunRow) -> bool:
        """Check, before a run is listed as ended, that the bucket holds what this
        writer wrote: its index (1 conditional GET: 304 when it is the one written) and
        every segment the index names (1 LIST per 1,000 segments). A lost write is
        healed from the cache; ``MissingRecordsError`` names what the cache cannot
        give back. Returns ``False`` when the run must be flushed again first."""
        try:
            remote = self._remote_index(row.run_id, row.index_etag)
        except _Unchanged:
            pass
        else:
            self._adopt(row, remote)  # heals, adopts, or fences (raises)
            return False  # the next pass of the flush loop looks again
        index = RunIndex.model_validate_json(row.index_json) if row.index_json else None
        if index is None or not index.segments:
            return True
        present = {m.key: m.size for m in self.store.list(run_prefix(row.run_id) + "seg/")}
        gone = [ref for ref in index.segments if ref.key not in present]
        if not gone:
            return True
        lost: list[tuple[int, int]] = []
        for ref in gone:
            body = self._reencode(row, index, ref)
            if body is None:
                lost.append((ref.first_seq, ref.last_seq))
            else:
                self._put_segment(row.run_id, ref, body)
        if lost:
            raise MissingRecordsError(row.run_id, lost, f"this host's cache {self.cache.path}")
        log_run(
            log,
            logging.WARNING,
            row.run_id,
            row.archived_seq,
            "read-back found %d segments missing from the bucket; re-uploaded them",
            len(gone),
        )
        return True

    def renew_leases(self) -> int:
        """Renew the leases of every running run this host owns: one CAS per shard.

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
        if not entries:
            return 0
        lost = self.manifest.renew(entries)
        log.debug("renewed the leases of %d runs (%d lost)", len(entries) - len(lost), len(lost))
        for run_id in lost:
            row = self.cache.run(run_id)
            if row is None or row.status != "running" or row.manifest_state != 1:
                continue  # it ended here meanwhile: finish() took it out of "active"
            # Another host took it over, finished or deleted it: stop writing it now
            # rather than at the next flush.
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
            **({"format": SEALED_FORMAT, "dek": dek} if dek is not None else {}),
        )
        return ref, enc.body
