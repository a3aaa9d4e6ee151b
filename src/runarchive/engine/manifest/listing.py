"""Reading the manifest: whole scans, and paged listings whose cost is bounded by the page.

A paged listing walks, in order: the live objects (running runs, by writer key), the
done partitions (newest day first, objects newest first), then any legacy format 1
shards. Its first page fixes a time ``t0``; the walk lists each run created by
``t0`` once (docs/format.md §10.4):

* each writer gets a cut: ``t0 - MARGIN``, raised to its live object's
  ``complete_after`` when that is later (a burst of finishes made it drop runs from
  ``ended`` sooner than ``RECENT``). The cut is fixed when the walk first reads the
  object and travels in the page token;
* the done phase lists only runs whose done entry is not later than its finisher's
  cut (``updated_at``, the finisher's clock): a finish writes the done entry before it
  moves the run to ``ended``, so those were in their partition before the walk read
  the live object, whatever the clock skew up to ``MARGIN``;
* the live phase lists running runs, and the runs a writer finished after its cut
  from its object's ``ended`` list (kept ``RECENT``, and every run dropped from it is
  not later than ``complete_after``); so a run that finishes while the walk goes on is
  listed once, as running or as finished.

Runs taken over from one process to another during the walk may be listed twice
or not at all (the move is two writes); a token older than ``LIVE_TTL`` in the live
phase is refused (``PageExpiredError``), since ``ended`` may have dropped runs.

A page that goes on inside a live object which has dropped runs since the walk last
read it records a band (the last id listed from it, its new ``complete_after``): the
runs that object finished in that band are left to the done phase, which lists them
only past that id (the others were listed as running). At most ``MAX_BANDS`` per
walk and writer, which bounds the token. A run finishing in one thread while another
thread of the same process drops older runs from ``ended`` may be listed twice (as
running, and finished), never not at all.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import gc
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError

from runarchive.engine.manifest.format import (
    DONE_PREFIX,
    LEGACY_ACTIVE_PREFIX,
    LIVE_PREFIX,
    day_of_prefix,
    decode_done,
    decode_legacy,
    decode_live,
    writer_of_live_key,
)
from runarchive.engine.manifest.live import RECENT
from runarchive.errors import InvalidInputError, ObjectNotFoundError, PageExpiredError
from runarchive.format.model import RunStatus, format_ts, utcnow
from runarchive.store import Store

MARGIN = timedelta(seconds=30)  # clock skew tolerated between writers and readers
LIVE_TTL = RECENT - 2 * MARGIN
BATCH = 16  # objects fetched in parallel while a page fills
MAX_BANDS = 64  # bounds a page token's size (see PageToken.bands)
Row = dict[str, Any]
Phase = Literal["live", "done", "legacy"]


class PageToken(BaseModel):
    """Where a paged listing stopped (opaque to callers: base64url of this JSON)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    v: Literal[1] = 1
    t0: str
    phase: Phase
    key: str | None = None  # the object the last page stopped in
    after: str | None = None  # the last run id listed from it
    # Writers whose cut is later than t0 - MARGIN (their complete_after): only those
    # that dropped finished runs from `ended` within the last moments, so it stays small.
    cuts: dict[str, str] = {}
    # Per writer, (after, upto): when a page went on inside its object, that object had
    # dropped runs up to `upto`; the done phase lists those ending in the band above the
    # previous one only if their id is past `after` (the rest were listed as running).
    bands: dict[str, list[tuple[str, str]]] = {}

    def text(self) -> str:
        return base64.urlsafe_b64encode(self.model_dump_json().encode()).decode().rstrip("=")

    @classmethod
    def parse(cls, text: str) -> PageToken:
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            return cls.model_validate_json(raw)
        except (binascii.Error, ValueError, ValidationError):
            raise InvalidInputError(
                "invalid page token: pass the next_page of the previous list_runs() call "
                "unchanged (with the same filters), or no page to start again"
            ) from None


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    # Decoding many entries allocates ~100,000 dicts with no cycles; the cyclic GC
    # would rescan them over and over (half the time of a full listing, measured).
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@dataclass(frozen=True)
class Filters:
    """A listing's filters, on the raw entries (timestamps compare as text)."""

    status: RunStatus | None = None
    agent: str | None = None
    lo: str | None = None  # created_at >= lo
    hi: str | None = None  # created_at <= hi

    @classmethod
    def of(
        cls,
        status: RunStatus | None,
        agent: str | None,
        since: datetime | None,
        until: datetime | None,
    ) -> Filters:
        """The filters of ``list_runs``'s arguments (aware datetimes only)."""
        for bound in (since, until):
            if bound is not None and bound.tzinfo is None:
                raise InvalidInputError("since/until must be timezone-aware datetimes")
        return cls(
            status, agent, format_ts(since) if since else None, format_ts(until) if until else None
        )

    def match(self, d: Row) -> bool:
        created = str(d.get("created_at", ""))
        return (
            (self.status is None or d.get("status") == self.status)
            and (self.agent is None or d.get("agent") == self.agent)
            and (self.lo is None or created >= self.lo)
            and (self.hi is None or created <= self.hi)
        )


