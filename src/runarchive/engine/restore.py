"""Restore: a pure plan (which segments, which cut-off) and an executor that fetches them.

The plan is computed from the run index alone, after checking that every segment
ref is one of the run's with a real seq range; :class:`RecordStream` GETs the planned
segments a few ahead, checks each body against the SHA-256 and size in the index and
its header and records against the ref (the run, the range) before yielding any of
its records (:mod:`runarchive.engine.stream`), and yields them in seq order;
:func:`execute_restore` collects them. Nothing is written anywhere.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise
from typing import Any, TextIO

from runarchive import telemetry
from runarchive.crypto.keyring import Keyring
from runarchive.engine.stream import Slimmer, segment_frame, segment_records
from runarchive.errors import CorruptObjectError, InvalidInputError, ObjectNotFoundError
from runarchive.format.codec import check_ref, index_key
from runarchive.format.model import (
    Checkpoint,
    DataKey,
    Event,
    RunIndex,
    SegmentRef,
    validate_run_id,
)
from runarchive.logs import log_run
from runarchive.store import Store

log = logging.getLogger("runarchive.restore")


@dataclass(frozen=True)
class RestorePlan:
    """What to read for a restore: segments in seq order and the cut-offs to apply."""

    run_id: str
    segments: tuple[SegmentRef, ...]
    max_seq: int | None = None
    at: datetime | None = None
    min_seq: int | None = None
    keys: tuple[DataKey, ...] = ()  # the run's data keys, for sealed segments

    @property
    def stored_bytes(self) -> int:
        """Bytes the executor will download."""
        return sum(s.stored_bytes for s in self.segments)


def plan_restore(
    index: RunIndex,
    *,
    seq: int | None = None,
    at: datetime | None = None,
    min_seq: int | None = None,
    run_id: str | None = None,
) -> RestorePlan:
    """Choose the segments needed for records ``min_seq <= r.seq <= seq`` and ``r.ts <= at``.

    ``run_id`` is the run asked for: the index must be that run's. Every ref is
    checked first (:func:`~runarchive.format.codec.check_ref`: a key under the run's ``seg/``,
    ``1 <= first_seq <= last_seq``); ``CorruptObjectError`` names the first bad one.
    """
    if seq is not None and seq < 0:
        raise InvalidInputError(f"seq must be >= 0, not {seq}")
    if at is not None and at.tzinfo is None:
        raise InvalidInputError("at must be timezone-aware (e.g. datetime.now(UTC))")
    check_index_refs(index, run_id)
    chosen = tuple(
        s
        for s in index.segments
        if (seq is None or s.first_seq <= seq)
        and (at is None or s.first_ts <= at)
        and (min_seq is None or s.last_seq >= min_seq)
    )
    return RestorePlan(index.run_id, chosen, max_seq=seq, at=at, min_seq=min_seq, keys=index.keys)


def check_index_run(index: RunIndex, run_id: str) -> None:
    """The index read from ``runs/<run_id>/index.json`` is that run's: everything a
    reader does next (keys, paths, the run of each record) follows ``index.run_id``."""
    if index.run_id != run_id:
        raise CorruptObjectError(
            index_key(run_id),
            f"it names run {index.run_id[:200]!r}, not {run_id!r}: it is another run's "
            "index, or was altered",
        )


def check_index_refs(index: RunIndex, run_id: str | None = None) -> None:
    """The index is of ``run_id`` (if given; else of a valid id) and each of its segment
    refs is one of that run's segments with a real seq range. Pure; raises
    ``CorruptObjectError`` naming the index or the segment."""
    if run_id is not None:
        check_index_run(index, run_id)
    try:
        validate_run_id(index.run_id)
    except InvalidInputError as exc:
        raise CorruptObjectError("index.json", f"{exc}; the index was altered") from None
    for ref in index.segments:
        check_ref(ref, index.run_id)


ProgressCallback = Callable[[int, int], None]
"""Told ``(done, total)`` after each unit of a long operation (the CLI draws it)."""

ProgressArg = bool | ProgressCallback | None
"""``progress=`` of the long reads: a callback, or a bool for the built-in bar
(``None``: on a terminal only)."""


class Progress:
    """Counts units done; tells ``callback``, or draws a one-line bar on ``stream``."""

    def __init__(
        self,
        total: int,
        label: str,
        stream: TextIO | None = None,
        callback: ProgressCallback | None = None,
    ) -> None:
        self.total, self.label, self.done = total, label, 0
        self.stream, self.callback = stream, callback
        self._lock = threading.Lock()

    def step(self) -> None:
        """Count one unit done and redraw."""
        with self._lock:
            self.done += 1
            if self.callback is not None:
                self.callback(self.done, self.total)
            if self.stream is not None:
                width = 30
                filled = width * self.done // max(self.total, 1)
                self.stream.write(
                    f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] "
                    f"{self.done}/{self.total}"
                )
                if self.done >= self.total:
                    self.stream.write("\n")
                self.stream.flush()


def progress_for(total: int, label: str, enabled: ProgressArg) -> Progress:
    """A callback is told every step; ``enabled=None`` shows a bar only on a terminal
    and for more than 8 units."""
    if callable(enabled):
        return Progress(total, label, callback=enabled)
    show = enabled if enabled is not None else (sys.stderr.isatty() and total > 8)
    return Progress(total, label, sys.stderr if show else None)


@telemetry.traced(
    "runarchive.restore",
    lambda plan, *_, **__: {"run_id": plan.run_id, "segments": len(plan.segments)},
    lambda records: {"records": len(records)},
)
def execute_restore(
    plan: RestorePlan,
    store: Store,
    *,
    workers: int = 8,
    progress: ProgressArg = None,
    on_segment: Callable[[SegmentRef], Any] | None = None,
    keyring: Keyring | None = None,
    reread: Callable[[], RestorePlan] | None = None,
) -> list[Checkpoint | Event]:
    """Fetch and decode the planned segments; records in seq order, cut-offs applied.

    Raises ``CorruptObjectError`` naming the object if a segment is missing or
    does not match its checksum. Sealed segments need ``keyring`` (else
    ``KeyUnavailableError`` naming the key). Cost: one GET per planned segment, at
    most ``workers`` at a time and ahead of decoding. Memory: the records returned, plus
    ``workers`` compressed segments and the one being decoded (:class:`RecordStream`;
    ``reread`` as there).
    """
    stream = RecordStream(
        plan,
        store,
        keyring=keyring,
        prefetch=workers,
        buffer_bytes=-1,  # every record is kept anyway: decode each segment once
        reread=reread,
        progress=progress,
        on_segment=on_segment,
    )
    return list(stream)


class RecordStream:
    """The records of a :class:`RestorePlan`, in seq order, one segment at a time.

    Segments are taken in seq order; up to ``prefetch`` GETs run ahead of the one
    being decoded, on as many threads. Each segment is checked whole before any of its
    records is yielded (:func:`~runarchive.engine.stream.segment_records`, which also says what
    that holds in memory; ``buffer_bytes`` as there). Cut-offs of the plan and
    ``types`` (``"checkpoint"``, ``"event"``) are applied; a seq is yielded at most once.

    An index that names two segments whose ranges overlap is refused
    (``CorruptObjectError`` naming the second): records could not be yielded in order.

    A segment the bucket does not have is an error (``CorruptObjectError``, "missing")
    unless ``reread`` is given: it returns a fresh plan, from the run index as it is now
    (a concurrent compaction may have merged the segment into a new one and ``gc``
    deleted it). The stream then goes on from where it was with the new plan's
    segments, skipping seqs already behind it; a key the new plan still names, a new
    plan that does not reach the missing segment's last seq, or a second missing
    segment before the stream moved on, is the error. After iterating,
    ``plan`` is the plan last used and ``rereads`` counts the re-reads.
    """

    def __init__(
        self,
        plan: RestorePlan,
        store: Store,
        *,
        keyring: Keyring | None = None,
        prefetch: int = 2,
        buffer_bytes: int | None = None,
        reread: Callable[[], RestorePlan] | None = None,
        progress: ProgressArg = None,
        on_segment: Callable[[SegmentRef], Any] | None = None,
        types: frozenset[str] | None = None,
    ) -> None:
        if prefetch < 1:
            raise InvalidInputError(f"prefetch must be >= 1, not {prefetch}")
        self.plan, self.store, self.keyring = plan, store, keyring
        self.prefetch, self.buffer_bytes, self.types = prefetch, buffer_bytes, types
        self.reread, self.progress, self.on_segment = reread, progress, on_segment
        self.rereads = 0

    def __iter__(self) -> Iterator[Checkpoint | Event]:
        plan = self.plan
        # Every seq <= done is behind the stream: yielded, or not wanted.
        done = plan.min_seq - 1 if plan.min_seq is not None else 0
        todo = deque(_in_order(plan, done))
        if not todo:
            return
        bar = progress_for(len(todo), f"restoring {plan.run_id}", self.progress)
        slim = Slimmer(plan.run_id)
        pool = ThreadPoolExecutor(max_workers=min(self.prefetch, len(todo)))
        ahead: deque[tuple[SegmentRef, Future[bytes]]] = deque()
        reread_at: int | None = None
        count = 0
        try:
            while todo or ahead:
                while todo and len(ahead) <= self.prefetch:
                    ref = todo.popleft()
                    ahead.append((ref, pool.submit(self._get, ref.key)))
                ref, fetching = ahead.popleft()
                try:
                    body = fetching.result()
                except ObjectNotFoundError:
                    if self.reread is None or reread_at == done:
                        raise _missing(ref.key) from None
                    plan = self._reread(ref, done)
                    reread_at = done
                    for _, queued in ahead:
                        queued.cancel()
                    ahead.clear()
                    todo = deque(_in_order(plan, done))
                    bar.total = bar.done + len(todo)
                    continue
                del fetching
                frame = segment_frame(body, ref, plan.run_id, self.keyring, plan.keys)
                del body
                for rec in segment_records(frame, ref, plan.run_id, slim, self.buffer_bytes):
                    if rec.seq <= done or not _wanted(rec, plan, self.types):
                        continue
                    count += 1
                    yield rec
                del frame
                done = max(done, ref.last_seq)
                bar.step()
                if self.on_segment is not None:
                    self.on_segment(ref)
        finally:
            for _, queued in ahead:
                queued.cancel()
            pool.shutdown(wait=False, cancel_futures=True)
        log_run(
            log,
            logging.DEBUG,
            plan.run_id,
            done or None,
            "restored %d records from %d segments (%d index re-reads)",
            count,
            bar.done,
            self.rereads,
        )

    def _get(self, key: str) -> bytes:
        return self.store.get(key).body

    def _reread(self, missing: SegmentRef, done: int) -> RestorePlan:
        if self.reread is None:  # only called with one
            raise _missing(missing.key)
        self.rereads += 1
        plan = self.reread()
        if any(ref.key == missing.key for ref in plan.segments):
            raise _missing(missing.key, " (still named after the index was read again)")
        # A compaction never shortens a run: its merged segment covers the missing one's
        # range. An index that does not would silently lose those records.
        if max((ref.last_seq for ref in plan.segments), default=0) < missing.last_seq:
            raise _missing(
                missing.key,
                f", and the index read again no longer covers its seqs {missing.first_seq}-"
                f"{missing.last_seq}",
            )
        log_run(
            log,
            logging.INFO,
            plan.run_id,
            done or None,
            "segment %s is gone and no longer in the index (compacted); going on with "
            "the index as it is now",
            missing.key,
        )
        self.plan = plan
        return plan


def _missing(key: str, why: str = "") -> CorruptObjectError:
    return CorruptObjectError(
        key, f"missing: the run index lists it but the bucket does not have it{why}"
    )


def _in_order(plan: RestorePlan, done: int) -> list[SegmentRef]:
    """The plan's segments that hold seqs after ``done``, in seq order; overlapping
    ranges are refused."""
    refs = sorted((s for s in plan.segments if s.last_seq > done), key=lambda s: s.first_seq)
    for prev, ref in pairwise(refs):
        if ref.first_seq <= prev.last_seq:
            raise CorruptObjectError(
                ref.key,
                f"the index gives it the seq range {ref.first_seq}-{ref.last_seq}, which "
                f"overlaps {prev.key!r} ({prev.first_seq}-{prev.last_seq}): the index was "
                "altered",
            )
    return refs


def _wanted(rec: Checkpoint | Event, plan: RestorePlan, types: frozenset[str] | None) -> bool:
    return (
        (plan.max_seq is None or rec.seq <= plan.max_seq)
        and (plan.at is None or rec.ts <= plan.at)
        and (types is None or rec.type in types)
    )


@dataclass(frozen=True)
class RestoredRun:
    """A run read back from the bucket: its index and every archived record."""

    index: RunIndex
    records: tuple[Checkpoint | Event, ...]

    @property
    def run_id(self) -> str:
        """The run's id."""
        return self.index.run_id

    @property
    def checkpoints(self) -> list[Checkpoint]:
        """Archived checkpoints in seq order."""
        return [r for r in self.records if isinstance(r, Checkpoint)]

    @property
    def events(self) -> list[Event]:
        """Events in seq order."""
        return [r for r in self.records if isinstance(r, Event)]

    def latest(self, name: str | None = None) -> Checkpoint | None:
        """The newest archived checkpoint (of ``name``, if given)."""
        for rec in reversed(self.records):
            if isinstance(rec, Checkpoint) and (name is None or rec.name == name):
                return rec
        return None
