"""Live objects (manifest format 2): one per writer process, listing its running runs.

A process writes only its own object, If-Match the ETag it last wrote (create-only
the first time), so lease renewals of different hosts never touch the same key. Other
hosts edit it only to take a run over, delete it, or remove a run that finished
elsewhere — rare, and by the same compare-and-swap. Every write of an object renews
the lease of every run in it: the writer vouches for the whole object, which lets a
reader tell a stale object from its LIST entry (``LastModified``) alone.

Runs a process flushes but does not own (the backlog of a process that died before
listing them) go to a second object of the same process whose key declares lease 0:
it is never renewed, so those runs look interrupted once their lease passes, as
``docs/design.md`` requires.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from runarchive import telemetry
from runarchive.engine.manifest.format import (
    MANIFEST_FORMAT,
    LiveDoc,
    decode_live,
    encode,
    lease_of_writer,
    live_key,
)
from runarchive.errors import ManifestConflictError, ObjectNotFoundError, PreconditionFailedError
from runarchive.faults import fault_point
from runarchive.format.model import format_ts, utcnow
from runarchive.store import IfMatch, ObjectMeta, PutMode, Store

log = logging.getLogger("runarchive.manifest_live")

MAX_ATTEMPTS = 50
# How long a finished run stays in its writer's object after finish() (``ended``), so
# that a paged listing walking the live objects still finds it there (format.md §10.4).
RECENT = timedelta(seconds=180)
# At most this many such runs per object; older ones are dropped first (the object
# then says ``complete_after``, and a listing that needed them restarts).
MAX_ENDED = 256

Runs = dict[str, dict[str, Any]]
LiveChange = Callable[[Runs, Runs], bool]
"""Mutates an object's ``runs`` and ``ended`` in place; False: nothing to write."""


def stale_before(meta: ObjectMeta, lease: int, now: datetime, stale_after: timedelta) -> bool:
    """Whether a live object's LIST entry says it may hold a lease that expired more
    than ``stale_after`` before ``now``. Every write renews every lease in it to at
    least write time + lease; a third of the lease is the margin for clock skew
    between the writer, the server and the reader (a healthy writer rewrites its
    object every third of its lease, so it stays well inside)."""
    if meta.modified is None:
        return True
    return meta.modified < now - stale_after - timedelta(seconds=lease * 2 / 3)