def fetch(
    store: Store, keys: list[str], remember: Callable[[str, bytes], None]
) -> list[bytes | None]:
    """GET ``keys`` in parallel (``None`` for one deleted meanwhile), in order."""

    def one(key: str) -> bytes | None:
        try:
            body = store.get(key).body
        except ObjectNotFoundError:
            return None
        remember(key, body)
        return body

    if len(keys) <= 1:
        return [one(k) for k in keys]
    with ThreadPoolExecutor(max_workers=min(32, len(keys))) as pool:
        return list(pool.map(one, keys))


def live_keys(store: Store) -> list[str]:
    """Keys of every live object (1 LIST per 1,000 writers)."""
    return [m.key for m in store.list(LIVE_PREFIX) if writer_of_live_key(m.key)]


def done_days(store: Store) -> tuple[list[str], list[str]]:
    """(days with done partitions, newest first; legacy format 1 done shard keys)."""
    dirs, objects = store.list_level(DONE_PREFIX)
    days = sorted((day_of_prefix(d) for d in dirs), reverse=True)
    return days, [m.key for m in objects if m.key.endswith(".json.zst")]


def legacy_keys(store: Store, done_shards: list[str]) -> list[str]:
    """Every legacy format 1 shard, active ones first (1 LIST)."""
    _, objects = store.list_level(LEGACY_ACTIVE_PREFIX)
    return [m.key for m in objects if m.key.endswith(".json.zst")] + done_shards


def scan(store: Store, remember: Callable[[str, bytes], None], running: bool, done: bool) -> Row:
    """Every entry (run id -> raw entry): legacy, then live, then done, later winning,
    so ``done`` wins over ``running`` in either format."""
    days, legacy_done = done_days(store) if done else ([], [])
    legacy = [k for k in legacy_keys(store, legacy_done) if running or "/done/" in k]
    merged: Row = {}
    for key, body in zip(legacy, fetch(store, legacy, remember), strict=True):
        if body is not None:
            merged.update(decode_legacy(body, key))
    if running:
        keys = live_keys(store)
        for key, body in zip(keys, fetch(store, keys, remember), strict=True):
            if body is not None:
                merged.update(decode_live(body, key).runs)
    keys = [m.key for day in days for m in store.list(f"{DONE_PREFIX}{day}/")]
    for key, body in zip(keys, fetch(store, keys, remember), strict=True):
        if body is not None:
            merged.update(decode_done(body, key).runs)
    return merged


