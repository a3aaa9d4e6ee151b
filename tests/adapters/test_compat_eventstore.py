"""compat.eventstore.ArchiveCheckpointer: the event-sourcing Checkpointer protocol, archived."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import pytest
from support.backends import Backend, abandon, run_child

from runarchive.compat.eventstore import ArchiveCheckpointer, ArchivedEvent
from runarchive.errors import InvalidInputError, StateNotSerializableError


class Kind(Enum):
    STARTED = "started"
    TOOL = "tool"


@dataclass
class MyEvent:
    """The caller's own event class, as the original's PAEvent."""

    run_id: str
    seq: int
    ts: float
    kind: Kind
    lane_id: str = "main"
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "seq": self.seq,
            "ts": self.ts,
            "kind": self.kind,  # an Enum: the checkpointer stores its value
            "lane_id": self.lane_id,
            "data": self.data,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MyEvent:
        return cls(d["run_id"], d["seq"], d["ts"], Kind(d["kind"]), d["lane_id"], d["data"])


@dataclass
class MyState:
    step: int
    notes: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "notes": self.notes}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MyState:
        if d["step"] < 0:
            raise ValueError("a corrupt snapshot")
        return cls(d["step"], d["notes"])


def test_the_protocol_with_the_callers_own_types(backend: Backend) -> None:
    cp = ArchiveCheckpointer(backend.open(), event_type=MyEvent, state_type=MyState)
    events = [
        MyEvent("run-1", i, 1000.0 + i, Kind.TOOL if i > 1 else Kind.STARTED, ("main", "b")[i % 2])
        for i in range(1, 8)
    ]
    for ev in events:
        cp.save_event(ev)
    assert cp.load_latest("run-1") is None  # events, no snapshot yet
    cp.save_snapshot("run-1", MyState(3, ["a"]))
    cp.save_snapshot("run-1", MyState(7, ["a", "b"]))  # the latest wins
    assert cp.load_latest("run-1") == MyState(7, ["a", "b"])
    assert cp.list_events("run-1") == events
    assert cp.list_events("run-1", since_seq=5) == events[5:]
    assert cp.list_events("run-1", since_seq=7) == []
    assert cp.list_events("unknown") == []
    assert cp.load_latest("unknown") is None


def test_defaults_return_archived_events_and_dicts(backend: Backend) -> None:
    cp = ArchiveCheckpointer(backend.open())
    cp.save_event({"run_id": "r", "seq": 1, "ts": 1.5, "kind": "go", "data": {"x": 1}})
    cp.save_event(ArchivedEvent("r", 2, 2.5, "stop", None, "side"))
    cp.save_snapshot("r", {"state": 1})
    assert cp.list_events("r") == [
        ArchivedEvent("r", 1, 1.5, "go", {"x": 1}, "main"),
        ArchivedEvent("r", 2, 2.5, "stop", None, "side"),
    ]
    assert cp.load_latest("r") == {"state": 1}


def test_a_snapshot_that_does_not_load_falls_back_to_the_previous(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    archive = backend.open()
    cp = ArchiveCheckpointer(archive, state_type=MyState)
    cp.save_snapshot("r", MyState(1, ["good"]))
    cp.save_snapshot("r", {"step": -1, "notes": []})  # from_dict rejects it
    with caplog.at_level(logging.WARNING, logger="runarchive.compat.eventstore"):
        assert cp.load_latest("r") == MyState(1, ["good"])
    assert "does not load" in caplog.text
    archive.flush()
    other = ArchiveCheckpointer(backend.open(), state_type=MyState)  # from the bucket
    assert other.load_latest("r") == MyState(1, ["good"])


def test_delete_run_and_list_runs(backend: Backend) -> None:
    archive = backend.open()
    cp = ArchiveCheckpointer(archive)
    for run_id in ("older", "newer", "events-only"):
        cp.save_event({"run_id": run_id, "seq": 1, "kind": "k"})
        if run_id != "events-only":
            cp.save_snapshot(run_id, {"id": run_id})
    archive.flush()
    cp.save_snapshot("newer", {"id": "newer", "v": 2})
    assert set(cp.list_runs()) == {"older", "newer", "events-only"}
    assert cp.list_runs()[0] == "newer"
    archive.start_run(agent="eventstore", run_id="not-mine")  # another writer, same agent
    assert "not-mine" not in cp.list_runs()
    cp.delete_run("older")
    cp.delete_run("never-existed")  # a no-op, as in the original
    assert set(cp.list_runs()) == {"newer", "events-only"}
    assert cp.load_latest("older") is None
    assert cp.list_events("older") == []
    assert not list(archive.store.list("runs/older/"))
    cp.save_event({"run_id": "older", "seq": 1, "kind": "again"})  # a new run, same id
    assert [e.kind for e in cp.list_events("older")] == ["again"]


def test_bad_input_writes_nothing(backend: Backend) -> None:
    archive = backend.open()
    cp = ArchiveCheckpointer(archive)
    cp.save_event({"run_id": "r", "seq": 1, "kind": "ok"})
    for bad, match in (
        ({"seq": 2, "kind": "k"}, "run_id"),
        ({"run_id": "r", "kind": "k"}, "seq"),
        ({"run_id": "r", "seq": True, "kind": "k"}, "seq"),
        ({"run_id": "r", "seq": 2}, "kind"),
        ({"run_id": "r", "seq": 2, "kind": "k", "lane_id": 3}, "lane_id"),
        (42, "to_dict"),
    ):
        with pytest.raises(InvalidInputError, match=match):
            cp.save_event(bad)
    with pytest.raises(StateNotSerializableError, match="data"):
        cp.save_event({"run_id": "r", "seq": 2, "kind": "k", "data": object()})
    with pytest.raises(StateNotSerializableError, match="state"):
        cp.save_snapshot("r", {"x": float("nan")})
    assert [e.seq for e in cp.list_events("r")] == [1]
    assert archive.run("r").last_seq == 1


def test_any_id_and_another_host_continues_the_run(backend: Backend) -> None:
    first = backend.open(host_id="a")
    cp = ArchiveCheckpointer(first)
    run_id = "user 7 / job #3"  # not a run id: stored under a hashed one
    for i in range(1, 4):
        cp.save_event({"run_id": run_id, "seq": i, "kind": "k"})
    cp.save_snapshot(run_id, {"at": 3})
    first.flush()
    abandon(first)

    second = ArchiveCheckpointer(backend.open(host_id="b"))
    assert second.load_latest(run_id) == {"at": 3}
    assert [e.seq for e in second.list_events(run_id)] == [1, 2, 3]
    second.save_event({"run_id": run_id, "seq": 4, "kind": "k"})  # takes the run over
    assert [e.seq for e in second.list_events(run_id, since_seq=2)] == [3, 4]
    assert second.list_runs() == [run_id]


@pytest.mark.slow
def test_a_new_process_on_a_fresh_cache_reads_the_run(shared_backend: Backend) -> None:
    out = run_child(
        shared_backend,
        "compat_child.py",
        {"adapter": "eventstore", "key": "proc-run", "exit": "kill"},
    )
    wrote = json.loads(out)
    cp = ArchiveCheckpointer(shared_backend.open())
    assert cp.load_latest("proc-run") == wrote["snapshot"]
    events = cp.list_events("proc-run")
    assert [e.seq for e in events] == list(range(1, wrote["events"] + 1))
    assert events[4] == ArchivedEvent("proc-run", 5, 1005.0, "tool", {"n": 5}, "main")
    assert cp.list_runs() == ["proc-run"]
