"""Format 4 against an adversary: a lying network, a second host, a hostile bucket.

Runs flush every 2 records (a checkpoint and an event) with ``compaction_fanout`` 2,
so live compaction merges, pages are rewritten and objects retired every few flushes.
SeaweedFS behind ``tests/support/faultproxy.py`` where the network lies (one fault at a chosen
request: a 412 for an object that is not there, a PUT answered 200 and never stored);
``file://`` where the bucket itself is tampered with. After each, a fresh reader
(no page in memory) must restore every acknowledged record exactly once, and
``verify`` must find no error.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import zstandard
from support.backends import abandon
from support.faultproxy import FaultProxy
from support.hostile import run_limited
from support.trust import Hosts, cli, content

from runarchive import Archive, CorruptObjectError, Policy, Reader
from runarchive.engine.ownership import reconcile
from runarchive.errors import FencedError, RunArchiveError, StoreError
from runarchive.format import indexpages
from runarchive.format.model import RunIndex, SegmentRef
from runarchive.maintenance.gc import run_gc
from runarchive.run import Run
from runarchive.store import CountingStore, FileStore

KEEP_ALL = Policy(keep_all=True)
# Flushes are the test's own calls; merges every 2 segments of a level.
LIVE: dict[str, Any] = {
    "flush_age": 300.0,
    "flush_records": 10**9,
    "flush_bytes": 1 << 40,
    "compaction_fanout": 2,
}

Acked = list[tuple[str, str, Any]]
Filter = Callable[[str, str], bool]


# -- fixtures and helpers -----------------------------------------------------------


@pytest.fixture
def proxy(hosts: Hosts) -> Iterator[FaultProxy]:
    seed = int(os.environ.get("FAULT_SEED", "11"))
    with FaultProxy(hosts.server.endpoint_url, seed=seed, hold_seconds=1.5) as p:
        yield p


def step(run: Run, i: int, acked: Acked, tag: str = "a") -> None:
    """One flush's worth: a checkpoint and an event (2 seqs), noted as acknowledged."""
    acked.append(content(run.checkpoint(("plan", "act")[i % 2], {"i": i, "host": tag})))
    acked.append(content(run.event("tool", {"i": i, "host": tag})))


def steps(archive: Archive, run: Run, start: int, n: int, acked: Acked, tag: str = "a") -> None:
    for i in range(start, start + n):
        step(run, i, acked, tag)
        archive.flush()


def fresh_reader(hosts: Hosts) -> Reader:
    """A new process's reader: no page in memory, straight on the server."""
    indexpages._cache.clear()
    return hosts.reader()


def check_complete(reader: Reader, run_id: str, acked: Acked) -> None:
    """Every acknowledged record exactly once, gapless seqs, and a clean verify."""
    indexpages._cache.clear()
    got = reader.restore(run_id)
    seqs = [r.seq for r in got.records]
    assert seqs == list(range(1, len(acked) + 1)), f"lost or duplicated: {seqs}"
    assert [content(r) for r in got.records] == acked
    report = reader.verify(run_id)
    errors = [str(p) for p in report.problems if p.severity == "error"]
    assert errors == []


_SEG = re.compile(r"/seg/(\d{12})-(\d{12})-")


def is_merged_segment(path: str) -> bool:
    m = _SEG.search(path)
    return m is not None and int(m.group(2)) - int(m.group(1)) + 1 > 2


def is_page(path: str) -> bool:
    return "/pages/" in path


def is_head(path: str) -> bool:
    return path.split("?", 1)[0].endswith("/index.json")


def nth_put(pred: Callable[[str], bool], nth: int = 1) -> Filter:
    """A fault-proxy filter accepting the ``nth`` PUT whose path ``pred`` accepts."""
    seen = [0]

    def accept(method: str, path: str) -> bool:
        if method != "PUT" or not pred(path):
            return False
        seen[0] += 1
        return seen[0] == nth

    return accept


def head_put_after_merge() -> Filter:
    """The first head PUT after a merged segment's PUT: the merge's commit."""
    merged = [False]

    def accept(method: str, path: str) -> bool:
        if method != "PUT":
            return False
        if is_merged_segment(path):
            merged[0] = True
            return False
        return merged[0] and is_head(path)

    return accept


