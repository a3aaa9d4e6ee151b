"""The manifest: one index of every run, shared by many hosts, updated only by CAS.

Layout (format version 1; see ``docs/format.md``)::

    manifest/active/<s>.json.zst    runs whose status is "running", shard s = 0..7
    manifest/done/<s>.json.zst      completed and failed runs, shard s = 0..7

A run's shard is ``int(sha256(run_id)[:8], 16) % 8``. Each shard object is a zstd
frame of one JSON document ``{"format": 1, "kind": ..., "shard": s, "runs": {run_id:
entry}}``. Splitting running from finished runs keeps the objects that change
often (leases, progress) small, and makes ``interrupted()`` read only them.

Every write is a compare-and-swap: create-only for a missing shard, ``If-Match``
the ETag read otherwise; a 412/409 re-reads the shard and re-applies the change
after a jittered pause, so no update is ever lost. A run moves from ``active`` to
``done`` in two writes (upsert into done, then removal from active); a reader that
sees it in both takes the ``done`` entry.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any, Literal

import orjson
import zstandard
from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_serializer

from runarchive import telemetry
from runarchive.codec import decompress_bounded
from runarchive.crypto import Keyring, open_entry_metadata
from runarchive.errors import (
    CorruptObjectError,
    EncryptionError,
    FormatVersionError,
    InvalidInputError,
    ManifestConflictError,
    ObjectNotFoundError,
    PreconditionFailedError,
)
from runarchive.faults import fault_point
from runarchive.logs import log_run
from runarchive.model import DataKey, RunStatus, SealedValue, format_ts, utcnow
from runarchive.store import IfMatch, PutMode, Store

SHARDS = 8
Kind = Literal["active", "done"]
KINDS: tuple[Kind, ...] = ("active", "done")
# The manifest's own format version (docs/format.md §10), apart from the runs' formats.
MANIFEST_FORMAT = 1
MAX_ATTEMPTS = 50
# The most a shard may decompress to (a crafted one must not exhaust memory): an entry
# is ~400 bytes of JSON without metadata, so 256 MiB is ~600,000 runs per shard.
MAX_SHARD_BYTES = 256 << 20
log = logging.getLogger(__name__)


class RunEntry(BaseModel):
    """One run as the manifest lists it."""

    model_config = ConfigDict(frozen=True, extra="allow")

    run_id: str
    agent: str
    status: RunStatus = "running"
    created_at: datetime
    updated_at: datetime
    ended_at: datetime | None = None
    owner_host: str = ""
    owner_pid: int = 0
    epoch: StrictInt = 0
    lease_expires_at: datetime | None = None
    last_seq: int = 0
    records: int = 0
    stored_bytes: int = 0
    metadata: dict[str, Any] = Field(default_factory=dict)
    chain_head: str | None = None  # the run index's chain head when this entry was written
    # An encrypted run's metadata, sealed as in its index, and the data key that opens
    # it; readers with the key fill ``metadata`` in when they list.
    sealed_metadata: SealedValue | None = None
    metadata_key: DataKey | None = None

    @field_serializer("created_at", "updated_at", "ended_at", "lease_expires_at")
    def _fixed_width_utc(self, value: datetime | None) -> str | None:
        # Always UTC with 6 fraction digits, so that the text sorts as the time does.
        return None if value is None else format_ts(value)


def _dump(entry: RunEntry) -> dict[str, Any]:
    data = entry.model_dump(mode="json")
    # Plaintext runs' entries keep the shape they had before encryption existed.
    for name in ("sealed_metadata", "metadata_key"):
        if data.get(name) is None:
            data.pop(name, None)
    return data


def shard_of(run_id: str) -> int:
    """The shard (0..7) a run id belongs to."""
    return int(hashlib.sha256(run_id.encode()).hexdigest()[:8], 16) % SHARDS


def shard_key(kind: Kind, shard: int) -> str:
    """Key of one manifest shard object."""
    return f"manifest/{kind}/{shard}.json.zst"


def _encode(kind: Kind, shard: int, runs: dict[str, dict[str, Any]]) -> bytes:
    doc = {"format": MANIFEST_FORMAT, "kind": kind, "shard": shard, "runs": runs}
    return zstandard.ZstdCompressor(level=3, write_checksum=True).compress(orjson.dumps(doc))


def _decode(body: bytes, key: str) -> dict[str, dict[str, Any]]:
    raw = decompress_bounded(body, key, MAX_SHARD_BYTES, "the ceiling of a manifest shard")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise CorruptObjectError(key, f"not a manifest shard ({exc})") from exc
    version = doc.get("format") if isinstance(doc, dict) else None
    if not isinstance(version, int) or not isinstance(doc.get("runs"), dict):
        raise CorruptObjectError(key, "not a manifest shard (no format/runs)")
    if version > MANIFEST_FORMAT:
        raise FormatVersionError(
            f"{key!r} was written by format version {version}; this runarchive reads up to "
            f"{MANIFEST_FORMAT}. Upgrade runarchive to read it."
        )
    runs: dict[str, dict[str, Any]] = doc["runs"]
    return runs


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    # Decoding a large manifest allocates ~100,000 dicts; the cyclic GC would rescan
    # them over and over (half the time of a full listing, measured), and they hold
    # no cycles.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


Change = Callable[[dict[str, dict[str, Any]]], bool]
"""Mutates a shard's ``runs`` in place; returns False when there is nothing to write."""


