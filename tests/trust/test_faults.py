"""A whole workload through a proxy injecting 20 % S3 faults of every kind.

Every acknowledged record is restored exactly once from a fresh host, the archive
verifies, the manifest lists every run with its final status, and the proxy proves
that each kind of fault was injected (and so survived).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.backends import s3_settings
from support.faultproxy import TRANSIENT as KINDS
from support.faultproxy import FaultProxy, what
from support.servers import S3Server

from runarchive import Archive, Reader
from runarchive.errors import StoreError
from runarchive.format.model import Checkpoint
from runarchive.policy import Policy

pytestmark = pytest.mark.real_server

THREADS = 4
RUNS_PER_THREAD = 3
STEPS = 120


@pytest.fixture
def seaweed_env(seaweed: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweed.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweed.secret_key)
    return seaweed


@pytest.fixture
def proxy(seaweed_env: S3Server) -> Iterator[FaultProxy]:
    seed = int(os.environ.get("FAULT_SEED", "20261125"))
    with FaultProxy(seaweed_env.endpoint_url, seed=seed, hold_seconds=2.0) as p:
        yield p


def faulty_settings(proxy: FaultProxy, server: S3Server, cache_dir: Path) -> dict[str, Any]:
    """Settings of an archive that talks to the bucket through ``proxy``."""
    return {
        **s3_settings(server),
        "endpoint_url": proxy.endpoint_url,
        "cache_dir": cache_dir,
        "read_timeout": 1.0,
        "connect_timeout": 1.0,
        "max_attempts": 3,
        "flush_records": 10,
        "flush_age": 0.3,
        "lease_seconds": 3,
        "policy": Policy(keep_all=True),
    }


Acked = dict[tuple[str, int], tuple[str, str, Any]]


def _workload(archive: Archive, worker: int, acked: Acked, final: dict[str, str]) -> None:
    for r in range(RUNS_PER_THREAD):
        run = archive.start_run(agent=f"agent-{worker}", metadata={"worker": worker, "n": r})
        got: Acked = {}
        for step in range(STEPS):
            state = {"step": step, "worker": worker, "text": f"w{worker} r{r} " * (step % 17)}
            name = ("plan", "act", "observe")[step % 3]
            cp = run.checkpoint(name, state)
            got[(run.run_id, cp.seq)] = ("checkpoint", name, state)
            if step % 2:
                data = {"step": step, "tool": "search"}
                ev = run.event("tool_call", data, lane=f"lane{step % 2}")
                got[(run.run_id, ev.seq)] = ("event", "tool_call", data)
            if step % 30 == 29:
                with contextlib.suppress(StoreError):  # the records stay pending
                    run.flush()
            time.sleep(0.004)
        status = "failed" if (worker + r) % 3 == 0 else "completed"
        try:
            if status == "failed":
                run.fail(RuntimeError("tool broke"))
            else:
                run.complete({"steps": STEPS})
        except StoreError:
            pass  # the status is in the cache; the flusher carries it
        acked.update(got)
        final[run.run_id] = status


def _pending(archive: Archive) -> int:
    return len(archive.cache.runs_needing_flush())


def test_workload_survives_20_percent_faults(
    proxy: FaultProxy, seaweed_env: S3Server, tmp_path: Path
) -> None:
    server = seaweed_env
    url = server.url(server.make_bucket(), "agents")
    proxy.set_rate(0.2, KINDS)
    began = time.monotonic()
    archive = Archive.open(url, **faulty_settings(proxy, server, tmp_path / "host-a"))
    acked: Acked = {}
    final: dict[str, str] = {}
    workers = [
        threading.Thread(target=_workload, args=(archive, w, acked, final)) for w in range(THREADS)
    ]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    # Let the background flusher work the backlog under faults for a while.
    deadline = time.monotonic() + 10
    while _pending(archive) and time.monotonic() < deadline:
        time.sleep(0.2)
    under_faults = time.monotonic() - began
    requests_under_faults = proxy.requests
    proxy.set_rate(0.0)
    archive.close()  # drains what is left; raises if it cannot
    injected = dict(proxy.counts)
    print(
        f"\nfaults: {injected} in {requests_under_faults} requests over {under_faults:.1f} s; "
        f"records acked {len(acked)} in {len(final)} runs"
    )
    print("by request:", dict(sorted(proxy.hits.items())))
    assert set(injected) == set(KINDS), injected
    assert all(n > 0 for n in injected.values()), injected
    assert len(final) == THREADS * RUNS_PER_THREAD

    # A fresh host, straight on the server (no proxy).
    direct = {**s3_settings(server)}
    with Reader.open(url, **direct) as reader:
        restored_total = 0
        for run_id, status in final.items():
            restored = reader.restore(run_id)
            seqs = [r.seq for r in restored.records]
            assert len(seqs) == len(set(seqs)), f"duplicate seqs in {run_id}"
            want = sorted(seq for (rid, seq) in acked if rid == run_id)
            assert seqs == want, f"{run_id}: lost {sorted(set(want) - set(seqs))}"
            for rec in restored.records:
                rtype, name, payload = acked[(run_id, rec.seq)]
                assert rec.type == rtype
                if isinstance(rec, Checkpoint):
                    assert (rec.name, rec.state) == (name, payload)
                else:
                    assert (rec.kind, rec.data) == (name, payload)
            assert restored.index.status == status
            restored_total += len(seqs)
        assert restored_total == len(acked)
        listed = {e.run_id: e.status for e in reader.list_runs(limit=None)}
        assert listed == final
        report = reader.verify()
        assert report.ok, [str(p) for p in report.problems]
        warnings = sorted({p.kind for p in report.problems})
        print(f"restored {restored_total}, lost 0, duplicated 0; verify warnings: {warnings}")
        assert set(warnings) <= {"orphan"}, [str(p) for p in report.problems]

    with Archive.open(url, cache_dir=tmp_path / "gc-host", **direct) as cleaner:
        gc = cleaner.gc(grace=0)
        print(f"gc removed {len(gc.deleted)} objects")
        clean = cleaner.verify()
        assert clean.problems == [], [str(p) for p in clean.problems]


# -- one fault at a time, at a chosen request: each a regression test ------------------


def _only(method: str, kind: str, nth: int = 1) -> Any:
    """A filter accepting the ``nth`` ``method`` request on a ``kind`` object."""
    seen = [0]

    def accept(m: str, path: str) -> bool:
        if m != method or what(path) != kind:
            return False
        seen[0] += 1
        return seen[0] == nth

    return accept


@pytest.mark.parametrize("nth", [1, 4])
def test_open_survives_a_lost_probe_response(
    proxy: FaultProxy, seaweed_env: S3Server, tmp_path: Path, nth: int
) -> None:
    """The probe's own write landed but its answer was lost: botocore's retry gets 412.
    That is not a store ignoring preconditions."""
    url = seaweed_env.url(seaweed_env.make_bucket(), "agents")
    proxy.set_rate(1.0, ("lost",), only=_only("PUT", "probe", nth), budget=1)
    with Archive.open(url, **faulty_settings(proxy, seaweed_env, tmp_path / "h")) as archive:
        archive.start_run(agent="a").complete()
    assert proxy.counts == {"lost": 1}


SEALED = {"encryption": "local", "encryption_keys": "k1=" + "C" * 43 + "="}


@pytest.mark.parametrize(
    ("target", "sealed"),
    [("segment", False), ("index", False), ("manifest", False), ("segment", True)],
)
def test_a_lost_put_response_is_reconciled_within_the_flush(
    proxy: FaultProxy, seaweed_env: S3Server, tmp_path: Path, target: str, sealed: bool
) -> None:
    # Sealed: the retried flush must re-create the same ciphertext (same data key,
    # nonce from the frame), so its create-only PUT finds the landed one: no orphan.
    url = seaweed_env.url(seaweed_env.make_bucket(), "agents")
    keys = SEALED if sealed else {}
    settings = faulty_settings(proxy, seaweed_env, tmp_path / "h") | keys
    with Archive.open(url, **settings) as archive:
        run = archive.start_run(agent="a")
        for i in range(5):
            run.checkpoint("step", {"i": i})
        proxy.set_rate(1.0, ("lost",), only=_only("PUT", target), budget=1)
        run.complete()  # raises if the lost answer was not reconciled
        assert archive.flush_errors == {}
    assert proxy.counts == {"lost": 1}
    with Reader.open(url, **s3_settings(seaweed_env), **keys) as reader:
        restored = reader.restore(run.run_id)
        assert bool(restored.index.keys) is sealed
        assert [r.seq for r in restored.records] == [1, 2, 3, 4, 5]
        assert restored.index.status == "completed"
        assert [e.status for e in reader.list_runs()] == ["completed"]
        assert reader.verify().problems == []


@pytest.mark.parametrize("target", ["segment", "index"])
def test_restore_survives_a_truncated_get(
    proxy: FaultProxy, seaweed_env: S3Server, tmp_path: Path, target: str
) -> None:
    url = seaweed_env.url(seaweed_env.make_bucket(), "agents")
    settings = faulty_settings(proxy, seaweed_env, tmp_path / "h")
    with Archive.open(url, **settings) as archive, archive.start_run(agent="a") as run:
        for i in range(30):
            run.checkpoint("step", {"i": i, "pad": "x" * 200})
    proxy.set_rate(1.0, ("truncated",), only=_only("GET", target), budget=1)
    reader_settings = {k: settings[k] for k in ("endpoint_url", "region", "addressing_style")}
    with Reader.open(url, **reader_settings, read_timeout=1.0, max_attempts=3) as reader:
        restored = reader.restore(run.run_id)
    assert proxy.counts == {"truncated": 1}
    assert [r.seq for r in restored.records] == list(range(1, 31))


def test_flush_survives_a_truncated_index_get_when_reattaching(
    proxy: FaultProxy, seaweed_env: S3Server, tmp_path: Path
) -> None:
    """A new process checks the index (a conditional GET) before it writes a run again:
    at its first ``archive.run()``, or at its first flush of a run it recovered."""
    url = seaweed_env.url(seaweed_env.make_bucket(), "agents")
    settings = faulty_settings(proxy, seaweed_env, tmp_path / "h")
    with Archive.open(url, **settings) as archive:
        run_id = archive.start_run(agent="a").run_id
        archive.run(run_id).checkpoint("one", {"i": 1})
    with Archive.open(url, **settings) as archive:
        proxy.set_rate(1.0, ("truncated",), only=_only("GET", "index"), budget=1)
        run = archive.run(run_id)  # raised StoreError before the S3 store retried a cut body
        run.checkpoint("two", {"i": 2})
        run.flush()
    assert proxy.counts == {"truncated": 1}
    with Reader.open(url, **s3_settings(seaweed_env)) as reader:
        assert [r.seq for r in reader.restore(run_id).records] == [1, 2]
