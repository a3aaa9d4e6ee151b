"""Paged listings against what makes them hard: pages that fill at an object's edge,
bursts of finishes that make a writer drop runs from ``ended`` early, and runs that
finish and start while a walk goes on (docs/format.md §10.4)."""

from __future__ import annotations

import base64
import json
import random
from datetime import timedelta

import pytest
from support.backends import s3_store_for
from support.servers import S3Server

from runarchive.engine.manifest import live as manifest_live
from runarchive.engine.manifest.core import Manifest, RunEntry, RunList
from runarchive.engine.manifest.listing import MAX_BANDS, PageToken
from runarchive.engine.manifest.live import MAX_ENDED
from runarchive.errors import PageExpiredError
from runarchive.format.model import RunStatus, utcnow
from runarchive.store import MemoryStore, Store


def _entry(run_id: str, *, age: timedelta = timedelta(hours=1)) -> RunEntry:
    at = utcnow() - age
    return RunEntry(run_id=run_id, agent="a", created_at=at, updated_at=at)


def _finish(m: Manifest, e: RunEntry) -> None:
    now = utcnow()  # as Run.finish does: the done entry's updated_at is the end
    m.finish(e.model_copy(update={"status": "completed", "ended_at": now, "updated_at": now}))


def _walk(reader: Manifest, limit: int, status: RunStatus | None = None) -> list[str]:
    seen: list[str] = []
    token: str | None = None
    while True:
        got: RunList = reader.page(limit=limit, page=token, status=status)
        assert len(got) <= limit
        seen += [e.run_id for e in got]
        token = got.next_page
        if token is None:
            return seen


@pytest.mark.parametrize("limit", [1, 4, 5, 6, 10])
def test_a_page_that_fills_at_the_end_of_a_live_object_skips_nothing_of_the_next(
    limit: int,
) -> None:
    # Live objects are walked in key order: host "a" first, holding the high ids.
    # A page that fills with the last of them must not carry that id over as the
    # place to resume inside host "b"'s object (it once did: b's runs were lost).
    store = MemoryStore()
    ids = []
    for host, prefix in (("a", "z"), ("b", "m")):
        m = Manifest(store, host=host, pid=1)
        for n in range(5):
            m.upsert_active(_entry(f"{prefix}{n}"))
            ids.append(f"{prefix}{n}")
    seen = _walk(Manifest(store), limit)
    assert sorted(seen) == sorted(ids)


@pytest.mark.parametrize("limit", [1, 3, 4, 5, 8])
def test_a_page_that_fills_at_the_end_of_a_done_object_skips_nothing_of_the_next(
    limit: int,
) -> None:
    store = MemoryStore()
    ids = []
    # Done objects are walked newest first; give the newest the high ids.
    for hours, (host, prefix) in zip((3, 2), (("old", "a"), ("new", "y")), strict=True):
        m = Manifest(store, host=host, pid=1)
        for n in range(4):
            e = _entry(f"{prefix}{n}", age=timedelta(hours=hours + 1))
            ended = utcnow() - timedelta(hours=hours)
            done = e.model_copy(
                update={"status": "completed", "ended_at": ended, "updated_at": ended}
            )
            m._writers()[2].add(done.model_dump(mode="json"), ended)
            ids.append(e.run_id)
    seen = _walk(Manifest(store), limit)
    assert sorted(seen) == sorted(ids)


@pytest.mark.parametrize("limit", [1, 7, 100, MAX_ENDED - 1, MAX_ENDED, MAX_ENDED + 1, 1000])
def test_every_run_is_listed_once_right_after_a_burst_of_finishes(limit: int) -> None:
    store = MemoryStore()
    burst = Manifest(store, host="burst", pid=1)
    other = Manifest(store, host="other", pid=2)
    ids = [f"b{n:04d}" for n in range(MAX_ENDED + 60)]
    for rid in ids:  # more than MAX_ENDED within RECENT: `ended` drops the oldest
        e = _entry(rid)
        burst.upsert_active(e)
        _finish(burst, e)
    for n in range(5):  # still running, beside it
        other.upsert_active(_entry(f"r{n}"))
        ids.append(f"r{n}")
    e = _entry("o0")
    other.upsert_active(e)
    _finish(other, e)
    ids.append("o0")
    seen = _walk(Manifest(store), limit)
    assert len(seen) == len(set(seen)), "a run was listed twice"
    assert sorted(seen) == sorted(ids)


