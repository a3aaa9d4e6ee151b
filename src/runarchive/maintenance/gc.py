"""Garbage collection: what no index needs any more, once the grace period has passed.

:func:`plan_gc` (pure) decides from a listing of the bucket and the run indexes;
:func:`run_gc` executes. Deleted are:

* segments a compaction **retired**, once retired for longer than the grace period
  (the index then forgets them, by compare-and-swap);
* **orphan** segments and pages — objects under ``runs/<id>/seg/`` or ``pages/`` that
  the run's index does not list, left by a retried or crashed flush or merge — once
  older than the grace period (and, for a running run, than :data:`IN_FLIGHT`);
* objects of a run that has **no index** (its first flush never completed), once older
  than the grace period;
* **probe** objects (``_runarchive/probe/``) older than the grace period;
* with a retention rule (``retention_days``): every object of a run that ended more
  than that many days ago — unless an object is locked (Object Lock retention or legal
  hold), in which case the run is kept whole and reported.

The grace period protects what is in flight: a flush between its segment PUT and its
index PUT, a restore or export that read an index just before a compaction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from runarchive.errors import (
    CorruptObjectError,
    FormatVersionError,
    ObjectLockedError,
    ObjectNotFoundError,
    PreconditionFailedError,
)
from runarchive.faults import fault_point
from runarchive.format.codec import index_key
from runarchive.format.indexpages import expand
from runarchive.format.model import RunIndex, parse_index, utcnow
from runarchive.logs import log_run
from runarchive.store import IfMatch, ObjectMeta, Store

PROBE_PREFIX = "_runarchive/probe/"
# An object of a running run that its index does not name may be in flight: a flush's
# segment before its index write, a live merge's segment or page before its head's
# compare-and-swap. Whatever the grace (0 included), gc leaves those alone this long:
# deleting one makes the index the writer is about to write name a missing object.
IN_FLIGHT = timedelta(minutes=10)
log = logging.getLogger("runarchive.gc")


@dataclass(frozen=True)
class Doomed:
    """One object to delete and why."""

    key: str
    size: int
    why: str  # retired, orphan, no-index, probe, expired


@dataclass
class GcPlan:
    """What a gc run deletes (pure result of :func:`plan_gc`)."""

    objects: list[Doomed] = field(default_factory=list)
    expired_runs: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # why some candidates were kept
    # Retired entries whose object is already gone (a gc killed between its DELETEs
    # and the index update): only the index's retired list is cleaned.
    forget: list[str] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        """Bytes the deletions free."""
        return sum(d.size for d in self.objects)


def _old(meta: ObjectMeta, cutoff: datetime) -> bool:
    # A store that cannot tell an object's age never lets it look old.
    return meta.modified is not None and meta.modified < cutoff


def plan_gc(
    listing: list[ObjectMeta],
    indexes: dict[str, RunIndex],
    *,
    now: datetime,
    grace: timedelta,
    retention_days: int | None = None,
) -> GcPlan:
    """Decide what to delete from a listing of the archive and the indexes it holds."""
    cutoff, plan = now - grace, GcPlan()
    by_run: dict[str, list[ObjectMeta]] = {}
    for meta in listing:
        if meta.key.startswith(PROBE_PREFIX):
            if _old(meta, cutoff):
                plan.objects.append(Doomed(meta.key, meta.size, "probe"))
            continue
        parts = meta.key.split("/")
        if len(parts) >= 3 and parts[0] == "runs":
            by_run.setdefault(parts[1], []).append(meta)
    expire_before = now - timedelta(days=retention_days) if retention_days else None
    for run_id, metas in sorted(by_run.items()):
        index = indexes.get(run_id)
        if index is None:
            if metas and all(_old(m, cutoff) for m in metas):
                plan.objects.extend(Doomed(m.key, m.size, "no-index") for m in metas)
            elif metas:
                plan.skipped.append(f"{run_id}: no index yet, objects younger than the grace")
            continue
        if (
            expire_before is not None
            and index.status != "running"
            and index.ended_at is not None
            and index.ended_at < expire_before
        ):
            plan.expired_runs.append(run_id)
            continue
        # read_indexes keeps the head's pages beside the expanded refs.
        listed = {s.key for s in index.segments} | {p.key for p in index.pages}
        orphan_cutoff = min(cutoff, now - IN_FLIGHT) if index.status == "running" else cutoff
        retired = {r.key: r.retired_at for r in index.retired}
        for meta in metas:
            if meta.key == index_key(run_id) or meta.key in listed:
                continue
            if meta.key in retired:
                if retired[meta.key] < cutoff:
                    plan.objects.append(Doomed(meta.key, meta.size, "retired"))
            elif ("/seg/" in meta.key or "/pages/" in meta.key) and _old(meta, orphan_cutoff):
                plan.objects.append(Doomed(meta.key, meta.size, "orphan"))
            elif ("/seg/" in meta.key or "/pages/" in meta.key) and _old(meta, cutoff):
                plan.skipped.append(
                    f"{meta.key}: not named by the index of running run {run_id!r}, and "
                    f"younger than {int(IN_FLIGHT.total_seconds())} s (a write in flight?)"
                )
        present = {m.key for m in metas}
        plan.forget.extend(key for key, at in retired.items() if key not in present and at < cutoff)
    return plan


@dataclass
class GcReport:
    """What :func:`run_gc` did (or would do, with ``dry_run``)."""

    plan: GcPlan
    dry_run: bool
    deleted: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    kept_locked: list[str] = field(default_factory=list)


def read_indexes(
    store: Store, run_ids: set[str], tick: Callable[[], None] | None = None
) -> dict[str, RunIndex]:
    """The readable indexes of these runs (unreadable or newer ones are left out:
    gc never deletes around an index it cannot read), every segment ref expanded and
    ``pages`` still naming the head's pages (both are live objects). ``tick`` is
    called after each run."""
    out: dict[str, RunIndex] = {}
    for run_id in sorted(run_ids):
        if tick is not None:
            tick()
        key = index_key(run_id)
        try:
            head = parse_index(store.get(key).body, key)
            out[run_id] = expand(store, head, key).model_copy(update={"pages": head.pages})
        except (ObjectNotFoundError, CorruptObjectError, FormatVersionError):
            continue
    return out


def run_gc(
    store: Store,
    *,
    grace: timedelta,
    retention_days: int | None,
    delete_run: Callable[[str], object],
    dry_run: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> GcReport:
    """List the archive, plan, and delete. ``delete_run`` deletes an expired run (it
    refuses locked ones with ``ObjectLockedError``, which is reported, not raised).

    Cost: 1 LIST of the archive, 1 GET per run index, 1 DELETE per object, and 1 GET +
    1 PUT per index whose retired list shrinks. ``progress`` is told ``(done, total)``
    per index read, object deleted and run expired (the total grows once planned).
    """
    listing = list(store.list(""))
    run_ids = {
        m.key.split("/")[1] for m in listing if m.key.startswith("runs/") and m.key.count("/") >= 2
    }
    steps = [0, len(run_ids)]  # done, total

    def tick() -> None:
        steps[0] += 1
        if progress is not None:
            progress(steps[0], steps[1])

    indexes = read_indexes(store, run_ids, tick)
    plan = plan_gc(listing, indexes, now=utcnow(), grace=grace, retention_days=retention_days)
    if not dry_run:
        steps[1] += len(plan.objects) + len(plan.expired_runs)
    report = GcReport(plan, dry_run)
    log.info(
        "gc%s: %d objects (%d bytes) to delete, %d runs expired, %d skipped",
        " (dry run)" if dry_run else "",
        len(plan.objects),
        plan.bytes,
        len(plan.expired_runs),
        len(plan.skipped),
    )
    if dry_run:
        return report
    for doomed in plan.objects:
        store.delete(doomed.key)
        report.deleted.append(doomed.key)
        parts = doomed.key.split("/")
        if parts[0] == "runs" and len(parts) > 2:
            log_run(
                log, logging.DEBUG, parts[1], None, "gc deleted %s (%s)", doomed.key, doomed.why
            )
        else:
            log.debug("gc deleted %s (%s)", doomed.key, doomed.why)
        fault_point("gc.after_delete")
        tick()
    gone = {d.key for d in plan.objects if d.why == "retired"} | set(plan.forget)
    for run_id, index in indexes.items():
        if any(r.key in gone for r in index.retired):
            _forget_retired(store, run_id, gone)
    for run_id in plan.expired_runs:
        try:
            delete_run(run_id)
        except ObjectLockedError as exc:
            report.kept_locked.append(f"{run_id}: {exc}")
            log_run(log, logging.INFO, run_id, None, "expired but locked: kept (%s)", exc)
        else:
            report.expired.append(run_id)
        tick()
    return report


def _forget_retired(store: Store, run_id: str, gone: set[str]) -> None:
    key = index_key(run_id)
    for _ in range(10):
        got = store.get(key)
        index = parse_index(got.body, key)
        kept = tuple(r for r in index.retired if r.key not in gone)
        if len(kept) == len(index.retired):
            return
        new = index.model_copy(update={"retired": kept})
        try:
            store.put(key, new.model_dump_json().encode(), mode=IfMatch(got.etag))
            return
        except PreconditionFailedError:
            continue  # rewritten meanwhile (a writer, another gc): read again
