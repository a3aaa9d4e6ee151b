"""Maintenance calls of :class:`runarchive.adapters.langgraph.ArchiveSaver` (private).

``delete_thread``, ``delete_for_runs``, ``prune`` and ``copy_thread``: LangGraph's
optional ``BaseCheckpointSaver`` methods, which hide checkpoints by tombstone events
(or delete a thread's run). :class:`ThreadMaintenance` is a base of ``ArchiveSaver``,
not used on its own: the attributes and methods it declares below are the saver's.
What ``prune`` keeps is in ``docs/langgraph.md``.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from runarchive.adapters._lgindex import Entry, Loc, ThreadIndex, WriteRef
from runarchive.errors import CorruptObjectError, InvalidInputError, RunNotFoundError, RunStateError
from runarchive.format.lgshapes import TOMBSTONE_KIND, WRITES_KIND
from runarchive.format.model import Checkpoint, Event

if TYPE_CHECKING:
    from runarchive.archive import Archive


class ThreadMaintenance:
    """``delete_thread``, ``delete_for_runs``, ``prune`` and ``copy_thread`` of
    :class:`~runarchive.adapters.langgraph.ArchiveSaver`."""

    # Provided by ArchiveSaver.
    archive: Archive
    _threads: dict[str, ThreadIndex]

    if TYPE_CHECKING:

        def run_id_for(self, thread_id: str) -> str: ...
        def _thread_lock(self, tid: str) -> threading.RLock: ...
        def _cached_threads(self) -> builtins.list[ThreadIndex]: ...
        def _thread(
            self,
            thread_id: Any,
            *,
            create: bool,
            remote: bool = True,
            write: bool = False,
            fresh: bool = False,
        ) -> ThreadIndex | None: ...

    def _tombstone(self, t: ThreadIndex, locs: builtins.list[Loc], reason: str) -> None:
        # An event, not a deletion: the bucket's segments are immutable history; this
        # hides the checkpoints (and their writes) from the saver on every host.
        if locs:
            t.run.event(TOMBSTONE_KIND, {"reason": reason, "checkpoints": sorted(locs)})
            t.drop(locs)

    def delete_thread(self, thread_id: str) -> None:
        """Delete the thread's run: its objects in the bucket, its manifest entry and
        its cache copy (``archive.delete_run``: 1 LIST + 1 DELETE per object, and on
        S3 1 HEAD per object first). An unknown thread is a no-op (1 LIST)."""
        tid = str(thread_id)
        with self._thread_lock(tid):
            self._threads.pop(tid, None)
            with contextlib.suppress(RunNotFoundError):
                self.archive.delete_run(self.run_id_for(tid))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Hide the checkpoints whose metadata ``run_id`` is one of ``run_ids`` (and
        their writes), in every thread this host's cache holds, by one tombstone event
        per affected thread. The bucket keeps them (docs/langgraph.md). 0 requests."""
        wanted = set(run_ids)
        if not wanted:
            return
        for t in self._cached_threads():
            with t.lock:
                locs = [
                    (ns, cid)
                    for ns, entries in t.checkpoints.items()
                    for cid, e in entries.items()
                    if e.metadata.get("run_id") in wanted
                ]
                self._tombstone(t, locs, "delete_for_runs")

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """``"keep_latest"``: hide all but the newest checkpoint of each namespace;
        ``"delete"``: hide all checkpoints. One tombstone event per thread; the bucket
        keeps the history (use ``delete_thread`` to erase it). 0 requests for threads
        this host holds."""
        if strategy not in ("keep_latest", "delete"):
            raise InvalidInputError(
                f"unknown prune strategy {strategy!r}: use 'keep_latest' or 'delete'"
            )
        for tid in thread_ids:
            t = self._thread(tid, create=False, write=True)
            if t is None:
                continue
            with t.lock:
                locs = [
                    (ns, cid)
                    for ns, entries in t.checkpoints.items()
                    for cid in entries
                    if strategy == "delete" or cid != max(entries)
                ]
                self._tombstone(t, locs, f"prune:{strategy}")

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Append the source thread's live checkpoints and pending writes, in their
        order, to the target thread (created if needed). The source is unchanged; an
        unknown source is a no-op. Reads each copied record (cache, else bucket)."""
        src_id, dst_id = str(source_thread_id), str(target_thread_id)
        if src_id == dst_id:
            raise InvalidInputError("copy_thread: source and target thread are the same")
        src = self._thread(src_id, create=False)
        if src is None:
            return
        dst = self._thread(dst_id, create=True)
        assert dst is not None
        first, second = sorted((src, dst), key=lambda x: x.thread_id)  # no lock-order deadlock
        with first.lock, second.lock:
            live = sorted(
                ((e.seq, ns, cid) for ns, m in src.checkpoints.items() for cid, e in m.items())
            )
            for seq, ns, cid in live:
                rec = src.run.get(seq)
                if not isinstance(rec, Checkpoint):
                    raise RunStateError(f"checkpoint {cid!r} of thread {src_id!r} is not held")
                state = {**rec.state, "thread_id": dst_id}
                new = dst.run.checkpoint(rec.name, state, {**rec.metadata, "thread_id": dst_id})
                entry = src.checkpoints[ns][cid]
                dst.add_checkpoint(ns, cid, Entry(new.seq, entry.parent, entry.metadata))
                by_event: dict[int, builtins.list[WriteRef]] = {}
                for ref in src.writes.get((ns, cid), {}).values():
                    by_event.setdefault(ref.seq, []).append(ref)
                for ev_seq in sorted(by_event):
                    ev = src.run.get(ev_seq)
                    if not isinstance(ev, Event):
                        raise CorruptObjectError(f"run {src.run.run_id} seq {ev_seq}", "no event")
                    refs = sorted(by_event[ev_seq], key=lambda r: r.pos)
                    data = {**ev.data, "writes": [ev.data["writes"][r.pos] for r in refs]}
                    dst.add_writes(ns, cid, dst.run.event(WRITES_KIND, data).seq, data)

    # The async forms run the sync ones on a worker thread, as the saver's others do.
    async def adelete_thread(self, thread_id: str) -> None:
        """Async :meth:`delete_thread`."""
        await asyncio.to_thread(self.delete_thread, thread_id)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Async :meth:`delete_for_runs`."""
        await asyncio.to_thread(self.delete_for_runs, run_ids)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Async :meth:`copy_thread`."""
        await asyncio.to_thread(self.copy_thread, source_thread_id, target_thread_id)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """Async :meth:`prune`."""
        await asyncio.to_thread(self.prune, thread_ids, strategy=strategy)