def test_a_burst_costs_the_token_a_cut_for_that_writer_only() -> None:
    store = MemoryStore()
    burst = Manifest(store, host="burst", pid=1)
    quiet = Manifest(store, host="quiet", pid=2)
    for n in range(MAX_ENDED + 10):
        e = _entry(f"b{n:04d}")
        burst.upsert_active(e)
        _finish(burst, e)
    for n in range(3):
        quiet.upsert_active(_entry(f"q{n}"))
    first = Manifest(store).page(limit=2)
    assert first.next_page is not None
    raw = first.next_page + "=" * (-len(first.next_page) % 4)
    token = json.loads(base64.urlsafe_b64decode(raw))
    assert list(token["cuts"]) == [burst._writers()[0].writer]


def test_a_token_without_cuts_from_the_previous_version_still_pages() -> None:
    store = MemoryStore()
    m = Manifest(store, host="w", pid=1)
    for n in range(6):
        m.upsert_active(_entry(f"r{n}"))
    first = Manifest(store).page(limit=4)
    assert first.next_page is not None
    old = PageToken.parse(first.next_page).model_dump(exclude={"cuts"})
    text = base64.urlsafe_b64encode(json.dumps(old).encode()).decode().rstrip("=")
    rest = Manifest(store).page(limit=4, page=text)
    assert sorted(e.run_id for e in [*first, *rest]) == [f"r{n}" for n in range(6)]


def test_running_runs_list_without_expiring_whatever_a_burst_dropped() -> None:
    store = MemoryStore()
    m = Manifest(store, host="burst", pid=1)
    running = [f"r{n}" for n in range(7)]
    for rid in running:
        m.upsert_active(_entry(rid))
    for n in range(MAX_ENDED + 40):
        e = _entry(f"b{n:04d}")
        m.upsert_active(e)
        _finish(m, e)
    token: str | None = None
    seen: list[str] = []
    # Between pages the writer keeps dropping finished runs: `ended` plays no part in
    # a listing of running runs, so nothing expires.
    for n in range(20):
        got = Manifest(store).page(limit=2, page=token, status="running")
        seen += [e.run_id for e in got]
        e = _entry(f"c{n:04d}")
        m.upsert_active(e)
        _finish(m, e)
        token = got.next_page
        if token is None:
            break
    assert sorted(seen) == running


def test_a_walk_that_stopped_inside_an_object_lists_what_it_dropped_since() -> None:
    store = MemoryStore()
    m = Manifest(store, host="w", pid=1)
    old = [_entry(f"r{n:03d}") for n in range(20)]
    for e in old:
        m.upsert_active(e)
    first = Manifest(store).page(limit=5)
    assert first.next_page is not None
    # The walk stopped inside w's object. Now w finishes its runs and, with a burst of
    # new ones, drops them from `ended` before the walk comes back: the 15 runs it has
    # not listed yet are neither running nor in `ended`, only in done objects.
    for e in old:
        _finish(m, e)
    for n in range(MAX_ENDED + 5):
        e = _entry(f"x{n:04d}", age=timedelta(0))
        m.upsert_active(e)
        _finish(m, e)
    seen = [e.run_id for e in first]
    token: str | None = first.next_page
    while token is not None:
        got = Manifest(store).page(limit=5, page=token)
        seen += [e.run_id for e in got]
        token = got.next_page
    assert len(seen) == len(set(seen)), "a run was listed twice"
    assert {e.run_id for e in old} <= set(seen)


def test_a_token_holds_at_most_max_bands_and_then_says_to_start_again() -> None:
    store = MemoryStore()
    m = Manifest(store, host="w", pid=1)
    for n in range(MAX_BANDS + 10):
        m.upsert_active(_entry(f"r{n:03d}"))
    for n in range(MAX_ENDED):  # `ended` full: every later finish drops one
        e = _entry(f"b{n:04d}")
        m.upsert_active(e)
        _finish(m, e)
    token: str | None = None
    pages = 0

    def next_page() -> str | None:
        nonlocal pages
        got = Manifest(store).page(limit=1, page=token)
        pages += 1
        e = _entry(f"c{pages:04d}", age=timedelta(0))  # then w drops one more
        m.upsert_active(e)
        _finish(m, e)
        return got.next_page

    for _ in range(MAX_BANDS + 1):
        token = next_page()
        assert token is not None
        assert len(PageToken.parse(token).bands.get(m.writer, [])) <= MAX_BANDS
    with pytest.raises(PageExpiredError, match=f"{MAX_BANDS} times"):
        next_page()
    assert pages == MAX_BANDS + 1  # the refused page is not counted


