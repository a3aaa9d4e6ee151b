"""Ownership and healing: how a writer agrees with the bucket before it writes.

The part of :class:`~runarchive.engine.flush.FlushEngine` that reads the bucket's index and
acts on it (:func:`~runarchive.engine.ownership.reconcile`): adopt what another process of
this writer wrote, heal a lost index or segment write from the cache, or be fenced
when another host took the run over. Also the create-only writes whose 412 must be
told apart from a retried write of our own (the claim of a new run id, segment PUTs),
and ``repair`` / the read-back before a run is listed as ended.

:class:`Healing` is a base of :class:`~runarchive.engine.flush.FlushEngine`, not used on its
own: the attributes and methods it declares below are the engine's.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn

from runarchive.cache.core import Cache, RecordInfo, RunRow
from runarchive.crypto.keyring import Keyring
from runarchive.crypto.sealing import check_stored, seal_index
from runarchive.engine.ownership import Verdict, held_through, owner_of, reconcile
from runarchive.errors import (
    CorruptObjectError,
    FencedError,
    IndexConflictError,
    MissingRecordsError,
    ObjectNotFoundError,
    PreconditionFailedError,
    RunExistsError,
    RunNotFoundError,
    StoreUnavailableError,
)
from runarchive.format.codec import decompress_segment, index_key, run_prefix
from runarchive.format.indexpages import (
    expand,
    head_json,
    load_index,
    put_pages,
    save_index,
    to_head,
)
from runarchive.format.model import SEALED_FORMAT, RunIndex, SegmentRef
from runarchive.logs import log_run
from runarchive.store import IfMatch, PutMode, Store

log = logging.getLogger("runarchive.healing")


def _verdict(row: RunRow, ours: RunIndex | None, remote: tuple[RunIndex, str] | None) -> Verdict:
    return reconcile(
        epoch=row.epoch,
        writer=row.writer,
        archived_seq=row.archived_seq,
        last_seq=row.last_seq,
        ours=ours,
        remote=remote[0] if remote else None,
    )


@dataclass
class FlushStats:
    """Totals of what flushes wrote in this process."""

    segments: int = 0
    records: int = 0
    dropped: int = 0
    raw_bytes: int = 0
    stored_bytes: int = 0
    index_writes: int = 0
    live_steps: int = 0  # live compaction steps (merges, promotions, sweeps)
    live_errors: int = 0  # live compaction steps that failed (retried after a flush)


class _Unchanged(Exception):
    """The bucket's index still has the ETag this writer last wrote (a 304)."""


@dataclass(frozen=True)
class HealReport:
    """What a heal or ``repair`` did to one run."""

    run_id: str
    changed: bool  # anything written
    reuploaded: list[str]  # segment keys put again from the cache
    reason: str