class LiveWriter:
    """The live object of this process (one writer key). Thread-safe: writes are
    serialised, since only this process writes it."""

    def __init__(
        self,
        store: Store,
        writer: str,
        host: str,
        pid: int,
        *,
        refresh: bool,
        rng: random.Random,
        on_conflict: Callable[[], None],
    ) -> None:
        self.store, self.writer, self.host, self.pid = store, writer, host, pid
        self.key = live_key(writer)
        self.lease = lease_of_writer(writer)
        self.refresh = refresh  # renew every entry's lease at each write
        self._rng, self._on_conflict = rng, on_conflict
        self._lock = threading.RLock()
        self._runs: Runs = {}
        self._ended: Runs = {}
        self._complete_after: str | None = None
        self._etag: str | None = None
        self._body: bytes | None = None
        self.seen: set[str] = set()  # run ids that were ever in this object

    def snapshot(self) -> tuple[Runs, bytes | None]:
        """The runs as last written or read, and that body (no request)."""
        with self._lock:
            return dict(self._runs), self._body

    def has(self, run_id: str) -> bool:
        """Whether the object (as last known) lists ``run_id`` as running."""
        with self._lock:
            return run_id in self._runs

    def _reread(self) -> None:
        try:
            got = self.store.get(self.key)
        except ObjectNotFoundError:
            self._runs, self._ended, self._etag, self._body = {}, {}, None, None
            return
        doc = decode_live(got.body, self.key)
        self._runs, self._ended = dict(doc.runs), dict(doc.ended)
        self._complete_after = doc.complete_after
        self._etag, self._body = got.etag, got.body

    def _prune(self, ended: Runs, now: datetime) -> None:
        cut = format_ts(now - RECENT)
        old = [r for r, d in ended.items() if str(d.get("updated_at", "")) < cut]
        if len(ended) - len(old) > MAX_ENDED:
            by_age = sorted(ended, key=lambda r: str(ended[r].get("updated_at", "")))
            old = by_age[: len(ended) - MAX_ENDED]
        for r in old:
            gone = str(ended.pop(r).get("updated_at", ""))
            if self._complete_after is None or gone > self._complete_after:
                self._complete_after = gone

    @telemetry.traced(
        "runarchive.manifest.update",
        lambda self, change: {"kind": "live", "attempts": 0},
    )
    def update(self, change: LiveChange) -> None:
        """Apply ``change`` to this process's object by compare-and-swap. A 412 means
        another host edited it (a takeover, a delete): re-read, re-apply."""
        with self._lock:
            for attempt in range(MAX_ATTEMPTS):
                runs, ended = dict(self._runs), dict(self._ended)
                if not change(runs, ended):
                    return
                now = utcnow()
                self._prune(ended, now)
                if self.refresh:
                    lease = format_ts(now + timedelta(seconds=self.lease))
                    runs = {r: {**d, "lease_expires_at": lease} for r, d in runs.items()}
                if not runs and not ended and self._etag is None:
                    return  # nothing to list, no object to empty
                if not runs and not ended:
                    # Empty: delete rather than keep an object every interrupted() of the
                    # next lease would GET. Only this process writes it with runs in it.
                    self.store.delete(self.key)
                    self._runs, self._ended, self._etag, self._body = {}, {}, None, None
                    return
                doc = LiveDoc(
                    format=MANIFEST_FORMAT,
                    writer=self.writer,
                    host=self.host,
                    pid=self.pid,
                    lease_seconds=self.lease,
                    updated_at=format_ts(now),
                    runs=runs,
                    ended=ended,
                    complete_after=self._complete_after,
                )
                body = encode(doc.model_dump(mode="json"))
                mode: PutMode = IfMatch(self._etag) if self._etag else "create"
                fault_point("manifest.before_put")
                telemetry.hooks.annotate(attempts=attempt + 1)
                try:
                    etag = self.store.put(self.key, body, mode=mode)
                except PreconditionFailedError:
                    self._on_conflict()
                    telemetry.hooks.retried.add(1, {"source": "manifest"})
                    time.sleep(self._rng.uniform(0, min(0.2, 0.005 * 2**attempt)))
                    self._reread()
                    continue
                fault_point("manifest.after_put")
                self._runs, self._ended, self._etag, self._body = runs, ended, etag, body
                self.seen.update(runs)
                return
        raise ManifestConflictError(
            f"manifest object {self.key!r} changed under {MAX_ATTEMPTS} attempts; try again"
        )


def edit_remote(
    store: Store,
    key: str,
    change: LiveChange,
    *,
    rng: random.Random,
    on_conflict: Callable[[], None],
) -> bool:
    """Apply ``change`` to another process's live object by compare-and-swap (a
    takeover, a delete). Returns whether it changed anything. An object left without
    runs is deleted when its writer is gone (its lease passed): a live writer keeps
    its object, and would only re-create it."""
    for attempt in range(MAX_ATTEMPTS):
        try:
            got = store.get(key)
        except ObjectNotFoundError:
            return False
        doc = decode_live(got.body, key)
        runs, ended = dict(doc.runs), dict(doc.ended)
        if not change(runs, ended):
            return False
        gone = doc.updated_at < format_ts(utcnow() - timedelta(seconds=doc.lease_seconds))
        if (
            not runs
            and gone
            and all(
                str(d.get("updated_at", "")) < format_ts(utcnow() - RECENT) for d in ended.values()
            )
        ):
            store.delete(key)
            return True
        new = doc.model_copy(update={"runs": runs, "ended": ended})
        try:
            store.put(key, encode(new.model_dump(mode="json")), mode=IfMatch(got.etag))
        except PreconditionFailedError:
            on_conflict()
            time.sleep(rng.uniform(0, min(0.2, 0.005 * 2**attempt)))
            continue
        return True
    raise ManifestConflictError(
        f"manifest object {key!r} changed under {MAX_ATTEMPTS} attempts; try again"
    )


def read_live(store: Store, key: str) -> LiveDoc | None:
    """A live object, or ``None`` if it is gone."""
    try:
        got = store.get(key)
    except ObjectNotFoundError:
        return None
    return decode_live(got.body, key)


def abandoned(store: Store, key: str) -> bool:
    """Delete ``key`` if it is the object of a process gone for good with no running
    run and no recently finished one left in it (what a clean exit leaves behind).
    Returns whether it was deleted. 1 GET, and 1 DELETE if so."""
    doc = read_live(store, key)
    if doc is None:
        return False
    now = utcnow()
    gone = doc.updated_at < format_ts(now - timedelta(seconds=doc.lease_seconds) - RECENT)
    if doc.runs or not gone:
        return False
    store.delete(key)
    return True
