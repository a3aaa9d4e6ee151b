"""The manifest: the index of every run that lets any host list runs and find the
interrupted ones without listing the bucket. Format 2 (``docs/format.md`` §10)::

    manifest/live/<writer>.json.zst                       a writer process's running runs
    manifest/done/<YYYYMMDD>/<HH>-<writer>-<n>.json.zst   runs it finished, by end hour

Each process writes only its own objects (:mod:`runarchive.engine.manifest.live`,
:mod:`runarchive.engine.manifest.done`), so no write's cost grows with the number of runs
and lease renewals of different hosts never contend: a renewal is one PUT of the
process's own live object, a finish one PUT of its current done object (≤ 256
entries) plus one of its live object. Other hosts touch those objects only to take a
run over, delete it, or patch a finished run's fields, by compare-and-swap.

``interrupted()`` is one LIST of ``manifest/live/`` (the objects' LastModified tell
which writers stopped renewing) plus GETs of the stale ones only. Listings are paged
(:mod:`runarchive.engine.manifest.listing`). The format 1 shards (``manifest/active|done/<s>``)
of older archives stay readable, and are rewritten only to remove a run from them.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from runarchive.crypto.keyring import Keyring
from runarchive.crypto.sealing import open_entry_metadata
from runarchive.engine.manifest.done import DoneWriter, candidate_keys, edit_done
from runarchive.engine.manifest.find import (
    RunsChange,
    Whereabouts,
    legacy_shards,
    legacy_update,
    read_whereabouts,
)
from runarchive.engine.manifest.format import (
    KINDS,
    LIVE_PREFIX,
    MANIFEST_FORMAT,
    SHARDS,
    Kind,
    RunEntry,
    decode,
    decode_legacy,
    decode_live,
    dump_entry,
    host_prefix,
    lease_of_writer,
    new_writer_key,
    shard_key,
    shard_of,
    writer_of_live_key,
)
from runarchive.engine.manifest.listing import Filters, PageWalk, fetch, gc_paused, scan
from runarchive.engine.manifest.live import RECENT, LiveWriter, abandoned, edit_remote, stale_before
from runarchive.errors import (
    CorruptObjectError,
    EncryptionError,
)
from runarchive.format.model import RunStatus, format_ts, utcnow
from runarchive.logs import log_run
from runarchive.store import Store

__all__ = [
    "KINDS",
    "MANIFEST_FORMAT",
    "SHARDS",
    "Manifest",
    "RunEntry",
    "RunList",
    "Whereabouts",
    "shard_key",
    "shard_of",
]
log = logging.getLogger("runarchive.manifest")
MAX_ATTEMPTS = 50
CLEANUP_EVERY = 600.0  # seconds between sweeps of this host's stale, emptied objects


class RunList(list[RunEntry]):
    """A page of runs; ``next_page`` is the token of the next one (``None``: the last)."""

    next_page: str | None = None


class Manifest:
    """Reads the manifest, and writes this process's part of it. Thread-safe.

    ``host``/``pid``/``lease_seconds`` name this process as a writer (its objects'
    keys); a reader never writes, so never needs them.
    """

    def __init__(
        self,
        store: Store,
        keyring: Keyring | None = None,
        *,
        seed: int | None = None,
        host: str | None = None,
        pid: int | None = None,
        lease_seconds: float = 60.0,
    ) -> None:
        self.store = store
        self.keyring = keyring  # opens encrypted runs' metadata when listing
        # Whether listing may ask a remote key provider (KMS: one Decrypt per run not
        # seen yet by this process) to open metadata; local keys are always used.
        self.decrypt_remote = False
        self.host = host or socket.gethostname()
        self.pid = pid or os.getpid()
        self.lease_seconds = lease_seconds
        self.conflicts = 0  # 412/409 answers seen, for benchmarks and status
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._known: dict[str, bytes] = {}  # key -> body of objects read, for locate()
        self._live: LiveWriter | None = None
        self._orphans: LiveWriter | None = None
        self._done: DoneWriter | None = None
        self._hints: dict[str, tuple[str, int]] = {}
        self._legacy: list[str] | None = None  # format 1 shards present
        self._legacy_until = 0.0
        self._next_cleanup = 0.0

    # -- this process's objects ---------------------------------------------------

    def _conflict(self) -> None:
        with self._lock:
            self.conflicts += 1

    def _remember(self, key: str, body: bytes) -> None:
        with self._lock:
            self._known[key] = body

    def _writers(self) -> tuple[LiveWriter, LiveWriter, DoneWriter]:
        with self._lock:
            if self._live is None or self._orphans is None or self._done is None:
                writer = new_writer_key(self.host, self.pid, self.lease_seconds)
                orphan = writer.rsplit(".", 1)[0] + ".0"  # lease 0: never vouched for
                args: dict[str, Any] = {"rng": self._rng, "on_conflict": self._conflict}
                self._live = LiveWriter(
                    self.store, writer, self.host, self.pid, refresh=True, **args
                )
                self._orphans = LiveWriter(
                    self.store, orphan, self.host, self.pid, refresh=False, **args
                )
                self._done = DoneWriter(self.store, writer, **args)
            return self._live, self._orphans, self._done

    @property
    def writer(self) -> str:
        """This process's writer key (``<host>.<pid>.<random>.<lease>``)."""
        return self._writers()[0].writer

    def moved(self, run_id: str, host: str, pid: int) -> None:
        """Say that ``run_id`` was listed by process ``pid`` of ``host`` (a takeover):
        the next upsert of it removes it from there."""
        with self._lock:
            self._hints[run_id] = (host, pid)

    # -- run life cycle -----------------------------------------------------------

    def upsert_active(self, entry: RunEntry, *, vouched: bool = True) -> None:
        """List a running run in this process's live object (1 PUT). ``vouched=False``
        (a run this process flushes but does not own) lists it where its lease is
        never renewed. A run moved here from another process (:meth:`moved`) is then
        removed from that process's object (1 LIST, 1 GET, 1 PUT)."""
        live, orphans, _ = self._writers()
        data = dump_entry(entry)

        def change(runs: dict[str, dict[str, Any]], ended: dict[str, dict[str, Any]]) -> bool:
            current = runs.get(entry.run_id)
            if current is not None and current.get("epoch", 0) > entry.epoch:
                return False  # a newer owner wrote it: never move it back
            runs[entry.run_id] = data
            ended.pop(entry.run_id, None)
            return True

        (live if vouched else orphans).update(change)
        with self._lock:
            hint = self._hints.pop(entry.run_id, None)
        if hint is not None:
            self._remove_elsewhere(entry.run_id, entry.epoch, hint[0], hint[1])
        elif vouched and orphans.has(entry.run_id):
            orphans.update(lambda runs, ended: runs.pop(entry.run_id, None) is not None)

    def renew(self, entries: Iterable[RunEntry]) -> set[str]:
        """Renew the leases (and progress) of runs this process owns: one PUT of its
        own live object, contended by no other host.

        A run that was in the object and is gone (taken over, finished or deleted
        elsewhere), or is there at a higher epoch, is not put back: its id is
        returned, so that its writer stops. A run never listed by this process (it
        reattached a run another process of this host listed) is moved here.
        """
        live, orphans, _ = self._writers()
        group = list(entries)
        lost: set[str] = set()
        adopted: list[RunEntry] = []
        if not group:
            self._idle(live)
            return lost

        def change(runs: dict[str, dict[str, Any]], ended: dict[str, dict[str, Any]]) -> bool:
            lost.clear()  # recomputed per attempt
            adopted.clear()
            for e in group:
                current = runs.get(e.run_id)
                if e.run_id in ended or (current is None and e.run_id in live.seen):
                    lost.add(e.run_id)
                    continue
                if current is not None and current.get("epoch", 0) > e.epoch:
                    lost.add(e.run_id)
                    continue
                if current is None:
                    adopted.append(e)
                runs[e.run_id] = dump_entry(e)
            return len(lost) < len(group)

        live.update(change)
        for e in adopted:
            self._drop_orphan(orphans, e.run_id)
            self._remove_elsewhere(e.run_id, e.epoch, self.host, None)
        self._sweep()
        return lost

    @staticmethod
    def _drop_orphan(orphans: LiveWriter, run_id: str) -> None:
        if orphans.has(run_id):
            orphans.update(lambda runs, ended: runs.pop(run_id, None) is not None)

    def _idle(self, live: LiveWriter) -> None:
        """No run to renew: drop finished runs older than RECENT from the object (it
        is deleted once empty); no request otherwise."""
        runs, _ = live.snapshot()
        cut = format_ts(utcnow() - RECENT)

        def change(runs: dict[str, dict[str, Any]], ended: dict[str, dict[str, Any]]) -> bool:
            return any(str(d.get("updated_at", "")) < cut for d in ended.values())

        if not runs:
            live.update(change)

    def finish(self, entry: RunEntry, *, listed: bool = True) -> None:
        """List a completed or failed run as done: 1 PUT of this process's current
        done object, then 1 PUT of its live object (the run leaves ``runs`` for
        ``ended``). ``listed=False``: the run was never listed as running, so no
        other object can hold it."""
        live, orphans, done = self._writers()
        data = dump_entry(entry)
        ended_at = entry.ended_at or entry.updated_at
        key = done.add(data, ended_at)
        log_run(log, logging.DEBUG, entry.run_id, entry.last_seq, "listed as done in %s", key)
        here = live.has(entry.run_id) or entry.run_id in live.seen

        def change(runs: dict[str, dict[str, Any]], ended: dict[str, dict[str, Any]]) -> bool:
            runs.pop(entry.run_id, None)
            ended[entry.run_id] = data  # for paged listings (format.md §10.4)
            return True

        live.update(change)
        if orphans.has(entry.run_id):
            orphans.update(lambda runs, ended: runs.pop(entry.run_id, None) is not None)
        elif listed and not here:
            # Listed by another process of this host (it died; this one flushed its
            # backlog), or by a format 1 writer: remove it there (1 LIST + GETs).
            self._remove_elsewhere(entry.run_id, entry.epoch, self.host, None)

    def patch_done(
        self,
        run_id: str,
        fields: dict[str, Any],
        kind: Kind = "done",
        *,
        where: Whereabouts | None = None,
    ) -> None:
        """Update fields of a finished run's entry (after a compaction, a rekey), or of
        a running one's with ``kind="active"``. The entry is found from the run index
        (``where``, else 1 GET of it): 1 LIST + 1-2 GETs + 1 PUT."""

        def patch(runs: dict[str, dict[str, Any]]) -> bool:
            current = runs.get(run_id)
            if current is None:
                return False
            runs[run_id] = {**current, **fields}
            return True

        live, _, _ = self._writers()
        if kind == "active" and live.has(run_id):
            live.update(lambda runs, ended: patch(runs))
            return
        where = where or self.whereabouts(run_id)
        if where is None:
            return
        if kind == "active":
            for key in self._live_keys_of(where.owner_host, where.owner_pid):
                edit_remote(
                    self.store,
                    key,
                    lambda runs, ended: patch(runs),
                    rng=self._rng,
                    on_conflict=self._conflict,
                )
        elif where.ended_at is not None:
            listed: list[str] = []  # when the run was listed as done

            def patch_seen(runs: dict[str, dict[str, Any]]) -> bool:
                listed.append(str(runs.get(run_id, {}).get("updated_at", "")))
                return patch(runs)

            keys = candidate_keys(self.store, where.ended_at, where.owner_host, where.owner_pid)
            edit_done(
                self.store, run_id, keys, patch_seen, rng=self._rng, on_conflict=self._conflict
            )
            if listed and listed[-1] > format_ts(utcnow() - RECENT):
                # Still in its finisher's `ended`, which paged listings read: patch it too.
                live.update(lambda runs, ended: patch(ended))
                for key in self._live_keys_of(where.owner_host, where.owner_pid):
                    edit_remote(
                        self.store,
                        key,
                        lambda runs, ended: patch(ended),
                        rng=self._rng,
                        on_conflict=self._conflict,
                    )
        self._legacy_update(kind, run_id, patch)

    def forget(self, run_id: str, *, where: Whereabouts | None = None) -> None:
        """Remove a run from the manifest (after its objects were deleted). ``where``
        (from its index, read before deleting it) says where its entry is; without
        it, this process's objects, its host's and the legacy shards are searched."""
        live, orphans, _ = self._writers()
        for own in (live, orphans):
            if own.has(run_id):
                own.update(lambda runs, ended: runs.pop(run_id, None) is not None)
        live.update(lambda runs, ended: ended.pop(run_id, None) is not None)
        pop = lambda runs: runs.pop(run_id, None) is not None  # noqa: E731
        if where is not None and where.status != "running" and where.ended_at is not None:
            keys = candidate_keys(self.store, where.ended_at, where.owner_host, where.owner_pid)
            edit_done(self.store, run_id, keys, pop, rng=self._rng, on_conflict=self._conflict)
        host = where.owner_host if where is not None else self.host
        pid = where.owner_pid if where is not None else None
        for key in self._live_keys_of(host, pid):
            edit_remote(
                self.store,
                key,
                lambda runs, ended: bool(runs.pop(run_id, None)) | bool(ended.pop(run_id, None)),
                rng=self._rng,
                on_conflict=self._conflict,
            )
        for kind in KINDS:
            self._legacy_update(kind, run_id, pop)

    # -- finding entries elsewhere -------------------------------------------------

    def whereabouts(self, run_id: str) -> Whereabouts | None:
        """Where the run index says a run's entry is (1 GET), ``None`` if it has none."""
        return read_whereabouts(self.store, run_id)

    def _live_keys_of(self, host: str, pid: int | None) -> list[str]:
        """Live objects of ``host`` (of its process ``pid`` if given) but this
        process's main one: 1 LIST."""
        mine = self._writers()[0].key
        prefix = host_prefix(host, pid or None)
        return [
            m.key for m in self.store.list(prefix) if m.key != mine and writer_of_live_key(m.key)
        ]

    def _remove_elsewhere(self, run_id: str, epoch: int, host: str, pid: int | None) -> None:
        """Remove ``run_id`` (at ``epoch`` or older) from other processes' objects of
        ``host`` and from the legacy shards: a takeover or an adoption."""

        def change(runs: dict[str, dict[str, Any]], ended: dict[str, dict[str, Any]]) -> bool:
            current = runs.get(run_id)
            if current is None or current.get("epoch", 0) > epoch:
                return False
            del runs[run_id]
            return True

        for key in self._live_keys_of(host, pid):
            edit_remote(self.store, key, change, rng=self._rng, on_conflict=self._conflict)
        self._legacy_update(
            "active",
            run_id,
            lambda runs: (
                runs.get(run_id, {}).get("epoch", 0) <= epoch and runs.pop(run_id, None) is not None
            ),
        )

    def _legacy_shards(self) -> list[str]:
        """The format 1 shards present (2 LISTs), remembered for CLEANUP_EVERY: a
        format 1 writer still running during an upgrade may create one."""
        with self._lock:
            if self._legacy is not None and time.monotonic() < self._legacy_until:
                return self._legacy
        found = legacy_shards(self.store)
        with self._lock:
            self._legacy, self._legacy_until = found, time.monotonic() + CLEANUP_EVERY
        return found

    def _legacy_update(self, kind: Kind, run_id: str, change: RunsChange) -> None:
        """Apply ``change`` to a run's format 1 shard of ``kind``, if it exists."""
        key = shard_key(kind, shard_of(run_id))
        if key in self._legacy_shards():
            legacy_update(self.store, key, change, rng=self._rng, on_conflict=self._conflict)

    def _sweep(self) -> None:
        """Now and then, delete this host's objects of processes gone for good that
        hold no running run (what a clean exit leaves): 1 LIST + a GET of each stale one."""
        if time.monotonic() < self._next_cleanup:
            return
        self._next_cleanup = time.monotonic() + CLEANUP_EVERY
        now = utcnow()
        live, orphans, _ = self._writers()
        for meta in self.store.list(host_prefix(self.host)):
            writer = writer_of_live_key(meta.key)
            if writer is None or meta.key in (live.key, orphans.key):
                continue
            if stale_before(meta, lease_of_writer(writer), now, RECENT):
                abandoned(self.store, meta.key)

    # -- queries ----------------------------------------------------------------

    def _entry(self, data: dict[str, Any], remote: bool | None = None) -> RunEntry:
        sealed, key = data.get("sealed_metadata"), data.get("metadata_key")
        if self.keyring is None or not isinstance(sealed, dict) or not isinstance(key, dict):
            return RunEntry.model_validate(data)
        run_id = str(data.get("run_id"))
        try:
            meta = open_entry_metadata(
                run_id,
                sealed,
                key,
                self.keyring,
                f"manifest entry of run {run_id}",
                remote=self.decrypt_remote if remote is None else remote,
            )
        except (EncryptionError, CorruptObjectError, KeyError) as exc:
            # One run's missing key (or a damaged entry) must not fail a whole listing:
            # it is listed sealed.
            log_run(log, logging.DEBUG, run_id, None, "metadata listed sealed: %s", exc)
            return RunEntry.model_validate(data)
        return RunEntry.model_validate({**data, "metadata": meta})

    def locate(self, run_id: str) -> str | None:
        """The key of an object read by this manifest that lists ``run_id`` (for naming
        a bad entry in an error; decodes the remembered objects, no request)."""
        with self._lock:
            known = sorted(self._known.items())
        for key, body in known:
            runs = decode(body, key)["runs"]
            if run_id in runs or any(d.get("run_id") == run_id for d in runs.values()):
                return key
        return None

    def read_all(self, kinds: tuple[Kind, ...] = KINDS) -> dict[str, dict[str, Any]]:
        """Every entry of the given kinds (``active``: running), done winning. Reads
        the whole manifest: 1 LIST per 1,000 objects and 1 GET per object."""
        with gc_paused():
            merged = scan(self.store, self._remember, "active" in kinds, "done" in kinds)
        if kinds == ("active",):
            return {r: d for r, d in merged.items() if d.get("status") == "running"}
        return merged

    def entries(
        self,
        *,
        status: RunStatus | None = None,
        agent: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
        decrypt_remote: bool | None = None,
    ) -> list[RunEntry]:
        """Runs matching the filters (on ``created_at``, inclusive), newest first,
        from a whole scan (:meth:`read_all`); :meth:`page` bounds the cost instead.
        ``decrypt_remote`` overrides :attr:`decrypt_remote` for this call."""
        filters = Filters.of(status, agent, since, until)
        remote = self.decrypt_remote if decrypt_remote is None else decrypt_remote
        with gc_paused():
            merged = scan(
                self.store, self._remember, status in (None, "running"), status != "running"
            )
            rows = [d for d in merged.values() if filters.match(d)]
            rows.sort(key=lambda d: (d["created_at"], d["run_id"]), reverse=True)
            if limit is not None:
                rows = rows[:limit]
            return [self._entry(d, remote) for d in rows]

    def page(
        self,
        *,
        status: RunStatus | None = None,
        agent: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 1000,
        page: str | None = None,
        decrypt_remote: bool | None = None,
    ) -> RunList:
        """One page of at most ``limit`` runs (newest created first within the page;
        across pages: running runs, then finished ones newest end first, then legacy
        format 1 entries) and ``next_page``. Cost: bounded by the page — 1 LIST of
        writers, 1 LIST per day visited, 1 GET per object read (docs/format.md §10.4)."""
        filters = Filters.of(status, agent, since, until)
        remote = self.decrypt_remote if decrypt_remote is None else decrypt_remote
        with gc_paused():
            rows, token = PageWalk(self.store, filters, limit, page, self._remember).run()
            rows.sort(key=lambda d: (d["created_at"], d["run_id"]), reverse=True)
            out = RunList(self._entry(d, remote) for d in rows)
        out.next_page = token
        return out

    def lookup(self, run_ids: Iterable[str]) -> dict[str, RunEntry]:
        """The entries of these runs (absent ids are left out), done winning. Cost per
        run: 1 GET of its index, then 1 LIST + 1-2 GETs where it says the entry is."""
        found: dict[str, RunEntry] = {}
        for run_id in dict.fromkeys(run_ids):
            data = self._find(run_id)
            if data is not None:
                found[run_id] = self._entry(data)
        return found

    def _find(self, run_id: str) -> dict[str, Any] | None:
        where = self.whereabouts(run_id)
        hit: dict[str, Any] | None = None
        for kind in KINDS:  # legacy first: format 2 wins
            key = shard_key(kind, shard_of(run_id))
            if key in self._legacy_shards():
                for body in fetch(self.store, [key], self._remember):
                    if body is not None:
                        hit = decode_legacy(body, key).get(run_id, hit)
        if where is None:
            return hit
        if where.ended_at is not None and where.status != "running":
            found = candidate_keys(self.store, where.ended_at, where.owner_host, where.owner_pid)
            for key in found:  # the finisher's objects of that hour first: usually 1 GET
                body = fetch(self.store, [key], self._remember)[0]
                if body is not None and (done := decode(body, key)["runs"].get(run_id)):
                    return dict(done)
        if (where.owner_host, where.owner_pid) == (self.host, self.pid):
            runs, _ = self._writers()[0].snapshot()
            hit = runs.get(run_id, hit)
        keys = self._live_keys_of(where.owner_host, where.owner_pid)
        for key, body in zip(keys, fetch(self.store, keys, self._remember), strict=True):
            if body is not None:
                hit = decode_live(body, key).runs.get(run_id, hit)
        return hit

    def interrupted(self, stale_after: timedelta = timedelta(0)) -> list[RunEntry]:
        """Running runs whose owner's lease expired more than ``stale_after`` ago.

        1 LIST of ``manifest/live/`` (per 1,000 writer processes), a GET of each
        object whose writer stopped renewing it (its LastModified says so), and 1
        LIST of the legacy ``manifest/active/`` (plus its shards' GETs, if any).
        Completed and failed runs are never candidates."""
        now = utcnow()
        cutoff = format_ts(now - stale_after)
        stale = []
        for meta in self.store.list(LIVE_PREFIX):
            writer = writer_of_live_key(meta.key)
            if writer is not None and stale_before(meta, lease_of_writer(writer), now, stale_after):
                stale.append(meta.key)
        legacy = [m.key for m in self.store.list("manifest/active/")]
        best: dict[str, dict[str, Any]] = {}
        with gc_paused():
            bodies = fetch(self.store, stale + legacy, self._remember)
            for key, body in zip(stale + legacy, bodies, strict=True):
                if body is None:
                    continue
                runs = decode_live(body, key).runs if key in stale else decode_legacy(body, key)
                for run_id, d in runs.items():
                    if d.get("status") != "running" or (d.get("lease_expires_at") or "") >= cutoff:
                        continue
                    if run_id not in best or d.get("epoch", 0) > best[run_id].get("epoch", 0):
                        best[run_id] = d
            out = [self._entry(d, True) for d in best.values()]  # few: opening is cheap
        out.sort(key=lambda e: (e.created_at, e.run_id))
        return out
