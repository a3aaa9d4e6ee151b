"""Done partitions (manifest format 2): where finished runs are listed.

Each writer process appends the runs it finishes to its own objects, one series per
hour of the runs' end time (``manifest/done/<YYYYMMDD>/<HH>-<writer>-<n>.json.zst``),
starting object ``n + 1`` once ``n`` holds ``DONE_CAP`` runs. Nobody else writes them
except to patch a field (compaction, rekey) or forget a deleted run, by
compare-and-swap. A finish therefore rewrites at most one object of ≤ 256 entries,
whatever the number of runs in the archive.

A run's done entry is found again from its end time and its finisher (the run index
has both): one LIST of that hour's objects of that process, then GETs newest first.
"""

from __future__ import annotations

import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from runarchive import telemetry
from runarchive.engine.manifest.format import (
    DONE_CAP,
    DONE_PREFIX,
    MANIFEST_FORMAT,
    DoneDoc,
    decode_done,
    done_key,
    encode,
    partition_of,
    safe_host,
)
from runarchive.errors import ManifestConflictError, ObjectNotFoundError, PreconditionFailedError
from runarchive.faults import fault_point
from runarchive.store import IfMatch, PutMode, Store

MAX_ATTEMPTS = 50
Runs = dict[str, dict[str, Any]]


@dataclass
class _Slot:
    """This process's current object of one hour: its number, runs and ETag."""

    n: int
    runs: Runs = field(default_factory=dict)
    etag: str | None = None


class DoneWriter:
    """Appends finished runs to this process's done objects. Thread-safe."""

    def __init__(
        self, store: Store, writer: str, *, rng: random.Random, on_conflict: Callable[[], None]
    ) -> None:
        self.store, self.writer = store, writer
        self._rng, self._on_conflict = rng, on_conflict
        self._lock = threading.Lock()
        # A few hours at most are open at once (runs end in time order, mostly).
        self._slots: OrderedDict[tuple[str, str], _Slot] = OrderedDict()

    @telemetry.traced(
        "runarchive.manifest.update",
        lambda self, data, ended: {"kind": "done", "attempts": 0},
    )
    def add(self, data: dict[str, Any], ended: datetime) -> str:
        """List one finished run; returns the key of the object that holds it."""
        day, hour = partition_of(ended)
        with self._lock:
            slot = self._slots.pop((day, hour), None) or _Slot(0)
            self._slots[(day, hour)] = slot
            while len(self._slots) > 8:
                self._slots.popitem(last=False)
            for attempt in range(MAX_ATTEMPTS):
                if len(slot.runs) >= DONE_CAP and data["run_id"] not in slot.runs:
                    slot.n, slot.runs, slot.etag = slot.n + 1, {}, None
                runs = {**slot.runs, data["run_id"]: data}
                key = done_key(day, hour, self.writer, slot.n)
                doc = DoneDoc(
                    format=MANIFEST_FORMAT, writer=self.writer, partition=f"{day}/{hour}", runs=runs
                )
                body = encode(doc.model_dump(mode="json"))
                mode: PutMode = IfMatch(slot.etag) if slot.etag else "create"
                fault_point("manifest.before_put")
                telemetry.hooks.annotate(attempts=attempt + 1)
                try:
                    slot.etag = self.store.put(key, body, mode=mode)
                except PreconditionFailedError:
                    # Ours, from an earlier attempt whose answer was lost, or edited by
                    # a patch/forget: read it and go on from what it holds.
                    self._on_conflict()
                    time.sleep(self._rng.uniform(0, min(0.2, 0.005 * 2**attempt)))
                    try:
                        got = self.store.get(key)
                    except ObjectNotFoundError:
                        slot.runs, slot.etag = {}, None
                        continue
                    slot.runs, slot.etag = dict(decode_done(got.body, key).runs), got.etag
                    continue
                fault_point("manifest.after_put")
                slot.runs = runs
                return key
        raise ManifestConflictError(
            f"manifest object {key!r} changed under {MAX_ATTEMPTS} attempts; try again"
        )


def candidate_keys(
    store: Store, ended: datetime, host: str | None, pid: int | None
) -> Iterator[str]:
    """Keys of the done objects that may hold a run that ended at ``ended``, finished
    by ``host``/``pid`` if known: that process's objects of that hour first (1 LIST),
    then every object of that day (1 LIST per 1,000), newest first."""
    day, hour = partition_of(ended)
    tried: set[str] = set()
    if host:
        mine = f"{DONE_PREFIX}{day}/{hour}-{safe_host(host)}." + (f"{pid}." if pid else "")
        for meta in sorted(store.list(mine), key=lambda m: m.key, reverse=True):
            tried.add(meta.key)
            yield meta.key
    for meta in sorted(store.list(f"{DONE_PREFIX}{day}/"), key=lambda m: m.key, reverse=True):
        if meta.key not in tried:
            yield meta.key


def edit_done(
    store: Store,
    run_id: str,
    keys: Iterator[str],
    change: Callable[[Runs], bool],
    *,
    rng: random.Random,
    on_conflict: Callable[[], None],
) -> str | None:
    """Find ``run_id`` in the first of ``keys`` that lists it and apply ``change`` to
    that object by compare-and-swap. Returns its key, or ``None`` if none lists it.
    An object left empty stays (an empty partition object costs a GET to listings)."""
    for key in keys:
        for attempt in range(MAX_ATTEMPTS):
            try:
                got = store.get(key)
            except ObjectNotFoundError:
                break
            doc = decode_done(got.body, key)
            if run_id not in doc.runs:
                break
            runs = dict(doc.runs)
            if not change(runs):
                return key
            try:
                store.put(
                    key,
                    encode(doc.model_copy(update={"runs": runs}).model_dump(mode="json")),
                    mode=IfMatch(got.etag),
                )
            except PreconditionFailedError:
                on_conflict()
                time.sleep(rng.uniform(0, min(0.2, 0.005 * 2**attempt)))
                continue
            return key
        else:
            raise ManifestConflictError(
                f"manifest object {key!r} changed under {MAX_ATTEMPTS} attempts; try again"
            )
    return None


def read_done(store: Store, key: str) -> DoneDoc | None:
    """A done object, or ``None`` if it is gone."""
    try:
        got = store.get(key)
    except ObjectNotFoundError:
        return None
    return decode_done(got.body, key)
