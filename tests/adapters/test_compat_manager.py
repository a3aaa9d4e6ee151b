"""compat.manager.CheckpointManager: the original API, method for method, archived."""

from __future__ import annotations

import json
import random
from datetime import timedelta
from typing import Any

import pytest
from support.backends import Backend, abandon, run_child

from runarchive import Archive, Reader
from runarchive.compat.manager import Checkpoint, CheckpointManager, compress
from runarchive.errors import InvalidInputError, RunStateError, StateNotSerializableError


def names(mgr: CheckpointManager) -> list[str]:
    return [cp.id.split(":")[1] for cp in mgr]


def test_compression_keeps_first_latest_per_name_and_last_20(backend: Backend) -> None:
    mgr = CheckpointManager("s1", archive=backend.open())
    for i in range(50):
        mgr.create(("plan", "act", "observe")[i % 3], {"i": i})
    assert len(mgr) == 50  # not above compress_after yet: nothing dropped
    mgr.create("plan", {"i": 50})  # the 51st triggers the rule
    # first (#1); latest of each name among #2..#31: observe #30, plan #31, act #29; last 20
    assert names(mgr) == ["1", "29", "30", "31", *map(str, range(32, 52))]
    latest_act = mgr.get_latest("act")
    assert latest_act is not None
    assert latest_act.id == "s1:50"
    assert [cp.id for cp in mgr.get_by_name("act")][:3] == ["s1:50", "s1:47", "s1:44"]
    assert mgr.get("s1:2") is None  # dropped by the compression
    assert mgr.rollback_to("s1:29") == {"i": 28}


def test_the_view_matches_the_rule_applied_after_every_create(tmp_path: Any) -> None:
    archive = Archive.open((tmp_path / "b").as_uri(), cache_dir=tmp_path / "c")
    rng = random.Random(7)
    mgr = CheckpointManager("fuzz", compress_after=25, archive=archive)
    model: list[Checkpoint] = []
    for i in range(300):
        cp = mgr.create(rng.choice("abcdefg"), {"i": i})
        model = compress([*model, cp], 25)
        assert [c.id for c in mgr] == [c.id for c in model]
    # A second host rebuilds the same view from the bucket, by replaying the rule.
    archive.flush()
    other = Archive.open((tmp_path / "b").as_uri(), cache_dir=tmp_path / "c2")
    archive.close()
    again = CheckpointManager("fuzz", compress_after=25, archive=other)
    assert again.export() == mgr.export()
    other.close()


def test_every_method_of_the_original(backend: Backend) -> None:
    mgr = CheckpointManager("sess", archive=backend.open())
    seen: list[str] = []
    mgr.on_checkpoint(lambda cp: seen.append(cp.id))
    assert mgr.get_latest() is None
    assert mgr.get_summary()["total_count"] == 0
    a = mgr.create("task_started", {"x": 1}, {"who": "me"})
    b = mgr.create("step", {"x": 2})
    c = mgr.create("step", {"x": 3})
    assert (a.id, b.id, c.id) == ("sess:1", "sess:2", "sess:3")
    assert a.metadata == {"who": "me"}
    assert b.metadata == {}
    assert a.timestamp.tzinfo is not None
    assert seen == ["sess:1", "sess:2", "sess:3"]
    assert mgr.get("sess:2") == b
    assert mgr.get_by_name("step") == [c, b]
    assert mgr.get_latest() == c
    assert mgr.get_latest("task_started") == a
    assert mgr.get_latest("nope") is None
    assert mgr.get_all() == [a, b, c]
    assert mgr.get_since(a.timestamp) == [b, c]
    assert mgr.get_between(a.timestamp, b.timestamp) == [a, b]
    assert mgr.rollback_to("sess:1") == {"x": 1}
    assert mgr.rollback_to("sess:99") is None
    assert list(mgr) == [a, b, c]
    assert len(mgr) == 3
    summary = mgr.get_summary()
    assert summary["total_count"] == 3
    assert summary["unique_names"] == 2
    assert summary["names"] == {"task_started": 1, "step": 2}
    assert summary["first_checkpoint"] == a.to_dict()
    assert summary["last_checkpoint"] == c.to_dict()
    assert summary["duration_seconds"] == (c.timestamp - a.timestamp).total_seconds()

    exported = mgr.export()
    assert [Checkpoint.from_dict(d) for d in json.loads(exported)] == [a, b, c]
    assert json.loads(exported)[0] == {
        "id": "sess:1",
        "name": "task_started",
        "timestamp": a.timestamp.isoformat(),
        "data": {"x": 1},
        "metadata": {"who": "me"},
    }
    assert mgr.clear() == 3
    assert len(mgr) == 0
    assert mgr.get_latest() is None
    d = mgr.create("after_clear", {"x": 4})
    assert d.id == "sess:4"  # ids keep counting after clear, as in the original

    other = CheckpointManager("other", archive=mgr.archive)
    assert other.import_checkpoints(exported) == 3
    assert [cp.id for cp in other] == ["sess:1", "sess:2", "sess:3"]
    assert other.get_latest() == c  # same id, name, timestamp, data, metadata
    assert other.create("next", {}).id == "other:4"  # counter = max(count, len)
    assert seen == ["sess:1", "sess:2", "sess:3", "sess:4"]  # imports fire no callback