def open_live(hosts: Hosts, name: str, proxy: FaultProxy | None = None, **extra: Any) -> Archive:
    return hosts.open(name, proxy=proxy, **{**LIVE, **extra})


# -- 1 and 2: a lying network on format 4's writes -----------------------------------

FAULTS = [
    ("412", "merged-segment"),
    ("412", "page"),
    ("unstored", "merged-segment"),
    ("unstored", "page"),
    ("unstored", "head-after-merge"),
]


def _filter(target: str, nth: int) -> Filter:
    if target == "merged-segment":
        return nth_put(is_merged_segment, nth)
    if target == "page":
        return nth_put(is_page, nth)
    return head_put_after_merge()


@pytest.mark.real_server
@pytest.mark.parametrize(("kind", "target"), FAULTS, ids=[f"{k}-{t}" for k, t in FAULTS])
def test_a_lie_on_a_format_4_write_loses_nothing(
    hosts: Hosts, proxy: FaultProxy, kind: str, target: str
) -> None:
    """One fault on the 3rd such write (pages exist by then, levels >= 2 merge): the
    writer goes on flushing and merging, closes cleanly, and a fresh host restores
    every record exactly once; verify is clean."""
    a = open_live(hosts, "host-a", proxy)
    run = a.start_run("agent", run_id="lied", policy=KEEP_ALL)
    acked: Acked = []
    proxy.set_rate(1.0, (kind,), only=_filter(target, 3), budget=1)
    steps(a, run, 0, 24, acked)
    assert proxy.counts == {kind: 1}, dict(proxy.hits)
    assert a.flush_errors == {}
    run.complete({"ok": True})
    a.close()
    reader = fresh_reader(hosts)
    index = reader.index("lied")
    assert index.format == 4
    assert index.status == "completed"
    assert len(index.segments) < 12
    check_complete(reader, "lied", acked)


@pytest.mark.real_server
@pytest.mark.parametrize("target", ["page", "head-after-merge", "merged-segment"])
def test_a_lie_then_a_crash_loses_nothing(hosts: Hosts, proxy: FaultProxy, target: str) -> None:
    """The same lie, but the writer dies before any read-back could heal it (no close):
    a fresh host must still read the whole run, or the writer reopened on its cache
    must heal it at its next flush."""
    a = open_live(hosts, "host-a", proxy)
    run = a.start_run("agent", run_id="crashed", policy=KEEP_ALL)
    acked: Acked = []
    proxy.set_rate(1.0, ("unstored",), only=_filter(target, 3), budget=1)
    i = 0
    while not proxy.counts:  # crash right after the lie
        steps(a, run, i, 1, acked)
        i += 1
        assert i < 40, "the fault never fired"
    abandon(a)
    indexpages._cache.clear()  # the process is gone, with every page it knew
    again = open_live(hosts, "host-a")
    run = again.run("crashed")
    steps(again, run, i, 4, acked)
    again.close()
    check_complete(fresh_reader(hosts), "crashed", acked)


# -- 5. a hostile bucket: pages and merged refs crafted by someone with write access ---

VICTIM, OTHER = "victim", "other"


@pytest.fixture(scope="module")
def paged_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``file://`` archive with two completed, paged and compacted runs (built once)."""
    where = tmp_path_factory.mktemp("paged")
    root = where / "bucket"
    with Archive.open(root.as_uri(), cache_dir=where / "writer", **LIVE) as archive:
        for run_id, n in ((VICTIM, 24), (OTHER, 12)):
            run = archive.start_run(agent="a", run_id=run_id, policy=KEEP_ALL)
            steps(archive, run, 0, n, [], tag=run_id)
            run.complete()
    head = read_head(root, VICTIM)
    assert len(head["pages"]) >= 2, head["pages"]
    return root


@pytest.fixture
def paged(paged_template: Path, tmp_path: Path) -> Path:
    """A copy of the template for one test to tamper with; no page in memory."""
    root = tmp_path / "bucket"
    shutil.copytree(paged_template, root)
    indexpages._cache.clear()
    return root