class Healing:
    """Ownership checks and healing I/O of :class:`~runarchive.engine.flush.FlushEngine`."""

    # Provided by FlushEngine.
    cache: Cache
    store: Store
    keyring: Keyring | None
    stats: FlushStats
    fenced: dict[str, str]
    _synced: set[str]

    if TYPE_CHECKING:

        def _lock_for(self, run_id: str) -> threading.Lock: ...
        def _encode(
            self,
            row: RunRow,
            batch: list[RecordInfo],
            prev_sha256: str | None,
            base: RunIndex | None = None,
            keyring: Keyring | None = None,
        ) -> tuple[SegmentRef, bytes]: ...

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
        return load_index(self.store, got.body, key), got.etag

    def _ours(self, row: RunRow) -> RunIndex | None:
        """This writer's copy of the run's index (the head it last wrote or read,
        its pages expanded: from memory, or 1 GET per page after a restart)."""
        if row.index_json is None:
            return None
        head = RunIndex.model_validate_json(row.index_json)
        try:
            return expand(self.store, head)
        except CorruptObjectError:
            # A page of ours is gone: after a takeover, the new owner's compaction
            # retires our pages and deletes them. That is a fence, not corruption.
            if head.pages:
                self._fence_if_taken(row)
            raise

    def _ours_or_head(self, row: RunRow) -> RunIndex | None:
        """``_ours``, or for a writer that was taken over and whose pages the new owner
        deleted since, its head alone (its own refs; ``last_seq`` and ``epoch`` right):
        what fencing needs to tell what it archived."""
        if row.index_json is None:
            return None
        head = RunIndex.model_validate_json(row.index_json)
        try:
            return expand(self.store, head)
        except CorruptObjectError:
            return head.model_copy(update={"pages": ()})

    def _fence_if_taken(self, row: RunRow) -> None:
        """Raise ``FencedError`` (the fence recorded) if the bucket's index is another
        writer's; return otherwise. Cost: 1 GET."""
        remote = self._remote_index(row.run_id)
        if remote is None:
            return
        theirs = remote[0]
        if theirs.epoch > row.epoch or (theirs.epoch == row.epoch and theirs.writer != row.writer):
            verdict = _verdict(row, None, remote)
            self._fence(row, verdict.reason, theirs)

    def _save_index(self, row: RunRow, index: RunIndex, mode: PutMode) -> tuple[str, str]:
        """PUT a full index as its pages and head; the ``(etag, head JSON)`` written."""
        known = RunIndex.model_validate_json(row.index_json).pages if row.index_json else ()
        return save_index(self.store, index, mode, [p.key for p in known])

    def _sync(self, row: RunRow) -> None:
        """Make this writer agree with the bucket before it writes (first flush of the
        process, or after a failure): 1 conditional GET, no body when nothing changed."""
        try:
            remote = self._remote_index(row.run_id, row.index_etag)
        except _Unchanged:
            return
        self._adopt(row, remote)

    def _fence(self, row: RunRow, reason: str, remote: RunIndex | None = None) -> NoReturn:
        self.fenced[row.run_id] = reason
        archived = row.archived_seq
        if remote is not None and row.index_json is not None:
            # What this writer archived counts only as far as the bucket's index still
            # holds it: a lost index write followed by another host's claim leaves
            # records this writer took for archived in no index at all.
            ours = self._ours_or_head(row)
            assert ours is not None
            archived = min(archived, held_through(ours, remote))
        self.cache.set_run_fields(row.run_id, fenced=1, archived_seq=archived)
        if archived < row.evicted_seq:
            log_run(
                log,
                logging.ERROR,
                row.run_id,
                archived,
                "fenced, and the bucket lacks seqs %d-%d, some of which this cache evicted",
                archived + 1,
                row.evicted_seq,
            )
        stranded = row.last_seq - archived
        log_run(log, logging.WARNING, row.run_id, archived, "fenced: %s", reason)
        if stranded:
            raise FencedError(
                f"run {row.run_id!r} was {reason}; this writer (epoch {row.epoch}) is fenced "
                f"and writes nothing more. Its {stranded} records the bucket does not have "
                f"(seqs {archived + 1}-{row.last_seq}) stay in {self.cache.path}: "
                f"`runarchive status` lists them, `runarchive fork {row.run_id} --to NEW_ID` "
                "archives them as a new run."
            )
        raise FencedError(
            f"run {row.run_id!r} was {reason}; this writer (epoch {row.epoch}) is fenced and "
            "writes nothing more (every record it acknowledged is in the bucket)."
        )

    def _adopt(self, row: RunRow, remote: tuple[RunIndex, str] | None) -> None:
        """Act on the bucket's index when it is not the one this writer last wrote
        (:func:`~runarchive.engine.ownership.reconcile`): adopt it, heal it, or be fenced."""
        ours = self._ours(row)
        verdict = _verdict(row, ours, remote)
        if verdict.action == "fence":
            self._fence(row, verdict.reason, remote[0] if remote else None)
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
            body = head_json(index)
            self.cache.mark_archived(row.run_id, index.last_seq, etag, body, index.status)

    def _heal(
        self, row: RunRow, ours: RunIndex, remote: tuple[RunIndex, str] | None, reason: str
    ) -> HealReport:
        """Write this writer's copy of the index again, after re-uploading from the
        cache every segment it names that the bucket lacks. Raises
        ``MissingRecordsError`` (once, naming every gap) when the cache no longer holds
        a lost segment's records, and writes nothing then."""
        have = {ref.key for ref in remote[0].segments} if remote else set()
        todo = [ref for ref in ours.segments if ref.key not in have]
        present = self._present(row.run_id, todo)
        reuploaded = self._reupload(row, ours, todo, present)
        mode: PutMode = IfMatch(remote[1]) if remote else "create"
        # Pages too: the lost write may have been the one that created them.
        head, pages = to_head(ours)
        put_pages(self.store, pages)
        etag, body_json = save_index(self.store, ours, mode, [p.key for p in head.pages])
        self.cache.mark_archived(row.run_id, ours.last_seq, etag, body_json, ours.status)
        log_run(
            log,
            logging.WARNING,
            row.run_id,
            ours.last_seq,
            "healed (%s): index written again through seq %d, %d lost segments re-uploaded",
            reason,
            ours.last_seq,
            len(reuploaded),
        )
        return HealReport(row.run_id, True, reuploaded, reason)

    def _reupload(
        self, row: RunRow, ours: RunIndex, refs: list[SegmentRef], present: dict[str, int]
    ) -> list[str]:
        """PUT again, from the cache, each of ``refs`` the bucket lacks (not in
        ``present``); their keys. If the cache cannot give back one of them, raises
        ``MissingRecordsError`` naming every such range, having written nothing."""
        bodies: list[tuple[SegmentRef, bytes]] = []
        lost: list[tuple[int, int]] = []
        for ref in refs:
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
        return [ref.key for ref, _ in bodies]

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
            ours = self._ours(row)
            if ours is None:
                return HealReport(run_id, False, [], "nothing archived from this host yet")
            remote = self._remote_index(run_id)
            verdict = _verdict(row, ours, remote)
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
            fixed = self._reupload(row, ours, list(index.segments), present)
            self.cache.mark_archived(run_id, index.last_seq, etag, head_json(index), None)
            return HealReport(
                run_id, bool(fixed), fixed, "segments re-uploaded" if fixed else "nothing missing"
            )

    def stranded_errors(self) -> dict[str, FencedError]:
        """A ``FencedError`` for each run this process was fenced from that holds
        records the bucket lacks (run id -> error): found in the background (a flush,
        a read-back, a lease renewal), they reach the caller through
        ``archive.flush_errors`` and the next append."""
        out: dict[str, FencedError] = {}
        for run_id, why in sorted(self.fenced.items()):
            row = self.cache.run(run_id)
            if row is not None and row.last_seq > row.archived_seq:
                out[run_id] = FencedError(
                    f"run {run_id!r} was {why}; seqs {row.archived_seq + 1}-"
                    f"{row.last_seq} acknowledged here are not in the bucket and stay in "
                    f"{self.cache.path}: `runarchive fork {run_id} --to NEW_ID` archives "
                    "them as a new run"
                )
        return out

    def verify_stored(self, run_id: str) -> bool:
        """Read back a run this host archived records of since its last read-back
        (``read_back``): the index and the segments it names are in the bucket, or are
        healed from the cache now (``MissingRecordsError`` if the cache lost them too).
        Done at ``close()``, every ``read_back_seconds`` for this process's runs, and
        before a run is listed as ended. Returns whether a read-back happened. Cost: 1
        conditional GET + 1 LIST per 1,000 segments; nothing for a run already checked."""
        with self._lock_for(run_id):
            for _ in range(5):
                row = self.cache.run(run_id)
                if row is None or row.index_json is None or row.archived_seq <= row.verified_seq:
                    return False
                if row.fenced:
                    self._restore_segments(row)
                    self.cache.set_run_fields(run_id, verified_seq=row.archived_seq)
                    return True
                try:
                    done = self._read_back(row)
                except FencedError:
                    # Taken over since: loud only if this host holds what the bucket
                    # lacks (the fence left them stranded); else the next pass checks
                    # its own segments the new owner's index names, as for any fenced run.
                    now = self.cache.run(run_id)
                    if now is None or now.last_seq > now.archived_seq:
                        raise
                    continue
                if done:
                    self.cache.set_run_fields(run_id, verified_seq=row.archived_seq)
                    return True
        raise IndexConflictError(
            f"run {run_id!r}: the bucket's index kept differing from what this writer "
            "wrote under 5 read-backs; is another process writing this run?"
        )

    def _restore_segments(self, row: RunRow) -> None:
        """A fenced writer's duty to the new owner: segments it wrote that the bucket's
        index names but the bucket lacks (a PUT answered and never stored before the
        takeover) go up again from its cache, create-only under their content-derived
        keys; the index is never touched. Cost: 1 GET + 1 LIST per 1,000 segments."""
        remote = self._remote_index(row.run_id)
        ours = self._ours_or_head(row)
        if remote is None or ours is None:
            return
        mine = {ref.key for ref in ours.segments}
        named = [ref for ref in remote[0].segments if ref.key in mine]
        if not named:
            return
        present = self._present(row.run_id, named)
        for key in self._reupload(row, ours, named, present):
            log_run(
                log,
                logging.WARNING,
                row.run_id,
                row.archived_seq,
                "re-uploaded %s, lost before another host took the run over",
                key,
                key=key,
            )

    def _read_back(self, row: RunRow) -> bool:
        """Check, before a run is listed as ended, that the bucket holds what this
        writer wrote: its index (1 conditional GET: 304 when it is the one written) and
        every segment the index names (1 LIST per 1,000 segments). A lost write is
        healed from the cache; ``MissingRecordsError`` names what the cache cannot
        give back. Returns ``False`` when it changed something: look again."""
        try:
            remote = self._remote_index(row.run_id, row.index_etag)
        except _Unchanged:
            pass
        else:
            self._adopt(row, remote)  # heals, adopts, or fences (raises)
            return False  # the next pass of the flush loop looks again
        index = self._ours(row)
        if index is None or not index.segments:
            return True
        pages = to_head(index)[1]
        if pages:
            there = {m.key for m in self.store.list(run_prefix(row.run_id) + "pages/")}
            lost = [p for p in pages if p[0].key not in there]
            if lost:
                put_pages(self.store, lost)
                log_run(
                    log,
                    logging.WARNING,
                    row.run_id,
                    row.archived_seq,
                    "read-back found %d index pages missing from the bucket; wrote them again",
                    len(lost),
                )
                return False
        present = {m.key: m.size for m in self.store.list(run_prefix(row.run_id) + "seg/")}
        gone = [ref for ref in index.segments if ref.key not in present]
        if not gone:
            return True
        self._reupload(row, index, gone, present)
        log_run(
            log,
            logging.WARNING,
            row.run_id,
            row.archived_seq,
            "read-back found %d segments missing from the bucket; re-uploaded them",
            len(gone),
        )
        return False  # look again: a re-upload can be lost like the first PUT