def test_bad_input_records_nothing(backend: Backend) -> None:
    mgr = CheckpointManager("bad", archive=backend.open())
    mgr.create("ok", {"x": 1})
    with pytest.raises(StateNotSerializableError, match="state"):
        mgr.create("nope", {"x": {1, 2}})
    with pytest.raises(InvalidInputError, match="checkpoint name"):
        mgr.create("", {"x": 1})
    assert len(mgr) == 1
    assert mgr.create("ok", {"x": 2}).id == "bad:2"  # the failed calls used no id
    good = json.loads(mgr.export())
    for broken in (
        "not json",
        '{"an": "object"}',
        json.dumps([*good, {"id": "x", "name": "n"}]),  # no timestamp, no data
        json.dumps([*good, {**good[0], "data": float("nan")}]),
        json.dumps([*good, {**good[0], "timestamp": "yesterday"}]),
    ):
        with pytest.raises(InvalidInputError, match=r"import|JSON|item"):
            mgr.import_checkpoints(broken)
    assert len(mgr) == 2
    assert mgr.run is not None
    assert mgr.run.last_seq == 2  # nothing reached the run either
    with pytest.raises(InvalidInputError, match="compress_after"):
        CheckpointManager("bad2", compress_after=0, archive=mgr.archive)
    with pytest.raises(InvalidInputError, match="session_id"):
        CheckpointManager("", archive=mgr.archive)


def test_another_host_sees_and_continues_the_session(backend: Backend) -> None:
    first = backend.open(host_id="host-a")
    mgr = CheckpointManager("team/session 42", compress_after=30, archive=first)
    for i in range(40):
        mgr.create(("a", "b")[i % 2], {"i": i})
    mgr.clear()
    for i in range(5):
        mgr.create("c", {"i": 40 + i})
    mgr.flush()
    abandon(first)  # the host dies

    second = backend.open(host_id="host-b")
    again = CheckpointManager("team/session 42", compress_after=30, archive=second)
    assert again.export() == mgr.export()
    assert again.run_id.startswith("k-")  # '/' and ' ' are not run id characters
    assert again.create("c", {"i": 45}).id == "team/session 42:46"
    (entry,) = second.list_runs()
    assert entry.metadata["session_id"] == "team/session 42"
    assert entry.owner_host == "host-b"


def test_a_changed_compress_after_is_replayed_where_it_changed(backend: Backend) -> None:
    archive = backend.open()
    mgr = CheckpointManager("cfg", compress_after=60, archive=archive)
    for i in range(55):
        mgr.create("x", {"i": i})
    assert len(mgr) == 55
    smaller = CheckpointManager("cfg", compress_after=30, archive=archive)
    assert len(smaller) == 55  # the old rule held when they were created
    smaller.create("x", {"i": 55})
    assert len(smaller) == 1 + 1 + 20  # now 30 applies: first, latest x, last 20
    smaller.flush()
    fresh = CheckpointManager("cfg", compress_after=30, archive=backend.open())
    assert fresh.export() == smaller.export()


def test_an_ended_session_is_read_only(backend: Backend) -> None:
    archive = backend.open()
    mgr = CheckpointManager("done", archive=archive)
    mgr.create("x", {"i": 1})
    assert mgr.run is not None
    mgr.run.complete()
    reader = CheckpointManager("done", archive=backend.open())
    assert [cp.data for cp in reader] == [{"i": 1}]
    with pytest.raises(RunStateError, match="has ended"):
        reader.create("x", {"i": 2})
    with pytest.raises(RunStateError, match="has ended"):
        reader.clear()


def test_a_run_of_another_adapter_is_refused(backend: Backend) -> None:
    archive = backend.open()
    archive.start_run(agent="someone", run_id="taken").checkpoint("x", {})
    with pytest.raises(InvalidInputError, match="not written by the manager adapter"):
        CheckpointManager("taken", archive=archive)


@pytest.mark.slow
def test_a_new_process_on_a_fresh_cache_reads_the_session(shared_backend: Backend) -> None:
    out = run_child(
        shared_backend,
        "compat_child.py",
        {"adapter": "manager", "key": "proc-session", "exit": "close"},
    )
    wrote = json.loads(out)
    mgr = CheckpointManager("proc-session", compress_after=30, archive=shared_backend.open())
    assert mgr.export() == wrote["export"]
    assert len(mgr) < 45  # compressed, as the child's view was
    nxt = mgr.create("plan", {"i": 45})
    assert nxt.id == "proc-session:46"
    assert nxt.timestamp - mgr.get_all()[0].timestamp < timedelta(minutes=5)
    reader = Reader.open(shared_backend.url, **shared_backend.settings)  # type: ignore[arg-type]
    mgr.flush()
    assert reader.index("proc-session").last_seq == 46
