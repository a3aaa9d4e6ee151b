"""Restore: a pure plan (which segments, which cut-off) and an executor that fetches them.

The plan is computed from the run index alone, after checking that every segment
ref is one of the run's with a real seq range; the executor GETs the planned
segments in parallel, checks each body against the SHA-256 and size in the index and
its header and records against the ref (the run, the range), and returns the records
in seq order. Nothing is written anywhere.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TextIO

from runarchive import telemetry
from runarchive.codec import check_ref, index_key
from runarchive.crypto import Keyring, decode_any
from runarchive.errors import (
    CorruptObjectError,
    InvalidInputError,
    NamedObjectMissingError,
    ObjectNotFoundError,
)
from runarchive.logs import log_run
from runarchive.model import Checkpoint, DataKey, Event, RunIndex, SegmentRef, validate_run_id
from runarchive.store import Store

log = logging.getLogger(__name__)


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
    checked first (:func:`~runarchive.codec.check_ref`: a key under the run's ``seg/``,
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


class Progress:
    """A one-line progress bar on a terminal; silent elsewhere."""

    def __init__(self, total: int, label: str, stream: TextIO | None = None) -> None:
        self.total, self.label, self.done = total, label, 0
        self.stream = stream
        self._lock = threading.Lock()

    def step(self) -> None:
        """Count one unit done and redraw."""
        with self._lock:
            self.done += 1
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


def progress_for(total: int, label: str, enabled: bool | None) -> Progress:
    """``enabled=None`` shows a bar only on a terminal and for more than 8 units."""
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
    progress: bool | None = None,
    on_segment: Callable[[SegmentRef], Any] | None = None,
    keyring: Keyring | None = None,
) -> list[Checkpoint | Event]:
    """Fetch and decode the planned segments; records in seq order, cut-offs applied.

    Raises ``CorruptObjectError`` naming the object if a segment is missing or
    does not match its checksum. Sealed segments need ``keyring`` (else
    ``KeyUnavailableError`` naming the key). Cost: one GET per planned segment.
    """
    bar = progress_for(len(plan.segments), f"restoring {plan.run_id}", progress)

    def fetch(ref: SegmentRef) -> list[Checkpoint | Event]:
        try:
            body = store.get(ref.key).body
        except ObjectNotFoundError:
            raise NamedObjectMissingError(
                ref.key, "missing: the run index lists it but the bucket does not have it"
            ) from None
        records = decode_any(body, ref, plan.run_id, keyring, plan.keys)
        bar.step()
        if on_segment is not None:
            on_segment(ref)
        return records

    if not plan.segments:
        return []
    with ThreadPoolExecutor(max_workers=min(workers, len(plan.segments))) as pool:
        batches = list(pool.map(fetch, plan.segments))
    out: list[Checkpoint | Event] = []
    seen: set[int] = set()
    for batch in batches:
        for rec in batch:
            # Overlapping segments cannot appear in one index, but a record is
            # immutable by seq, so de-duplicating here is always safe.
            if rec.seq in seen:
                continue
            if plan.max_seq is not None and rec.seq > plan.max_seq:
                continue
            if plan.at is not None and rec.ts > plan.at:
                continue
            if plan.min_seq is not None and rec.seq < plan.min_seq:
                continue
            seen.add(rec.seq)
            out.append(rec)
    out.sort(key=lambda r: r.seq)
    last = out[-1].seq if out else None
    log_run(
        log,
        logging.DEBUG,
        plan.run_id,
        last,
        "restored %d records from %d segments",
        len(out),
        len(plan.segments),
    )
    return out


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