def read_head(root: Path, run_id: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((root / "runs" / run_id / "index.json").read_text())
    return doc


def write_head(root: Path, run_id: str, doc: dict[str, Any]) -> None:
    (root / "runs" / run_id / "index.json").write_text(json.dumps(doc))


def read_page(root: Path, key: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(
        zstandard.ZstdDecompressor().decompress((root / key).read_bytes())
    )
    return doc


def plant_page(
    root: Path, run_id: str, pos: int, doc: dict[str, Any], key: str | None = None
) -> str:
    """Store ``doc`` as page ``pos`` of ``run_id``'s head, the head's page ref forged to
    match (sha256, ranges, count, size): what someone with write access can do. The
    page goes under ``key``, by default the key format 4 gives it."""
    raw = json.dumps(doc).encode()
    sha = hashlib.sha256(raw).hexdigest()
    segs = doc["segments"]
    first, last = segs[0]["first_seq"], segs[-1]["last_seq"]
    key = key or indexpages.page_key(run_id, first, last, sha)
    body = zstandard.ZstdCompressor(write_checksum=True).compress(raw)
    (root / key).parent.mkdir(parents=True, exist_ok=True)
    (root / key).write_bytes(body)
    head = read_head(root, run_id)
    head["pages"][pos] = {
        "key": key,
        "first_seq": first,
        "last_seq": last,
        "segments": len(segs),
        "sha256": sha,
        "stored_bytes": len(body),
    }
    write_head(root, run_id, head)
    return key


def reads(store: CountingStore) -> set[str]:
    return {key for op, key in store.recent if op in ("get", "head")}


def _refs_of_another_run(root: Path) -> str:
    page = read_page(root, read_head(root, VICTIM)["pages"][0]["key"])
    other = read_page(root, read_head(root, OTHER)["pages"][0]["key"])
    page["segments"][0]["key"] = other["segments"][0]["key"]
    plant_page(root, VICTIM, 0, page)
    return str(other["segments"][0]["key"])


def _dot_dot_ref(root: Path) -> str:
    page = read_page(root, read_head(root, VICTIM)["pages"][0]["key"])
    bad = f"runs/{VICTIM}/seg/../../{OTHER}/seg/" + page["segments"][0]["key"].rsplit("/", 1)[1]
    page["segments"][0]["key"] = bad
    plant_page(root, VICTIM, 0, page)
    return bad


def _page_of_another_run(root: Path) -> str:
    # The head names OTHER's genuine page (its sha256 right): a reader must not even
    # GET it, and never splice another run's refs into this one.
    other = read_head(root, OTHER)["pages"][0]
    head = read_head(root, VICTIM)
    head["pages"][0] = other
    write_head(root, VICTIM, head)
    return str(other["key"])


def _page_key_climbs(root: Path) -> str:
    page = read_page(root, read_head(root, VICTIM)["pages"][0]["key"])
    key = f"runs/{VICTIM}/pages/../../{OTHER}/pages/x.json.zst"
    return plant_page(root, VICTIM, 0, page, key=key)


def _page_of_wrong_run_id(root: Path) -> str:
    page = read_page(root, read_head(root, VICTIM)["pages"][0]["key"])
    page["run_id"] = OTHER
    return plant_page(root, VICTIM, 0, page)


def _pages_overlap(root: Path) -> str:
    head = read_head(root, VICTIM)
    head["pages"].insert(1, head["pages"][0])
    write_head(root, VICTIM, head)
    return str(head["pages"][1]["key"])


def _pages_leave_a_gap(root: Path) -> str:
    head = read_head(root, VICTIM)
    del head["pages"][0]
    write_head(root, VICTIM, head)
    return str(head["pages"][0]["key"])


def _gap_inside_a_page(root: Path) -> str:
    page = read_page(root, read_head(root, VICTIM)["pages"][0]["key"])
    first = page["segments"][0]
    first["last_seq"] -= 2  # the page says 1-(n-2), the next ref still starts at n+1
    first["records"] -= 2
    return plant_page(root, VICTIM, 0, page)


CRAFTED = [
    _refs_of_another_run,
    _dot_dot_ref,
    _page_of_another_run,
    _page_key_climbs,
    _page_of_wrong_run_id,
    _pages_overlap,
    _pages_leave_a_gap,
    _gap_inside_a_page,
]


@pytest.mark.parametrize("craft", CRAFTED, ids=lambda f: f.__name__.strip("_"))
def test_a_crafted_page_is_refused_and_nothing_outside_the_run_is_read(
    craft: Callable[[Path], str], paged: Path, tmp_path: Path
) -> None:
    root = paged
    craft(root)
    for op in ("index", "restore", "export"):
        indexpages._cache.clear()
        store = CountingStore(FileStore(root, create=False))
        out = tmp_path / "out" / op
        out.parent.mkdir(exist_ok=True)
        before = tree(tmp_path)
        with pytest.raises(CorruptObjectError):
            attempt(Reader.open(root.as_uri(), store=store), op, out)
        # Nothing of another run is read (the manifest is not a run's).
        outside = {
            k for k in reads(store) if k.startswith("runs/") and not k.startswith(f"runs/{VICTIM}/")
        }
        assert outside == set(), outside
        assert tree(tmp_path) == before  # an export left nothing behind
    report = Reader.open(root.as_uri()).verify(VICTIM)
    assert not report.ok


def attempt(reader: Reader, op: str, out: Path) -> object:
    if op == "index":
        return reader.index(VICTIM)
    if op == "restore":
        return reader.restore(VICTIM)
    return reader.export([VICTIM], dest=out)


def tree(where: Path) -> set[Path]:
    return set(where.rglob("*"))


def test_cli_export_of_a_run_with_a_tampered_page_writes_nothing(
    paged: Path, tmp_path: Path
) -> None:
    root = paged
    key = _page_key_climbs(root)
    work = tmp_path / "w" / "a"
    work.mkdir(parents=True)
    before = tree(tmp_path)
    code = cli("--url", root.as_uri(), "export", VICTIM, "--out", str(work / "b.tar"))
    assert code == 1
    assert tree(tmp_path) == before  # nothing under --out's parent, nothing outside
    assert key.startswith(f"runs/{VICTIM}/pages/../")


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,  # the attack still works; any other error is a real failure
    reason=(
        "design: format 4's chain rule (format.md 12.3) lets the next ref's prev_sha256 "
        "name a ref's `link` instead of its sha256, and `link` is an unauthenticated "
        "field of the index (the segments it stands for are deleted by the merge). "
        "Whoever can write the bucket replaces any segment in the middle of a run by "
        "one of their own, sets its ref's sha256 and `link` (= the value the next "
        "segment's header names), and chain_head, the manifest's head and every later "
        "segment stay unchanged: verify, restore and export accept the altered history "
        "and an auditor's anchored chain_head still matches. In format 2 the same "
        "substitution breaks the next header's link (compliance.md's table)."
    ),
)
def test_a_segment_substituted_behind_a_forged_link_is_caught(paged: Path) -> None:
    root = paged
    head = read_head(root, VICTIM)
    anchored = head["chain_head"]
    page = read_page(root, head["pages"][0]["key"])
    ref = page["segments"][-1]  # the oldest merged segment, seqs 1-32
    raw = zstandard.ZstdDecompressor().decompress((root / ref["key"]).read_bytes())
    header, *lines = raw.splitlines()
    doctored = [json.loads(line) for line in lines]
    event = next(r for r in doctored if r["type"] == "event")
    event["data"] = {"i": -1, "host": "the attacker"}  # history rewritten
    new_raw = b"\n".join([header, *(json.dumps(r).encode() for r in doctored)]) + b"\n"
    sha = hashlib.sha256(new_raw).hexdigest()
    key = f"runs/{VICTIM}/seg/{ref['first_seq']:012d}-{ref['last_seq']:012d}-{sha[:16]}.jsonl.zst"
    body = zstandard.ZstdCompressor(write_checksum=True).compress(new_raw)
    (root / key).write_bytes(body)
    # What the next segment's header names: this ref's sha256 (or its link).
    ref["link"] = ref["sha256"]
    ref.update(key=key, sha256=sha, raw_bytes=len(new_raw), stored_bytes=len(body))
    plant_page(root, VICTIM, 0, page)
    indexpages._cache.clear()
    reader = Reader.open(root.as_uri())
    assert reader.index(VICTIM).chain_head == anchored  # the anchor still matches
    assert {"i": -1, "host": "the attacker"} in [e.data for e in reader.restore(VICTIM).events]
    report = reader.verify(VICTIM)
    assert not report.ok, f"verify accepts a rewritten history: {report.problems}"


def _streamed_bomb(size: int) -> bytes:
    """``size`` bytes of zeros as one zstd frame that does not declare its size."""
    obj = zstandard.ZstdCompressor(level=1, write_checksum=True).compressobj(size=-1)
    chunk = bytes(16 << 20)
    return b"".join([*(obj.compress(chunk) for _ in range(size // len(chunk))), obj.flush()])


@pytest.mark.slow
@pytest.mark.parametrize("op", ["restore", "verify"])
def test_a_page_bomb_is_refused_in_bounded_memory(op: str, paged: Path) -> None:
    """A page that decompresses to 1 GiB (the head's ref to it unchanged: the bomb is
    caught before the hash): refused at ``MAX_PAGE_BYTES``, in a child limited to
    1 GiB of address space, never a MemoryError or a hang."""
    root = paged
    page = read_head(root, VICTIM)["pages"][0]
    (root / page["key"]).write_bytes(_streamed_bomb(1 << 30))
    got = run_limited(root, op)
    if op == "verify":
        assert got["error"] is None, got
        assert any(key == page["key"] for _, key in got["problems"]), got
    else:
        assert got["error"] == "CorruptObjectError", got
        assert got["key"] == page["key"]
        assert f"{indexpages.MAX_PAGE_BYTES:,}" in got["message"]
    assert got["maxrss_mib"] < 64 + indexpages.MAX_PAGE_BYTES / (1 << 20) * 2


# -- 3. transient faults across a long compacting run ---------------------------------


@pytest.mark.real_server
def test_transient_faults_across_a_long_compacting_run(hosts: Hosts, proxy: FaultProxy) -> None:
    """10 % of requests fail (5xx, resets, cut answers, lost answers of writes that
    landed, spurious 412s) while the writer flushes and merges: 0 lost, 0 duplicated."""
    a = open_live(hosts, "host-a", proxy, gc_grace_seconds=0)
    run = a.start_run("agent", run_id="noisy", policy=KEEP_ALL)
    acked: Acked = []
    proxy.set_rate(0.1, ("500", "503", "reset", "truncated", "lost", "412"))
    for i in range(24):
        step(run, i, acked)
        with contextlib.suppress(StoreError):  # the records stay pending: next flush
            a.flush()
    proxy.set_rate(0.0)
    run.complete()
    a.close()
    print("faults:", dict(proxy.counts), "live steps:", a.engine.stats.live_steps)
    assert sum(proxy.counts.values()) >= 8, proxy.counts
    assert a.engine.stats.live_steps >= 8
    check_complete(fresh_reader(hosts), "noisy", acked)


# -- 4. a second host takes over a paged, compacted run ----------------------------------

TAKEOVER = ["idle", "appends", "restarted"]


@pytest.mark.real_server
@pytest.mark.parametrize("first", TAKEOVER)
def test_a_takeover_of_a_compacted_run_while_the_first_host_goes_on(
    hosts: Hosts, first: str
) -> None:
    """Host A writes a paged, compacted run; host B resumes it and merges A's segments
    (deleting what it retired at once: grace 0) before A notices. Then A goes on:

    * idle: it flushed everything before the takeover; its close() must not raise and
      its status must list nothing stranded;
    * appends: it appends 2 records; they, and only they, are stranded (FencedError,
      ``status``): held_through must not under-report once B merged A's segments away;
    * restarted: A's process died; a new one on A's cache (no page in memory, A's pages
      deleted by B) closes without raising about records the bucket holds.
    """
    a = open_live(hosts, "host-a", gc_grace_seconds=0)
    run_a = a.start_run("agent", run_id="taken", policy=KEEP_ALL)
    acked: Acked = []
    steps(a, run_a, 0, 12, acked, "a")
    mine = set(fresh_reader(hosts).index("taken").segments)
    if first == "restarted":
        abandon(a)
    b = open_live(hosts, "host-b", gc_grace_seconds=0)
    run_b = b.resume("taken")
    steps(b, run_b, 12, 8, acked, "b")
    index = fresh_reader(hosts).index("taken")
    assert index.owner_host == "host-b"
    assert not mine & set(index.segments), "B's compaction merged A's segments"

    stranded = 0
    if first == "appends":
        for i in (100, 101):
            with contextlib.suppress(FencedError):
                run_a.event("late", {"i": i})
                stranded += 1
        assert stranded == 2
        with pytest.raises(FencedError, match=r"seqs 25-26"):
            a.flush()
    if first == "restarted":
        indexpages._cache.clear()  # a new process
        a = open_live(hosts, "host-a", gc_grace_seconds=0)
    (row,) = [r for r in a.status().runs if r.run_id == "taken"]
    assert (row.archived_seq, row.last_seq) == (24, 24 + stranded), row
    assert row.unflushed_records == stranded
    if stranded:
        raised: list[str] = []
        try:
            a.close()
        except FencedError as exc:  # loud about what is really missing, only that
            raised.append(str(exc))
        assert all("seqs 25-26" in text for text in raised), raised
    else:
        a.close()  # must not raise: the bucket holds every record A acknowledged
    run_b.complete()
    b.close()
    check_complete(fresh_reader(hosts), "taken", acked)


# -- 6. gc with no grace racing a live writer ------------------------------------------


@pytest.mark.slow
def test_gc_with_no_grace_racing_a_live_writer(tmp_path: Path) -> None:
    """gc(grace=0) in a loop in another thread while the writer flushes and merges:
    nothing the current index names is deleted, and a fresh restore is complete after
    every flush."""
    url = (tmp_path / "bucket").as_uri()
    # The writer keeps what it retires listed (grace 1 h): gc(grace=0) deletes those.
    a = Archive.open(url, cache_dir=tmp_path / "a", **LIVE)
    run = a.start_run("agent", run_id="raced", policy=KEEP_ALL)
    acked: Acked = []
    stop = threading.Event()
    deleted: list[str] = []
    failures: list[BaseException] = []

    def collect() -> None:
        store = FileStore(tmp_path / "bucket")
        while not stop.is_set():
            try:
                report = run_gc(
                    store, grace=timedelta(0), retention_days=None, delete_run=lambda _: None
                )
                deleted.extend(report.deleted)
            except RunArchiveError as exc:  # a 412 on its index update: next round
                failures.append(exc)

    gc_thread = threading.Thread(target=collect, daemon=True)
    gc_thread.start()
    missing: list[str] = []
    try:
        for i in range(30):
            step(run, i, acked)
            a.flush()
            indexpages._cache.clear()
            try:
                got = Reader.open(url).restore("raced")
            except CorruptObjectError as exc:
                missing.append(f"after flush {i}: {exc.key}")
                continue
            assert [content(r) for r in got.records] == acked
    finally:
        stop.set()
        gc_thread.join(timeout=10)
    assert deleted, "gc collected retired objects meanwhile"
    assert missing == [], missing
    run.complete()
    a.close()
    check_complete(Reader.open(url), "raced", acked)


@pytest.mark.slow
def test_restores_racing_a_writer_that_deletes_what_it_retires(tmp_path: Path) -> None:
    """A writer with gc_grace_seconds=0 deletes the segments and pages a merge retired
    right after its head write. A restore that read the previous head then finds a
    segment missing: it re-reads the index once and continues (format.md 12.4), so
    restores beside the writer return a complete prefix of the run and exports
    succeed (bar the rare second miss one re-read cannot cover)."""
    url = (tmp_path / "bucket").as_uri()
    a = Archive.open(url, cache_dir=tmp_path / "a", gc_grace_seconds=0, **LIVE)
    run = a.start_run("agent", run_id="busy", policy=KEEP_ALL)
    acked: Acked = []
    steps(a, run, 0, 1, acked)
    stop = threading.Event()
    failures: list[str] = []
    restores = [0]

    def read(export: bool) -> None:
        reader = Reader.open(url)
        n = 0
        while not stop.is_set():
            n += 1
            try:
                if export:  # an export is a reader too: it re-reads and stages again
                    reader.export(["busy"], dest=tmp_path / f"export-{n}")
                    restores[0] += 1
                    continue
                got = reader.restore("busy")
            except CorruptObjectError as exc:
                failures.append(("export: " if export else "restore: ") + str(exc))
                continue
            have = len(got.records)
            if [content(r) for r in got.records] != acked[:have] or have < 2:
                failures.append(f"not a complete prefix: {have} records")
            restores[0] += 1

    readers = [threading.Thread(target=read, args=(e,), daemon=True) for e in (False, True)]
    for t in readers:
        t.start()
    try:
        steps(a, run, 1, 40, acked)
    finally:
        stop.set()
        for t in readers:
            t.join(timeout=10)
    a.close()
    assert restores[0] >= 20, restores
    # format.md 12.4 promises one re-read: with grace 0 and a merge at every flush, the
    # segment or page the re-read named can itself be merged and deleted before it is
    # fetched (a few % of reads here). Any other error, or many, is a bug.
    missing = [f for f in failures if "missing" in f]
    assert missing == failures, failures[:3]
    assert len(failures) <= max(2, restores[0] // 10), f"{len(failures)}: {failures[:3]}"


# -- the writer's own output stays within what its readers accept ----------------------

T0 = datetime(2026, 12, 3, tzinfo=UTC)


def _ref(first: int, last: int, level: int, ckpts: int = 0, link: str | None = None) -> SegmentRef:
    n = last - first + 1
    return SegmentRef(
        key=f"runs/r/seg/{first:012d}-{last:012d}-{level:04x}{(link or '')[:12]:0>12}.jsonl.zst",
        first_seq=first,
        last_seq=last,
        records=n,
        checkpoints=ckpts,
        events=n - ckpts,
        stored_bytes=10,
        raw_bytes=100 * n,
        sha256=hashlib.sha256(f"{first}-{last}-{level}-{link}".encode()).hexdigest(),
        first_ts=T0,
        last_ts=T0,
        level=level,
        link=link,
        ckpts=tuple((first + k, f"checkpoint-name-{k % 7}") for k in range(ckpts)),
    )


def test_every_page_a_writer_writes_is_one_its_readers_accept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A keep_all run of small checkpoints: each high-level ref lists every checkpoint
    it holds (``ckpts``), so 256 of them can make a page far larger than the ceiling a
    reader decompresses (MAX_PAGE_BYTES, here scaled down to 64 KiB). Pages must be cut
    by size too, or the writer stores a page no reader (nor itself after a restart) can
    read."""
    monkeypatch.setattr(indexpages, "MAX_PAGE_BYTES", 64 * 1024)
    refs = [_ref(1000 * i + 1, 1000 * (i + 1), 12, ckpts=400) for i in range(300)]
    refs.append(_ref(300_001, 300_002, 0))
    index = RunIndex(run_id="r", agent="a", created_at=T0, updated_at=T0, segments=tuple(refs))
    head, pages = indexpages.to_head(index)
    assert len(head.pages) >= 2
    for page, body, _ in pages:
        assert len(indexpages.decode_page(body, page, "r")) == page.segments
    assert sum(p.segments for p in head.pages) + len(head.segments) == len(refs)


def test_a_sweeps_head_write_lost_or_unstored_is_this_writers_own() -> None:
    """A sweep rewrites one level-0 segment (same range, new key, a ``link``). Its head
    write answered and lost (the bucket has it) is adopted; answered and never stored
    (the bucket has the one before) is healed: neither is a conflict."""
    a, b = _ref(1, 2, 0), _ref(3, 4, 0)
    swept = _ref(1, 2, 0, link=a.sha256)
    base = {"run_id": "r", "agent": "a", "created_at": T0, "updated_at": T0}
    before = RunIndex(**base, segments=(a, b), last_seq=4, epoch=1, writer="w")
    after = before.model_copy(update={"segments": (swept, b)})
    me = {"epoch": 1, "writer": "w", "archived_seq": 4, "last_seq": 4}
    assert reconcile(**me, ours=before, remote=after).action == "adopt"
    assert reconcile(**me, ours=after, remote=before).action == "heal"
    # Another writer's different segment of the same range (no link) stays a conflict.
    other = _ref(1, 2, 0).model_copy(update={"key": "runs/r/seg/x.jsonl.zst"})
    diverged = before.model_copy(update={"segments": (other, b)})
    assert reconcile(**me, ours=before, remote=diverged).action == "conflict"


@pytest.mark.real_server
def test_an_unstored_merge_head_then_a_crash_with_no_grace_loses_nothing(
    hosts: Hosts, proxy: FaultProxy
) -> None:
    """The merge's head PUT is answered 200 and never stored, and the writer (grace 0)
    deletes the segments the merge retired right away, then dies: the bucket's head
    still names them. A fresh host, without the writer ever coming back, must still
    restore every record (the writer must not delete what the bucket's head names)."""
    a = open_live(hosts, "host-a", proxy, gc_grace_seconds=0)
    run = a.start_run("agent", run_id="gone", policy=KEEP_ALL)
    acked: Acked = []
    steps(a, run, 0, 5, acked)
    proxy.set_rate(1.0, ("unstored",), only=head_put_after_merge(), budget=1)
    i = 5
    while not proxy.counts:
        steps(a, run, i, 1, acked)
        i += 1
        assert i < 20, "the fault never fired"
    abandon(a)
    check_complete(fresh_reader(hosts), "gone", acked)


@pytest.mark.parametrize("dest", ["dir", "tar"])
def test_an_export_of_a_paged_run_is_self_contained(paged: Path, tmp_path: Path, dest: str) -> None:
    """A bundle carries the run's pages beside its head, so ``verify-export`` finds it
    sound and its records are the run's."""
    out = tmp_path / ("b.tar" if dest == "tar" else "b")
    with Reader.open(paged.as_uri()) as reader:
        reader.export([VICTIM], dest=out)
        want = [content(r) for r in reader.restore(VICTIM).records]
    assert cli("verify-export", str(out)) == 0
    if dest == "dir":
        index = json.loads((out / "runs" / VICTIM / "index.json").read_text())
        for page in index["pages"]:
            assert (out / "runs" / VICTIM / "pages" / page["key"].rsplit("/", 1)[1]).exists()
        lines = (out / "runs" / VICTIM / "records.jsonl").read_text().splitlines()
        assert len(lines) == len(want) == 48


def test_an_export_of_a_run_chained_through_links_verifies(tmp_path: Path) -> None:
    """33 flushes with fanout 2: the 32nd needs 5 merges, a flush runs at most 4
    (livecompact.MAX_STEPS), so the 33rd segment is written before the last merge and
    names the hash of a segment that merge replaced: the merged ref's ``link``
    (format.md 12.3). Export and verify-export must accept that chain."""
    root = tmp_path / "bucket"
    with Archive.open(root.as_uri(), cache_dir=tmp_path / "w", **LIVE) as archive:
        run = archive.start_run(agent="a", run_id="linked", policy=KEEP_ALL)
        acked: Acked = []
        steps(archive, run, 0, 33, acked)
        run.complete()
    reader = Reader.open(root.as_uri())
    index = reader.index("linked")
    assert any(
        b.prev_sha256 == a.link != a.sha256
        for a, b in zip(index.segments, index.segments[1:], strict=False)
    ), "the chain goes through a link"
    assert reader.verify("linked").ok
    reader.export(["linked"], dest=tmp_path / "b")
    assert cli("verify-export", str(tmp_path / "b")) == 0
