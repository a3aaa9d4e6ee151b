"""compat.runstore: resumable run checkpoints, throttled saves, interrupted-run discovery."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from threading import Lock
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import BaseModel
from support.backends import Backend, abandon, run_child

from runarchive import Archive
from runarchive.adapters.compat import runstore as runstore_impl
from runarchive.compat.runstore import (
    ArchiveRunStore,
    RunCheckpoint,
    RunCheckpointMeta,
    RunHandle,
)
from runarchive.errors import InvalidInputError, RunStateError, StateNotSerializableError


class Message(BaseModel):
    role: str
    content: str


META = RunCheckpointMeta(
    run_id="run-1",
    agent_id="agent-7",
    agent_name="researcher",
    caller_id="u1",
    channel_id="c1",
    guild_id="g1",
    prompt="find the thing",
    model_tier="large",
    parent_run_id="run-0",
)


def checkpoints_of(archive: Archive, run_id: str) -> list[Any]:
    return [c.state["iteration"] for c in archive.run(run_id).history(name="run-checkpoint")]


def test_save_load_delete(backend: Backend) -> None:
    archive = backend.open()
    store = ArchiveRunStore(archive)
    assert store.load("run-1") is None
    stamp = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    cp = RunCheckpoint(META, [Message(role="user", content="hi")], 2, "search", stamp)
    store.save(cp)
    got = store.load("run-1")
    assert got == RunCheckpoint(META, [{"role": "user", "content": "hi"}], 2, "search", stamp)
    store.save(RunCheckpoint(META, [], 3, "write", stamp))
    loaded = store.load("run-1")
    assert loaded is not None
    assert loaded.iteration == 3
    (entry,) = [e for e in archive.list_runs() if e.run_id == "run-1"] or [None]
    assert entry is None  # not flushed yet: the manifest lists it after the first flush
    archive.flush()
    (entry,) = archive.list_runs()
    assert entry.metadata["meta"]["prompt"] == "find the thing"
    store.delete("run-1")
    store.delete("run-1")  # unknown: a no-op
    assert store.load("run-1") is None
    assert not list(archive.store.list("runs/run-1/"))


def test_bad_input_writes_nothing(backend: Backend) -> None:
    archive = backend.open()
    store = ArchiveRunStore(archive)
    with pytest.raises(StateNotSerializableError, match="messages"):
        store.save(RunCheckpoint(META, [object()]))
    with pytest.raises(InvalidInputError, match="iteration"):
        store.save(RunCheckpoint(META, [], "3"))  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="RunCheckpoint"):
        store.save({"meta": {}})  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="run_id"):
        RunHandle(store, RunCheckpointMeta(run_id=""))
    with pytest.raises(InvalidInputError, match="throttle"):
        RunHandle(store, META, throttle=-1)
    handle = RunHandle(store, META, throttle=60)
    with pytest.raises(StateNotSerializableError):
        handle.save([{"x": float("inf")}], 1)
    assert handle.writes == 0
    assert archive.cache.run("run-1") is None  # nothing was created


class ManualTimer:
    """A ``threading.Timer`` the test fires itself."""

    def __init__(self, interval: float, function: Callable[[], None]) -> None:
        self.interval, self.function, self.daemon = interval, function, False
        self.started = self.cancelled = False

    def start(self) -> None:
        self.started = True

    def cancel(self) -> None:
        self.cancelled = True


def test_throttled_saves_coalesce_and_the_last_is_written_when_the_window_ends(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The window on a clock the test holds still and a timer the test fires: with the
    # real ones, ten saves on a loaded machine can outlast the window (a second write).
    timers: list[ManualTimer] = []

    def timer(interval: float, function: Callable[[], None]) -> ManualTimer:
        timers.append(ManualTimer(interval, function))
        return timers[-1]

    monkeypatch.setattr(runstore_impl, "time", SimpleNamespace(monotonic=lambda: 100.0))
    monkeypatch.setattr(runstore_impl, "threading", SimpleNamespace(Lock=Lock, Timer=timer))
    archive = backend.open()
    handle = RunHandle(ArchiveRunStore(archive), META, throttle=1.5)
    for i in range(1, 11):
        handle.save([{"i": i}], iteration=i)
    assert handle.writes == 1  # the first at once; 2..10 held and coalesced
    (window,) = timers  # one timer for the whole window
    assert window.started
    assert window.interval == 1.5
    window.function()  # the window ends
    assert handle.writes == 2  # the last held save was written
    assert checkpoints_of(archive, "run-1") == [1, 10]
    handle.close()
    assert handle.writes == 2


def test_complete_and_fail_write_the_held_save_and_end_the_candidacy(backend: Backend) -> None:
    archive = backend.open()
    store = ArchiveRunStore(archive)
    done = RunHandle(store, META, throttle=60)
    failed = RunHandle(store, RunCheckpointMeta(run_id="run-2"), throttle=60)
    left = RunHandle(store, RunCheckpointMeta(run_id="run-3"), throttle=60)
    for i in (1, 2, 3):
        done.save([], i)
        failed.save([], i)
        left.save([], i)
    assert (done.writes, failed.writes, left.writes) == (1, 1, 1)
    done.complete({"answer": 42})
    failed.fail(RuntimeError("tool broke"))
    left.close()
    assert checkpoints_of(archive, "run-1") == [1, 3]  # the held save was not lost
    assert checkpoints_of(archive, "run-2") == [1, 3]
    assert checkpoints_of(archive, "run-3") == [1, 3]
    assert store.load("run-1") is None  # not a recovery candidate any more...
    kept = store.load("run-1", include_finished=True)  # ...but its history is kept
    assert kept is not None
    assert kept.iteration == 3
    with pytest.raises(RunStateError, match="has ended"):
        done.save([], 4)
    archive.flush()
    statuses = {e.run_id: e.status for e in archive.list_runs()}
    assert statuses == {"run-1": "completed", "run-2": "failed", "run-3": "running"}
    never_saved = RunHandle(store, RunCheckpointMeta(run_id="run-4"))
    never_saved.complete()  # nothing to end: no run is created for it
    assert archive.cache.run("run-4") is None


def test_no_store_is_a_no_op() -> None:
    handle = RunHandle(None, META, throttle=0)
    handle.save([{"x": object()}], 1)  # not even checked: nothing is kept
    handle.complete()
    handle.fail("x")
    handle.close()
    assert handle.writes == 0


def test_list_interrupted_after_a_restart_and_from_another_host(backend: Backend) -> None:
    cache_dir = backend.tmp / "host-a"
    first = backend.open(cache_dir=cache_dir, host_id="a")
    store = ArchiveRunStore(first)
    handles = {
        run_id: RunHandle(store, RunCheckpointMeta(run_id=run_id, prompt=run_id), 0)
        for run_id in ("in-flight", "finished", "crashed-too")
    }
    for handle in handles.values():
        handle.save([], 1)
    handles["finished"].complete()
    first.flush()
    handles["crashed-too"].save([], 2)  # not flushed when the process dies
    assert store.list_interrupted(stale_after=-3600) == []  # this process writes them all
    abandon(first)  # the process dies

    # The same host boots again: its cache lists them at once, leases not expired yet.
    rebooted = backend.open(cache_dir=cache_dir, host_id="a")
    found = ArchiveRunStore(rebooted).list_interrupted()
    assert sorted((cp.meta.run_id, cp.iteration) for cp in found) == [
        ("crashed-too", 2),
        ("in-flight", 1),
    ]
    # Resuming one makes it this process's: it is no longer listed here.
    resumed = RunHandle(ArchiveRunStore(rebooted), found[0].meta, 0)
    resumed.save([], 3)
    assert len(ArchiveRunStore(rebooted).list_interrupted()) == 1
    rebooted.flush()
    abandon(rebooted)

    # Another host sees them through the manifest once the leases expire.
    other = ArchiveRunStore(backend.open(host_id="b"))
    assert other.list_interrupted() == []  # leases still valid
    later = other.list_interrupted(stale_after=-timedelta(hours=1))  # as if an hour passed
    assert sorted(cp.meta.run_id for cp in later) == ["crashed-too", "in-flight"]
    assert {cp.meta.prompt for cp in later} == {"crashed-too", "in-flight"}


def test_a_killed_process_leaves_a_candidate_a_fresh_host_recovers(
    shared_backend: Backend,
) -> None:
    out = run_child(
        shared_backend,
        "compat_child.py",
        {"adapter": "runstore", "key": "proc-run", "exit": "kill"},
    )
    assert json.loads(out) == {"iteration": 5}
    store = ArchiveRunStore(shared_backend.open(host_id="fresh"))
    (cp,) = store.list_interrupted(stale_after=-3600)
    assert (cp.meta.run_id, cp.meta.agent_id, cp.meta.prompt) == ("proc-run", "a1", "go")
    assert (cp.iteration, cp.active_phase, cp.messages) == (
        5,
        "work",
        [{"role": "user", "content": "m5"}],
    )
    handle = RunHandle(store, cp.meta, 0)  # continue it here
    handle.save([*cp.messages, {"role": "assistant", "content": "done"}], 6)
    handle.complete()
    assert store.list_interrupted(stale_after=-3600) == []
    final = store.load("proc-run", include_finished=True)
    assert final is not None
    assert final.iteration == 6
