"""Write → flush → restore on every backend (file://, moto, SeaweedFS over HTTP)."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from support.backends import Backend, abandon
from support.servers import S3Server

from runarchive import Archive, Checkpoint, Event, Reader
from runarchive.engine.restore import Progress, progress_for
from runarchive.errors import InvalidInputError, RunNotFoundError, RunStateError
from runarchive.format.codec import index_key
from runarchive.policy import Policy


def transcript(n: int) -> list[dict[str, Any]]:
    return [
        {"role": ("user", "assistant")[i % 2], "content": f"message {i} " * 5} for i in range(n)
    ]


def write_run(archive: Archive, checkpoints: int, every_event: int = 3) -> tuple[str, list[Any]]:
    written: list[Any] = []
    with archive.start_run(agent="writer", metadata={"team": "qa", "n": checkpoints}) as run:
        for i in range(checkpoints):
            name = ("plan", "act", "observe")[i % 3]
            written.append(run.checkpoint(name, {"messages": transcript(i + 1), "i": i}, {"i": i}))
            if i % every_event == 0:
                written.append(run.event("tool", {"i": i, "ünïcode": "✓"}, lane=f"lane{i % 2}"))
    return run.run_id, written


def same(a: Checkpoint | Event, b: Checkpoint | Event) -> bool:
    return a.model_dump() == b.model_dump()


def test_restore_on_a_fresh_host_returns_everything_written(backend: Backend) -> None:
    writer = backend.open(policy=Policy(keep_all=True), flush_records=16)
    run_id, written = write_run(writer, 40)
    writer.close()

    fresh = backend.open()  # new, empty cache dir: a second host
    restored = fresh.restore(run_id)
    assert [r.seq for r in restored.records] == list(range(1, len(written) + 1))
    assert all(same(a, b) for a, b in zip(restored.records, written, strict=True))
    index = restored.index
    assert (index.status, index.agent, index.metadata) == (
        "completed",
        "writer",
        {"team": "qa", "n": 40},
    )
    assert index.ended_at is not None
    assert index.last_seq == len(written)
    # segments are contiguous seq ranges, in order
    assert index.segments[0].first_seq == 1
    for a, b in zip(index.segments, index.segments[1:], strict=False):
        assert b.first_seq == a.last_seq + 1
    assert len(restored.events) == 14
    last_act = [w for w in written if isinstance(w, Checkpoint) and w.name == "act"][-1]
    latest_act = restored.latest("act")
    assert latest_act is not None
    assert same(latest_act, last_act)


def test_default_policy_archives_first_latest_per_name_and_last_20(backend: Backend) -> None:
    archive = backend.open(flush_records=100_000, flush_age=3600)
    run_id, written = write_run(archive, 90)
    restored = archive.restore(run_id)
    cps = [w for w in written if isinstance(w, Checkpoint)]
    kept = {c.seq for c in restored.checkpoints}
    expected = {cps[0].seq} | {c.seq for c in cps[-20:]}
    expected |= {max(c.seq for c in cps if c.name == n) for n in ("plan", "act", "observe")}
    assert kept == expected
    assert len(restored.events) == 30  # events are never dropped
    seg = restored.index.segments
    assert sum(s.records + s.dropped for s in seg) == restored.index.last_seq == len(written)


def test_point_in_time_restore(backend: Backend) -> None:
    archive = backend.open(policy=Policy(keep_all=True), flush_records=5)
    with archive.start_run(agent="pit") as run:
        for i in range(12):
            run.checkpoint("step", {"i": i})
            if i == 6:
                time.sleep(0.01)
                cut = datetime.now(UTC)
                time.sleep(0.01)
    by_seq = archive.restore(run.run_id, seq=4)
    assert [c.state["i"] for c in by_seq.checkpoints] == [0, 1, 2, 3]
    by_time = archive.restore(run.run_id, at=cut)
    assert [c.state["i"] for c in by_time.checkpoints] == list(range(7))


def test_context_manager_marks_failure_and_reraises(backend: Backend) -> None:
    archive = backend.open()
    run = archive.start_run(agent="x")

    def agent_step() -> None:
        with run:
            run.checkpoint("a", {"ok": 1})
            raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        agent_step()
    assert run.status == "failed"
    with pytest.raises(RunStateError, match="failed"):
        run.checkpoint("b", {})
    with pytest.raises(RunStateError):
        run.event("e", {})
    index = backend.open().restore(run.run_id).index
    assert index.status == "failed"
    assert index.error == "ValueError: boom"


def test_complete_with_result_and_no_double_end(backend: Backend) -> None:
    archive = backend.open()
    run = archive.start_run(agent="x")
    run.event("only-events", [1, 2])
    run.complete({"answer": 42})
    with pytest.raises(RunStateError, match="already completed"):
        run.fail("late")
    index = archive.index(run.run_id)
    assert (index.status, index.result) == ("completed", {"answer": 42})


def test_reads_from_cache_and_bucket_after_eviction(backend: Backend) -> None:
    archive = backend.open(policy=Policy(keep_all=True), flush_records=10, cache_keep_records=5)
    run = archive.start_run(agent="reader")
    for i in range(40):
        run.checkpoint(("a", "b")[i % 2], {"i": i})
        if i % 10 == 0:
            run.event("tick", {"i": i}, lane=("x", "y")[i % 20 // 10])
    run.flush()
    assert len(archive.cache.records(run.run_id)) < 44  # old records were evicted
    # events 1, 12, 23, 34 (seqs): every one, though most left the cache
    assert [(e.seq, e.data, e.lane) for e in run.events()] == [
        (2, {"i": 0}, "x"),
        (13, {"i": 10}, "y"),
        (24, {"i": 20}, "x"),
        (35, {"i": 30}, "y"),
    ]
    assert [e.seq for e in run.events(since_seq=2)] == [13, 24, 35]
    assert [e.seq for e in run.events(lane="y")] == [13, 35]
    assert [r.seq for r in run.records(12, 14)] == [12, 13, 14]
    assert [r.seq for r in run.records(type="event", name="tick", until=24)] == [2, 13, 24]
    latest = run.latest()
    assert latest is not None
    assert latest.state == {"i": 39}
    latest_a = run.latest("a")
    assert latest_a is not None
    assert latest_a.state == {"i": 38}
    assert run.latest("nope") is None
    first = run.get(1)  # evicted from the cache: read from the bucket
    assert isinstance(first, Checkpoint)
    assert first.state == {"i": 0}
    assert run.get(999) is None
    history = run.history()
    assert [c.state["i"] for c in history] == list(range(40))
    assert [c.state["i"] for c in run.history(name="b", since=5, until=12)] == [3, 5, 7, 9]
    t = history[20].ts
    assert [c.state["i"] for c in run.history(since=t)] == list(range(20, 40))
    assert run.rollback_to(3) == {"i": 1}


def test_rollback_to_an_event_or_unknown_seq_is_an_error(backend: Backend) -> None:
    archive = backend.open()
    run = archive.start_run(agent="x")
    run.event("e")
    with pytest.raises(InvalidInputError, match="event"):
        run.rollback_to(1)
    with pytest.raises(InvalidInputError, match="not held"):
        run.rollback_to(50)


def test_unknown_run(backend: Backend) -> None:
    archive = backend.open()
    with pytest.raises(RunNotFoundError, match="no run 'ghost'"):
        archive.restore("ghost")
    with pytest.raises(RunNotFoundError):
        archive.run("ghost")


def test_given_run_ids_are_validated_and_unique(backend: Backend) -> None:
    archive = backend.open()
    run = archive.start_run(agent="x", run_id="job-2026.11.25_a")
    run.checkpoint("c", 1)
    run.complete()
    with pytest.raises(InvalidInputError, match="already exists"):
        archive.start_run(agent="x", run_id="job-2026.11.25_a")
    with pytest.raises(InvalidInputError, match="already exists"):
        backend.open().start_run(agent="x", run_id="job-2026.11.25_a")  # another host sees it


def test_generated_run_ids_sort_by_creation_time(backend: Backend) -> None:
    archive = backend.open()
    ids = [archive.start_run(agent="x").run_id for _ in range(5)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 5


def test_remote_durability_acks_only_once_in_the_bucket(backend: Backend) -> None:
    archive = backend.open(durability="remote", flush_age=3600)
    run = archive.start_run(agent="x")
    for i in range(3):
        run.checkpoint("c", {"i": i})
        reader = Reader.open(backend.url, **backend.settings)
        assert reader.index(run.run_id).last_seq == i + 1


def test_records_survive_in_cache_and_flush_at_next_open(backend: Backend) -> None:
    cache_dir = backend.tmp / "crashy-host"
    archive = backend.open(cache_dir=cache_dir, flush_records=100_000, flush_age=3600)
    run = archive.start_run(agent="x", metadata={"m": 1})
    for i in range(25):
        run.checkpoint("c", {"i": i})
    # Simulate a crash: stop everything without the final flush.
    abandon(archive)
    with pytest.raises(RunNotFoundError):
        backend.open().restore(run.run_id)

    reopened = backend.open(cache_dir=cache_dir)  # the flusher recovers pending runs
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if reopened.index(run.run_id).last_seq == 25:
                break
        except RunNotFoundError:
            pass
        time.sleep(0.05)
    restored = backend.open().restore(run.run_id)
    assert restored.index.last_seq == 25
    assert restored.index.status == "running"
    # The run can be continued by the host that owns the cache.
    again = reopened.run(run.run_id)
    assert again.checkpoint("c", {"i": 25}).seq == 26
    again.complete()
    assert backend.open().restore(run.run_id).index.status == "completed"


def test_background_flush_triggers(backend: Backend) -> None:
    archive = backend.open(flush_records=10, flush_age=3600)
    run = archive.start_run(agent="count")
    for i in range(10):
        run.event("e", i)
    assert _eventually(lambda: _archived(archive, run.run_id) == 10)

    aged = backend.open(flush_records=100_000, flush_age=0.2)
    run2 = aged.start_run(agent="age")
    run2.event("e", 1)
    assert _eventually(lambda: _archived(aged, run2.run_id) == 1)

    big = backend.open(flush_records=100_000, flush_age=3600, flush_bytes=50_000)
    run3 = big.start_run(agent="bytes")
    run3.checkpoint("c", {"blob": "x" * 60_000})
    assert _eventually(lambda: _archived(big, run3.run_id) == 1)


def _archived(archive: Archive, run_id: str) -> int:
    try:
        return archive.index(run_id).last_seq
    except RunNotFoundError:
        return 0


def _eventually(check: Any, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return bool(check())


def test_request_budget_for_1000_checkpoints(backend: Backend) -> None:
    # The flush's own budget; live compaction's is asserted in test_live.py.
    archive = backend.open(flush_age=3600, live_compaction=False)
    archive.store.reset()
    run = archive.start_run(agent="budget")
    for i in range(1000):
        run.checkpoint(("a", "b", "c", "d")[i % 4], {"messages": transcript(i % 50 + 1)})
    run.complete()
    # Each flush is one segment PUT and one index PUT, nothing else. The count trigger
    # (256) gives about 4 flushes; where the background flusher lags behind the trigger
    # the split moves (a 5th small segment, or a status-only index write at complete()).
    calls = list(archive.store.recent)
    data = [(op, key) for op, key in calls if key.startswith("runs/")]
    # Before the run is listed as completed, the read-back: one conditional GET of the
    # index (no body: it is the one written) and one LIST of the run's segments.
    prefix = f"runs/{run.run_id}/"
    read_back = [("get", prefix + "index.json"), ("list", prefix + "seg/")]
    assert [c for c in data if c[0] != "put"] == read_back, calls
    data = [c for c in data if c[0] == "put"]
    assert len(data) <= 10, calls
    segments = [k for _, k in data if "/seg/" in k]
    assert 3 <= len(segments) <= 5
    # The manifest, per run: listed once (shard GET + PUT on a new host), moved to
    # "done" once (GET + PUT of the done shard, PUT of the active shard it knows).
    manifest = [(op, key) for op, key in calls if key.startswith("manifest/")]
    assert len(manifest) <= 5, manifest
    assert len(calls) == len(data) + len(read_back) + len(manifest)
    assert archive.index(run.run_id).last_seq == 1000


def test_index_is_only_written_conditionally(backend: Backend) -> None:
    archive = backend.open(flush_records=5)
    run = archive.start_run(agent="x")
    for i in range(12):
        run.event("e", i)
    run.flush()
    # Somebody else rewrites the index: our next write must notice, not clobber it.
    got = archive.store.get(index_key(run.run_id))
    archive.store.put(index_key(run.run_id), got.body.replace(b'"agent":"x"', b'"agent":"y"'))
    run.event("e", 12)
    run.complete()
    index = archive.index(run.run_id)
    assert index.agent == "y"  # the foreign change survived: it was merged, not overwritten
    assert index.last_seq == 13
    assert index.status == "completed"


def test_cache_keeps_at_least_the_last_20_checkpoints(backend: Backend) -> None:
    archive = backend.open(flush_records=50, cache_keep_records=10)
    run = archive.start_run(agent="events-heavy")
    for i in range(30):
        run.checkpoint("c", {"i": i})
        for j in range(10):
            run.event("tick", j)
    run.flush()
    cached = archive.cache.records(run.run_id, rtype="checkpoint")
    assert [loads_state(r.line) for r in cached][-20:] == list(range(10, 30))
    assert len(archive.cache.records(run.run_id)) < 330  # events did get evicted


def loads_state(line: bytes) -> Any:
    return orjson.loads(line)["state"]["i"]


# In-process moto is not visible to a child process: file and the real server only.
@pytest.mark.slow
@pytest.mark.parametrize("backend", ["file", "seaweedfs"], indirect=True)
def test_interpreter_exit_flushes_pending_records(backend: Backend) -> None:
    code = (
        "import sys; from runarchive import Archive\n"
        "a = Archive.open(sys.argv[1], cache_dir=sys.argv[2], flush_age=3600, **SETTINGS)\n"
        "r = a.start_run(agent='exit', run_id='exit-run')\n"
        "[r.checkpoint('c', {'i': i}) for i in range(7)]\n"
    ).replace("SETTINGS", repr({k: v for k, v in backend.settings.items()}))
    done = subprocess.run(
        [sys.executable, "-c", code, backend.url, str(backend.tmp / "exit-cache")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    restored = backend.open().restore("exit-run")
    assert [c.state["i"] for c in restored.checkpoints] == list(range(7))
    assert restored.index.status == "running"  # flushed, not completed: it never said so


def test_standard_endpoint_variable(
    seaweed: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", seaweed.endpoint_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweed.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweed.secret_key)
    with Archive.open(
        seaweed.url(seaweed.make_bucket()), cache_dir=tmp_path, addressing_style="path"
    ) as archive:
        assert seaweed.endpoint_url in archive.store.description
        run = archive.start_run(agent="env")
        run.checkpoint("c", 1)
        run.complete()
        assert archive.restore(run.run_id).checkpoints[0].state == 1


def test_progress_bar_only_when_asked_or_on_a_terminal() -> None:
    stream = io.StringIO()
    bar = Progress(3, "restoring r", stream)
    for _ in range(3):
        bar.step()
    assert stream.getvalue().endswith("restoring r [##############################] 3/3\n")
    assert progress_for(100, "x", enabled=False).stream is None
    assert progress_for(100, "x", enabled=True).stream is sys.stderr


def test_a_process_keeps_nothing_per_ended_run_in_memory(tmp_path: Path) -> None:
    # A service writing many runs in one process grew ~3 KB per run for ever (a handle,
    # a lock, policy and lease entries per run ever written); found by a 180 s soak.
    with Archive.open((tmp_path / "b").as_uri(), cache_dir=tmp_path / "c") as archive:
        for _ in range(50):
            with archive.start_run(agent="many") as run:
                run.checkpoint("s", {"i": 1})
        archive.flush()
        del run
        engine = archive.engine
        assert len(archive._runs) == 0  # no handle held by this code: none kept
        assert (len(engine._locks), len(engine._policies), len(engine.live)) == (0, 0, 0)
        # A run still held and still running keeps its state.
        live = archive.start_run(agent="many")
        live.checkpoint("s", {"i": 1})
        archive.flush()
        assert archive.run(live.run_id) is live
        assert live.run_id in engine.live
        assert len(archive.list_runs(limit=None)) == 51
