"""Format 4 against an adversary: a lying network, a second host, a hostile bucket.

Runs flush every 2 records (a checkpoint and an event) with ``compaction_fanout`` 2,
so live compaction merges, pages are rewritten and objects retired every few flushes.
SeaweedFS behind ``tests/faultproxy.py`` where the network lies (one fault at a chosen
request: a 412 for an object that is not there, a PUT answered 200 and never stored);
``file://`` where the bucket itself is tampered with. After each, a fresh reader
(no page in memory) must restore every acknowledged record exactly once, and
``verify`` must find no error.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import abandon
from faultproxy import FaultProxy
from servers import S3Server
from trust_helpers import Hosts, cli_env, content

from runarchive import Archive, Policy, Reader, indexpages
from runarchive.run import Run

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
def hosts(seaweed: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Hosts]:
    for name, value in cli_env(seaweed).items():
        monkeypatch.setenv(name, value)
    h = Hosts(seaweed, tmp_path)
    yield h
    h.close_all()


@pytest.fixture
def proxy(hosts: Hosts) -> Iterator[FaultProxy]:
    with FaultProxy(hosts.server.endpoint_url, seed=11, hold_seconds=1.5) as p:
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