class PageWalk:
    """One page of a paged listing (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        filters: Filters,
        limit: int,
        page: str | None,
        remember: Callable[[str, bytes], None],
    ) -> None:
        if limit < 1:
            raise InvalidInputError("limit must be at least 1 (or None for every run)")
        self.store, self.filters, self.limit, self.remember = store, filters, limit, remember
        first: Phase = "done" if filters.status not in (None, "running") else "live"
        self.token = (
            PageToken.parse(page) if page else PageToken(t0=format_ts(utcnow()), phase=first)
        )
        t0 = datetime.fromisoformat(self.token.t0)
        self.t0 = self.token.t0
        self.cut = format_ts(t0 - MARGIN)
        self.created_by = format_ts(t0 + MARGIN)
        self.stale = utcnow() - t0 > LIVE_TTL
        self.cuts = dict(self.token.cuts)
        self.bands = {w: list(b) for w, b in self.token.bands.items()}
        self.rows: list[Row] = []
        self.seen: set[str] = set()

    def cut_of(self, writer: str) -> str:
        """The walk's cut for runs ``writer`` finished (see the module docstring)."""
        return max(self.cut, self.cuts.get(writer, self.cut))

    def in_done(self, writer: str, updated_at: str, run_id: str) -> bool:
        """Whether the done phase lists this run ``writer`` finished (the live phase
        listed it otherwise)."""
        if updated_at <= self.cut_of(writer):
            return True
        for after, upto in self.bands.get(writer, ()):
            if updated_at <= upto:
                return run_id > after
        return False

    def _token(self, phase: Phase, key: str, after: str | None) -> PageToken:
        return PageToken(
            t0=self.t0, phase=phase, key=key, after=after, cuts=self.cuts, bands=self.bands
        )

    def _wanted(self, d: Row) -> bool:
        # "Created by t0", with the skew margin: a run just created on a host whose
        # clock is ahead is still listed (the same test on every page: never twice).
        return str(d.get("created_at", "")) <= self.created_by and self.filters.match(d)

    def _take(self, key: str, rows: Iterable[Row], phase: Phase) -> PageToken | None:
        """Add ``rows`` (sorted by run id) of object ``key``; the token to stop at if
        the page filled up inside it."""
        after = self.token.after if self.token.key == key else None
        for d in sorted(rows, key=lambda r: str(r["run_id"])):
            rid = str(d["run_id"])
            if (after is not None and rid <= after) or rid in self.seen:
                continue
            if len(self.rows) == self.limit:
                # `after` is the last id taken from this object: when the page filled
                # up with the previous object, nothing of this one is listed yet.
                return self._token(phase, key, after)
            self.rows.append(d)
            self.seen.add(rid)
            after = rid
        return None

    def _objects(self, keys: list[str]) -> Iterator[tuple[str, bytes]]:
        for i in range(0, len(keys), BATCH):
            batch = keys[i : i + BATCH]
            for key, body in zip(batch, fetch(self.store, batch, self.remember), strict=True):
                if body is not None:
                    yield key, body

    def run(self) -> tuple[list[Row], str | None]:
        """The page's raw entries and the next page's token (``None``: the end)."""
        phase = self.token.phase
        if phase == "live":
            stop = self._live()
            if stop is not None:
                return self.rows, stop.text()
            phase = "done"
        if phase == "done" and self.filters.status != "running":
            stop = self._done()
            if stop is not None:
                return self.rows, stop.text()
        stop = self._legacy()
        return self.rows, None if stop is None else stop.text()

    def _live(self) -> PageToken | None:
        if self.stale:
            raise PageExpiredError(
                f"this page token is older than {LIVE_TTL.total_seconds():.0f} s while "
                "listing running runs; list again from the first page (page=None)"
            )
        start = self.token.key if self.token.phase == "live" else None
        keys = [k for k in live_keys(self.store) if start is None or k >= start]
        # Filtered to running runs, `ended` plays no part: no cut to fix or to check.
        finished_too = self.filters.status is None
        for key, body in self._objects(keys):
            doc = decode_live(body, key)
            rows = [d for d in doc.runs.values() if self._wanted(d)]
            if finished_too:
                writer = writer_of_live_key(key) or key
                cut = self.cut_of(writer)
                dropped = doc.complete_after
                if key == start and self.token.after is not None:
                    # Part of it was listed on an earlier page: runs it dropped since
                    # are left to the done phase, past the ids already listed.
                    self._band(key, writer, self.token.after, dropped)
                elif dropped is not None and dropped > cut:
                    self.cuts[writer] = cut = dropped
                rows += [
                    d
                    for d in doc.ended.values()
                    if str(d.get("updated_at", "")) > cut and self._wanted(d)
                ]
            stop = self._take(key, rows, "live")
            if stop is not None:
                return stop
        return None

    def _band(self, key: str, writer: str, after: str, dropped: str | None) -> None:
        bands = self.bands.setdefault(writer, [])
        top = bands[-1][1] if bands else self.cut_of(writer)
        if dropped is None or dropped <= top:
            if not bands:
                del self.bands[writer]
            return
        if len(bands) >= MAX_BANDS:
            raise PageExpiredError(
                f"{key!r} dropped finished runs while this listing paged through it "
                f"{MAX_BANDS} times; list again from the first page (page=None), "
                "or with a larger limit"
            )
        bands.append((after, dropped))

    def _done(self) -> PageToken | None:
        days, _ = done_days(self.store)
        start = self.token.key if self.token.phase == "done" else None
        low = self.filters.lo[:10].replace("-", "") if self.filters.lo else None
        for day in days:
            # Runs end after they start: a run created since `lo` ended that day or later.
            if low is not None and day < low:
                break
            if start is not None and day > start[len(DONE_PREFIX) :][:8]:
                continue
            keys = sorted((m.key for m in self.store.list(f"{DONE_PREFIX}{day}/")), reverse=True)
            keys = [k for k in keys if start is None or k <= start]
            for key, body in self._objects(keys):
                doc = decode_done(body, key)
                # Unfiltered, a run finished after its finisher's cut was listed by the
                # live phase (running, or from `ended`); by status, no run is listed twice.
                unfiltered = self.filters.status is None
                rows = [
                    d
                    for rid, d in doc.runs.items()
                    if not (
                        unfiltered
                        and not self.in_done(doc.writer, str(d.get("updated_at", "")), rid)
                    )
                    and self._wanted(d)
                ]
                stop = self._take(key, rows, "done")
                if stop is not None:
                    return stop
        return None

    def _legacy(self) -> PageToken | None:
        running = self.filters.status in (None, "running")
        _, done_shards = done_days(self.store) if self.filters.status != "running" else ([], [])
        keys = [k for k in legacy_keys(self.store, done_shards) if running or "/done/" in k]
        merged: Row = {}
        for key, body in self._objects(keys):
            merged.update(decode_legacy(body, key))  # done shards come last and win
        rows = [d for d in merged.values() if self._wanted(d)]
        return self._take("legacy", rows, "legacy")


def page_token_time(page: str) -> str:
    """The ``t0`` a page token carries (for tests and messages)."""
    return PageToken.parse(page).t0


def dumps_rows(rows: list[Row]) -> bytes:
    """Raw entries as JSON (benchmarks measure listing sizes with it)."""
    return orjson.dumps(rows)