@pytest.mark.parametrize("seed", range(8))
def test_runs_created_before_a_walk_are_listed_once_while_bursts_go_on(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Random histories: three writers start and finish runs, some in bursts of more
    than MAX_ENDED, between the pages of a walk. Every walk lists every run created
    before its first page exactly once, and none twice. `ended` holds 16 runs here
    instead of 256, so that a burst costs 20 finishes, not 270."""
    monkeypatch.setattr(manifest_live, "MAX_ENDED", 16)
    rng = random.Random(seed)
    store = MemoryStore()
    writers = [Manifest(store, host=f"w{i}", pid=i + 1, seed=seed * 10 + i) for i in range(3)]
    running: list[tuple[Manifest, RunEntry]] = []
    counter = iter(range(10**6))

    def start(m: Manifest) -> RunEntry:
        e = _entry(f"{rng.choice('abcxyz')}{next(counter):06d}", age=timedelta(0))
        m.upsert_active(e)
        running.append((m, e))
        return e

    def finish_some(k: int) -> None:
        for _ in range(min(k, len(running))):
            m, e = running.pop(rng.randrange(len(running)))
            _finish(m, e)

    for _ in range(150):
        start(rng.choice(writers))
    finish_some(60)
    for _walk_no in range(5):
        expected = {e.run_id for e in Manifest(store).entries()}
        seen: list[str] = []
        token: str | None = None
        while True:
            got = Manifest(store).page(limit=rng.choice([1, 3, 9, 40, 130]), page=token)
            seen += [e.run_id for e in got]
            token = got.next_page
            # Between pages: sometimes a burst by one writer; finishes; new runs.
            if rng.random() < 0.25:
                w = rng.choice(writers)
                for _ in range(16 + rng.randrange(10)):
                    e = start(w)
                    running.remove((w, e))
                    _finish(w, e)
            finish_some(rng.randrange(8))
            for _ in range(rng.randrange(4)):
                start(rng.choice(writers))
            if token is None:
                break
        assert len(seen) == len(set(seen)), "a run was listed twice"
        missing = expected - set(seen)
        assert not missing, f"{len(missing)} runs created before the walk were not listed"


def test_bursts_between_pages_on_seaweedfs(
    seaweed: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same walk over HTTP against a real S3 server: two writers, a walk that stops
    inside each object, bursts that make both drop runs between pages."""
    monkeypatch.setattr(manifest_live, "MAX_ENDED", 8)
    store: Store = s3_store_for(seaweed, seaweed.make_bucket("paging"))
    a = Manifest(store, host="a", pid=1)
    b = Manifest(store, host="b", pid=2)
    old = {m: [_entry(f"{m.host}{n:02d}") for n in range(12)] for m in (a, b)}
    for m, entries in old.items():
        for e in entries:
            m.upsert_active(e)
    seen: list[str] = []
    tokens: list[str] = []
    token: str | None = None
    pages = 0
    while True:
        got = Manifest(store).page(limit=5, page=token)
        seen += [e.run_id for e in got]
        token = got.next_page
        tokens += [token] if token else []
        pages += 1
        for m, entries in old.items():  # finish 2 old runs, then a burst of 10 new
            for e in entries[2 * pages - 2 : 2 * pages]:
                _finish(m, e)
            for n in range(10):
                # Created "later" than the walk's skew margin, so that the walk, which
                # lists runs created up to t0 + 30 s, does not chase them page after page.
                e = _entry(f"n{m.host}{pages:02d}{n}", age=timedelta(minutes=-5))
                m.upsert_active(e)
                _finish(m, e)
        if token is None:
            break
    assert len(seen) == len(set(seen)), "a run was listed twice"
    assert {e.run_id for es in old.values() for e in es} <= set(seen)
    assert any(PageToken.parse(t).bands for t in tokens), "no page went on past a drop"
