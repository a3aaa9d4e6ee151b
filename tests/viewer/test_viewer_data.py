"""The viewer's data layer: timeline, gaps, lanes, diffs, runs rows; on records built
by hand and on a real archive with a dropping policy."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from runarchive import Archive, Policy, Reader
from runarchive.format.model import Checkpoint, Event
from runarchive.viewer.data import (
    diff,
    gaps,
    previous_checkpoint,
    record_page,
    runs_page,
    timeline,
    verify_summary,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def ckpt(seq: int, name: str, state: object) -> Checkpoint:
    return Checkpoint(run="r", seq=seq, ts=T0 + timedelta(seconds=seq), name=name, state=state)


def event(seq: int, kind: str, lane: str = "main") -> Event:
    return Event(run="r", seq=seq, ts=T0 + timedelta(seconds=seq), kind=kind, lane=lane)


def test_gaps_are_the_missing_seqs_as_ranges() -> None:
    assert gaps([1, 2, 5, 6, 9], 9) == [[3, 4], [7, 8]]
    assert gaps([3], 5) == [[1, 2], [4, 5]]
    assert gaps([], 0) == []
    assert gaps([1, 2, 3], 3) == []


def test_diff_names_added_removed_and_changed_paths() -> None:
    before = {"a": 1, "b": {"c": [1, 2, 3], "d": "x"}, "gone": True, "s/l": 0}
    after = {"a": 1, "b": {"c": [1, 9], "d": "x"}, "new": None, "s/l": 1}
    assert diff(before, after) == [
        {"op": "changed", "path": "/b/c/1"},
        {"op": "removed", "path": "/b/c/2"},
        {"op": "removed", "path": "/gone"},
        {"op": "changed", "path": "/s~1l"},
        {"op": "added", "path": "/new"},
    ]
    assert diff({"x": 1}, {"x": 1}) == []
    # 1 and True are equal in Python but not the same JSON value
    assert diff([1], [True]) == [{"op": "changed", "path": "/0"}]
    assert diff(1, "1") == [{"op": "changed", "path": ""}]


def test_record_page_diffs_against_the_previous_checkpoint_of_the_same_name() -> None:
    records = [
        ckpt(1, "plan", {"step": 1}),
        ckpt(2, "act", {"tool": "a"}),
        event(3, "tool_call", "tools"),
        ckpt(4, "plan", {"step": 2, "note": "x"}),
    ]
    found, prev = previous_checkpoint(records, 4)
    assert found is records[3]
    assert prev is records[0]
    page = record_page(found, prev)
    assert page["previous_seq"] == 1
    assert page["diff"] == [
        {"op": "changed", "path": "/step"},
        {"op": "added", "path": "/note"},
    ]
    assert page["record"]["state"] == {"step": 2, "note": "x"}
    first, none = previous_checkpoint(records, 2)
    assert first is records[1]
    assert none is None
    assert record_page(first)["diff"] is None
    assert previous_checkpoint(records, 99) == (None, None)


def test_a_real_run_timeline_has_lanes_labels_and_policy_gaps(
    archive_factory: Callable[..., Archive],
) -> None:
    archive = archive_factory(max_segment_records=4, policy=Policy(keep_last=1))
    with archive.start_run(agent="viewer-a", run_id="run-view", metadata={"k": "v"}) as run:
        for i in range(6):
            run.checkpoint("plan" if i % 2 else "act", {"i": i})
            if i % 2:
                run.event("tool_call", {"i": i}, lane="tools")
        run.complete({"answer": 42})
    archive.flush()
    with Reader.open(archive.url) as reader:
        index = reader.index("run-view")
        records = list(reader.iter_records("run-view"))
        page = timeline(index, records)
        rows = runs_page(reader.list_runs(), interrupted=["run-view"])
        summary = verify_summary(reader.verify("run-view"))
    assert page["run_id"] == "run-view"
    assert page["status"] == "completed"
    assert page["result"] == {"answer": 42}
    assert page["metadata"] == {"k": "v"}
    assert page["lanes"] == ["checkpoints", "tools"]
    assert page["thread"] is None  # not a LangGraph thread (test_viewer_thread.py)
    seqs = [r["seq"] for r in page["records"]]
    assert seqs == sorted(seqs) == [r.seq for r in records]
    assert {r["label"] for r in page["records"]} == {"act", "plan", "tool_call"}
    # keep_last=1 drops checkpoints: every missing seq is in exactly one gap
    missing = set(range(1, index.last_seq + 1)) - set(seqs)
    assert missing, "the policy should have dropped some checkpoints"
    assert {s for a, b in page["gaps"] for s in range(a, b + 1)} == missing
    (row,) = rows["runs"]
    assert row["run_id"] == "run-view"
    assert row["agent"] == "viewer-a"
    assert row["records"] == len(records)
    assert row["interrupted"] is True
    assert summary["ok"] is True
    assert summary["problems"] == []
    json.dumps([page, rows, summary])  # JSON values only