class Manifest:
    """Reads and CAS-updates the manifest shards of one store. Thread-safe.

    It remembers the last body and ETag of each shard it wrote or read, so an
    update of a shard nobody else touched costs one PUT; otherwise a GET and a PUT
    per attempt.
    """

    def __init__(
        self, store: Store, keyring: Keyring | None = None, *, seed: int | None = None
    ) -> None:
        self.store = store
        self.keyring = keyring  # opens encrypted runs' metadata when listing
        # Whether listing may ask a remote key provider (KMS: one Decrypt per run not
        # seen yet by this process) to open metadata; local keys are always used.
        self.decrypt_remote = False
        self._known: dict[str, tuple[bytes, str]] = {}  # key -> (compressed body, ETag)
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self.conflicts = 0  # 412/409 answers seen, for benchmarks and status

    def locate(self, run_id: str) -> str | None:
        """The key of a shard read by this manifest that lists ``run_id`` (for naming a
        bad entry in an error; decodes the remembered shards, no request)."""
        with self._lock:
            known = list(self._known.items())
        for key, (body, _) in sorted(known):
            runs = _decode(body, key)
            if run_id in runs or any(d.get("run_id") == run_id for d in runs.values()):
                return key
        return None

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

    def _read(self, kind: Kind, shard: int) -> tuple[dict[str, dict[str, Any]], str | None]:
        key = shard_key(kind, shard)
        try:
            got = self.store.get(key)
        except ObjectNotFoundError:
            return {}, None
        runs = _decode(got.body, key)
        # The compressed body is what is remembered (≈ 80 B per run, not ≈ 1.6 KB of
        # decoded dicts): a Reader that listed 100,000 runs keeps 8 MB, not 160 MB.
        with self._lock:
            self._known[key] = (got.body, got.etag)
        return runs, got.etag

    @telemetry.traced(
        "runarchive.manifest.update",
        lambda self, kind, shard, change: {"kind": kind, "shard": shard, "attempts": 0},
    )
    def update(self, kind: Kind, shard: int, change: Change) -> None:
        """Apply ``change`` to one shard by compare-and-swap, retrying until it lands."""
        key = shard_key(kind, shard)
        with self._lock:
            known = self._known.get(key)
        etag: str | None
        if known is not None:
            runs, etag = _decode(known[0], key), known[1]
        else:
            runs, etag = self._read(kind, shard)
        for attempt in range(MAX_ATTEMPTS):
            runs = dict(runs)
            if not change(runs):
                return
            mode: PutMode = IfMatch(etag) if etag else "create"
            body = _encode(kind, shard, runs)
            fault_point("manifest.before_put")
            telemetry.hooks.annotate(attempts=attempt + 1)
            try:
                new_etag = self.store.put(key, body, mode=mode)
            except PreconditionFailedError:
                with self._lock:
                    self.conflicts += 1
                log.debug(
                    "manifest shard %s changed meanwhile (attempt %d); re-reading", key, attempt + 1
                )
                telemetry.hooks.retried.add(1, {"source": "manifest"})
                # Jitter spreads writers that collided; the cap keeps retries snappy.
                time.sleep(self._rng.uniform(0, min(0.2, 0.005 * 2**attempt)))
                runs, etag = self._read(kind, shard)
                continue
            fault_point("manifest.after_put")
            with self._lock:
                self._known[key] = (body, new_etag)
            return
        raise ManifestConflictError(
            f"manifest shard {key!r} changed under {MAX_ATTEMPTS} attempts; try again"
        )

    # -- run life cycle ---------------------------------------------------------

    def upsert_active(self, entry: RunEntry) -> None:
        """Add or replace a running run's entry."""
        data = _dump(entry)

        def change(runs: dict[str, dict[str, Any]]) -> bool:
            current = runs.get(entry.run_id)
            if current is not None and current.get("epoch", 0) > entry.epoch:
                return False  # a newer owner wrote it: never move it back
            runs[entry.run_id] = data
            return True

        self.update("active", shard_of(entry.run_id), change)

    def renew(self, entries: Iterable[RunEntry]) -> set[str]:
        """Write fresh leases/progress for runs this host owns, one CAS per shard.

        Only entries still listed as running with this epoch are renewed: a run that
        another host took over (higher epoch), finished or deleted is never put back.
        Returns the ids of those lost runs, so that their writer can stop.
        """
        by_shard: dict[int, list[RunEntry]] = {}
        for e in entries:
            by_shard.setdefault(shard_of(e.run_id), []).append(e)
        lost: set[str] = set()
        for shard, group in by_shard.items():

            def change(runs: dict[str, dict[str, Any]], group: list[RunEntry] = group) -> bool:
                lost.difference_update(e.run_id for e in group)  # recomputed per attempt
                changed = False
                for e in group:
                    current = runs.get(e.run_id)
                    if current is None or current.get("epoch", 0) > e.epoch:
                        lost.add(e.run_id)
                        continue
                    runs[e.run_id] = _dump(e)
                    changed = True
                return changed

            self.update("active", shard, change)
        return lost

    def finish(self, entry: RunEntry) -> None:
        """Move a completed or failed run from ``active`` to ``done`` (2 CAS writes)."""
        shard = shard_of(entry.run_id)
        data = _dump(entry)

        def add(runs: dict[str, dict[str, Any]]) -> bool:
            runs[entry.run_id] = data
            return True

        def remove(runs: dict[str, dict[str, Any]]) -> bool:
            return runs.pop(entry.run_id, None) is not None

        self.update("done", shard, add)
        self.update("active", shard, remove)

    def patch_done(self, run_id: str, fields: dict[str, Any], kind: Kind = "done") -> None:
        """Update fields of an ended run's entry (e.g. after a compaction), or of a
        running one's with ``kind="active"``; 1-2 requests."""

        def change(runs: dict[str, dict[str, Any]]) -> bool:
            current = runs.get(run_id)
            if current is None:
                return False
            runs[run_id] = {**current, **fields}
            return True

        self.update(kind, shard_of(run_id), change)

    def forget(self, run_id: str) -> None:
        """Remove a run from the manifest (after its objects were deleted)."""
        shard = shard_of(run_id)
        for kind in KINDS:
            self.update(kind, shard, lambda runs: runs.pop(run_id, None) is not None)

    # -- queries --------------------------------------------------------------

    def read_all(self, kinds: tuple[Kind, ...] = KINDS) -> dict[str, dict[str, Any]]:
        """Every entry of the given kinds, ``done`` winning over ``active``.

        Cost: one GET per shard (8 per kind), fetched in parallel.
        """
        with _gc_paused():
            return self._read_all(kinds)

    def _read_all(self, kinds: tuple[Kind, ...]) -> dict[str, dict[str, Any]]:
        jobs = [(kind, shard) for kind in kinds for shard in range(SHARDS)]
        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            parts = list(pool.map(lambda job: (job[0], self._read(*job)[0]), jobs))
        merged: dict[str, dict[str, Any]] = {}
        for _kind, runs in sorted(parts, key=lambda p: p[0] == "done"):
            merged.update(runs)  # "done" parts come last and win
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
        """Runs matching the filters (on ``created_at``, inclusive), newest first.
        ``decrypt_remote`` overrides :attr:`decrypt_remote` for this call."""
        for bound in (since, until):
            if bound is not None and bound.tzinfo is None:
                raise InvalidInputError("since/until must be timezone-aware datetimes")
        kinds: tuple[Kind, ...] = (
            ("active",) if status == "running" else ("done",) if status else KINDS
        )
        lo = format_ts(since) if since else None
        hi = format_ts(until) if until else None
        # One pause for the whole call: re-enabling the GC between reading and
        # filtering made it rescan the 100,000 fresh dicts right away (0.15 s).
        with _gc_paused():
            runs = self._read_all(kinds)
            # Filter and sort the raw dicts (timestamps are fixed-width UTC text, so
            # text order is time order); build models only for what is returned.
            rows = [
                d
                for d in runs.values()
                if (status is None or d.get("status") == status)
                and (agent is None or d.get("agent") == agent)
                and (lo is None or d["created_at"] >= lo)
                and (hi is None or d["created_at"] <= hi)
            ]
            rows.sort(key=lambda d: (d["created_at"], d["run_id"]), reverse=True)
            if limit is not None:
                rows = rows[:limit]
            remote = self.decrypt_remote if decrypt_remote is None else decrypt_remote
            return [self._entry(d, remote) for d in rows]

    def lookup(self, run_ids: Iterable[str]) -> dict[str, RunEntry]:
        """The entries of these runs (absent ids are left out), ``done`` winning.

        Cost: 2 GETs per distinct shard of the ids (at most 16).
        """
        wanted = set(run_ids)
        found: dict[str, RunEntry] = {}
        for kind in KINDS:  # "done" last: it wins over a stale "active" copy
            for shard in sorted({shard_of(r) for r in wanted}):
                runs, _ = self._read(kind, shard)
                found.update((rid, self._entry(d)) for rid, d in runs.items() if rid in wanted)
        return found

    def interrupted(self, stale_after: timedelta = timedelta(0)) -> list[RunEntry]:
        """Running runs whose owner's lease expired more than ``stale_after`` ago.

        Reads only the ``active`` shards (8 GETs): completed and failed runs are
        never candidates.
        """
        cutoff = format_ts(utcnow() - stale_after)
        with _gc_paused():
            out = [
                self._entry(data, True)  # few runs: opening their metadata is cheap
                for data in self._read_all(("active",)).values()
                if data.get("status") == "running"
                and (data.get("lease_expires_at") or "") < cutoff  # fixed-width UTC text
            ]
        out.sort(key=lambda e: (e.created_at, e.run_id))
        return out
