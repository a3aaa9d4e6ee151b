"""A LangGraph thread in the viewer: a real thread written by ``ArchiveSaver`` (root
and subgraph namespaces, parents, pending writes, a prune) as the data layer, the
server and ``report.html`` show it; and hostile record shapes, shown as text."""

from __future__ import annotations

import base64
import http.client
import json
import pickle
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.conformance.test_utils import (
    generate_checkpoint,
    generate_config,
    generate_metadata,
)
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.checkpoint.serde.types import ERROR

from runarchive import Archive, Policy, Reader
from runarchive.format.lgshapes import THREAD_KEY, TOMBSTONE_KIND, WRITES_KIND
from runarchive.format.model import Checkpoint, Event
from runarchive.langgraph import ArchiveSaver
from runarchive.viewer.data import timeline
from runarchive.viewer.lgthread import JSON_LIMIT, TEXT_LIMIT, thread_view, typed_value
from runarchive.viewer.server import serving

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def put(
    saver: ArchiveSaver,
    tid: str,
    parent: RunnableConfig | None = None,
    *,
    ns: str = "",
    **meta: Any,
) -> RunnableConfig:
    config = generate_config(tid, checkpoint_ns=ns)
    if parent is not None:
        config["configurable"]["checkpoint_id"] = parent["configurable"]["checkpoint_id"]
    cp = generate_checkpoint(channel_values={"n": 1})
    return saver.put(config, cp, generate_metadata(**meta), {})


def cid(config: RunnableConfig) -> str:
    return str(config["configurable"]["checkpoint_id"])


def write_a_thread(archive: Archive) -> dict[str, RunnableConfig]:
    """Thread ``ticket-7``: two root checkpoints, a subgraph ``child:1`` of two under
    the second, pending writes (one on a special channel, written twice), then a
    ``keep_latest`` prune that hides the first of each namespace."""
    saver = ArchiveSaver(archive)
    c1 = put(saver, "ticket-7", source="input", step=-1)
    c2 = put(saver, "ticket-7", c1, source="loop", step=0, writes={"agent": {"x": 1}})
    s1 = put(saver, "ticket-7", ns="child:1", step=0, parents={"": cid(c2)})
    s2 = put(saver, "ticket-7", s1, ns="child:1", step=1, parents={"": cid(c2)})
    saver.put_writes(c2, [("messages", {"role": "ai"}), ("count", 3)], "task-a", "p:0")
    saver.put_writes(c2, [(ERROR, "first")], "task-b")
    saver.put_writes(c2, [(ERROR, "second")], "task-b")  # replaces the first
    saver.put_writes(s1, [("sub", b"raw")], "task-s")
    saver.prune(["ticket-7"], strategy="keep_latest")
    return {"c1": c1, "c2": c2, "s1": s1, "s2": s2}


def saver_bytes(value: Any) -> bytes:
    return JsonPlusSerializer().dumps_typed(value)[1]


def seq_of(records: list[Checkpoint | Event], checkpoint_id: str) -> int:
    (seq,) = [
        r.seq
        for r in records
        if isinstance(r, Checkpoint) and r.state["checkpoint_id"] == checkpoint_id
    ]
    return seq


def test_a_real_thread_grouped_by_namespace_with_parents_writes_and_tombstones(
    archive_factory: Callable[..., Archive], tmp_path: Path
) -> None:
    archive = archive_factory(policy=Policy(keep_all=True))
    ids = write_a_thread(archive)
    with archive.start_run(agent="plain", run_id="run-plain") as run:
        run.checkpoint("plan", {"checkpoint_id": "looks like one"})
    archive.flush()
    rid = ArchiveSaver(archive).run_id_for("ticket-7")
    with Reader.open(archive.url) as reader:
        records = list(reader.iter_records(rid))
        page = timeline(reader.index(rid), records)
        plain = timeline(reader.index("run-plain"), list(reader.iter_records("run-plain")))
        dest = tmp_path / "bundle"
        reader.export([rid], dest=dest, progress=lambda done, total: None)
    assert plain["thread"] is None  # not written by the adapter
    thread = page["thread"]
    json.dumps(thread)  # JSON values only
    assert thread["thread_id"] == "ticket-7"
    assert thread["problems"] == []
    assert thread["unattached_writes"] == []
    assert [(g["ns"], g["label"]) for g in thread["namespaces"]] == [
        ("", "root"),
        ("child:1", "child:1"),
    ]
    root, sub = (g["checkpoints"] for g in thread["namespaces"])
    seq = {name: seq_of(records, cid(c)) for name, c in ids.items()}

    c1, c2 = root
    assert (c1["checkpoint_id"], c1["seq"]) == (cid(ids["c1"]), seq["c1"])
    assert (c1["parent_id"], c1["parent_seq"]) == (None, None)
    assert (c1["step"], c1["source"]) == (-1, "input")
    assert (c2["parent_id"], c2["parent_seq"]) == (cid(ids["c1"]), seq["c1"])
    assert (c2["step"], c2["source"], c2["writes"]) == (0, "loop", ["agent"])
    # LangGraph's serialiser writes msgpack: shown as type and size, not decoded
    assert c2["metadata"]["type"] == "msgpack"
    assert c2["metadata"]["bytes"] > 0
    assert "json" not in c2["metadata"]
    writes = [(w["task_id"], w["channel"], w["idx"]) for w in c2["pending_writes"]]
    assert writes == [("task-a", "messages", 0), ("task-a", "count", 1), ("task-b", ERROR, -1)]
    error = c2["pending_writes"][2]
    assert error["value"]["type"] == "msgpack"
    assert error["value"]["bytes"] == len(saver_bytes("second"))
    assert c1["pending_writes"] == []

    s1, s2 = sub
    assert (s2["parent_id"], s2["parent_seq"]) == (cid(ids["s1"]), seq["s1"])
    assert s1["parents"] == [{"ns": "", "checkpoint_id": cid(ids["c2"]), "seq": seq["c2"]}]
    assert [(w["channel"], w["task_path"]) for w in s1["pending_writes"]] == [("sub", "")]
    assert s1["pending_writes"][0]["value"]["type"] == "bytes"
    assert s1["pending_writes"][0]["value"]["bytes"] == 3

    # keep_latest hid the older checkpoint of each namespace from LangGraph; the
    # archive keeps them, and the view marks them with the tombstone's seq and reason
    (tomb,) = [r.seq for r in records if isinstance(r, Event) and r.kind == TOMBSTONE_KIND]
    hidden = {"seq": tomb, "reason": "prune:keep_latest"}
    assert [c["tombstoned"] for c in (c1, c2, s1, s2)] == [hidden, None, hidden, None]

    # report.html embeds the same view as the server's
    report = (dest / "report.html").read_text()
    (block,) = re.findall(r'<script type="application/json" id="data">(.*?)</script>', report, re.S)
    assert json.loads(block)["run_pages"][rid]["thread"] == thread


def test_the_server_answers_the_thread_with_the_run(
    archive_factory: Callable[..., Archive],
) -> None:
    archive = archive_factory(policy=Policy(keep_all=True))
    write_a_thread(archive)
    archive.flush()
    rid = ArchiveSaver(archive).run_id_for("ticket-7")
    with Reader.open(archive.url) as reader, serving(reader) as port:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", f"/api/run?id={rid}")
        res = conn.getresponse()
        body = json.loads(res.read())
        conn.close()
    assert res.status == 200
    assert [g["label"] for g in body["thread"]["namespaces"]] == ["root", "child:1"]


# -- hostile shapes --------------------------------------------------------------------

UNPICKLED: list[str] = []


def _boom() -> None:
    UNPICKLED.append("ran")  # pragma: no cover  (what must never happen)


class Trap:
    def __reduce__(self) -> tuple[Any, ...]:
        return (_boom, ())


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def typed(kind: str, raw: bytes) -> dict[str, str]:
    return {"type": kind, "b64": b64(raw)}


def ckpt(seq: int, state: Any, metadata: dict[str, Any] | None = None) -> Checkpoint:
    ts = T0 + timedelta(seconds=seq)
    return Checkpoint(run="r", seq=seq, ts=ts, name="root", state=state, metadata=metadata or {})


def event(seq: int, kind: str, data: Any) -> Event:
    return Event(run="r", seq=seq, ts=T0 + timedelta(seconds=seq), kind=kind, data=data)


HOSTILE = '<script>window.pwned=1</script>"><img src=x onerror="window.pwned=1">'
HUGE = "x" * 1_000_000


def test_hostile_shapes_never_crash_and_are_shown_as_text() -> None:
    nested = b"[" * 2000 + b"]" * 2000  # within JSON_LIMIT, deeper than json allows
    assert len(nested) <= JSON_LIMIT
    records: list[Checkpoint | Event] = [
        ckpt(1, "just text"),
        ckpt(2, {"checkpoint_ns": ""}),  # no checkpoint_id
        ckpt(
            3,
            {
                "checkpoint_id": ["a", 1],
                "checkpoint_ns": 5,
                "parent_checkpoint_id": {"x": 1},
                "metadata": "not typed",
            },
            {"step": True, "source": ["s"], "writes": "w", "parents": "p"},
        ),
        ckpt(
            4,
            {
                "checkpoint_id": HUGE,
                "metadata": typed(
                    "json",
                    json.dumps({"step": 3, "source": HOSTILE, "writes": {HOSTILE: 1}}).encode(),
                ),
            },
        ),
        ckpt(
            5,
            {
                "checkpoint_id": "c5",
                "parent_checkpoint_id": HUGE,
                "metadata": typed("pickle", pickle.dumps(Trap())),
            },
        ),
        event(6, WRITES_KIND, {"checkpoint_ns": "", "checkpoint_id": "c5", "writes": "nope"}),
        event(
            7,
            WRITES_KIND,
            {
                "checkpoint_id": "c5",
                "task_id": HUGE,
                "writes": [
                    "not an object",
                    {"idx": "7", "channel": HOSTILE, "value": typed("pickle", b"\x80")},
                    {"idx": 1, "channel": 2, "value": {"type": "json", "b64": "%%%"}},
                    {"idx": 2, "channel": "big", "value": typed("json", b"1" * (JSON_LIMIT + 1))},
                    {"idx": 3, "channel": "deep", "value": typed("json", nested)},
                    {"idx": 4, "channel": "ok", "value": typed("json", b'{"a": [1]}')},
                    {"idx": 5, "channel": "none", "value": typed("null", b"")},
                    {"idx": 6, "channel": "raw", "value": None},
                ],
            },
        ),
        event(8, WRITES_KIND, {"checkpoint_id": "nobody", "task_id": "t", "writes": [{}]}),
        event(9, WRITES_KIND, None),
        event(10, TOMBSTONE_KIND, {"checkpoints": "all"}),
        event(11, TOMBSTONE_KIND, {"reason": HOSTILE, "checkpoints": [["", "c5"], "bad", 3]}),
        event(12, "lg.unknown", {"anything": 1}),
    ]
    view = thread_view({THREAD_KEY: ["not", "text"]}, records)
    assert view is not None
    json.dumps(view)
    assert view["thread_id"] == '["not", "text"]'
    assert [p["seq"] for p in view["problems"]] == [1, 2, 6, 7, 9, 10, 11, 11]
    assert all(isinstance(p["message"], str) for p in view["problems"])

    groups = {g["label"]: g["checkpoints"] for g in view["namespaces"]}
    assert list(groups) == ["root", "5"]  # the root first, then namespaces as text
    (c3,) = groups["5"]
    assert c3["checkpoint_id"] == '["a", 1]'
    assert c3["parent_id"] == '{"x": 1}'
    assert c3["parent_seq"] is None
    assert (c3["step"], c3["source"], c3["writes"], c3["parents"]) == ("true", '["s"]', None, [])
    assert c3["metadata"]["type"] is None
    assert "not a serialised value" in c3["metadata"]["error"]

    c4, c5 = groups["root"]
    cut = f"… ({len(HUGE)} characters)"
    assert c4["checkpoint_id"] == "x" * TEXT_LIMIT + cut
    # a json-typed metadata is decoded (small), and its fields are shown as text
    assert (c4["step"], c4["source"], c4["writes"]) == (3, HOSTILE, [HOSTILE])
    assert c5["parent_id"] == "x" * TEXT_LIMIT + cut
    assert c5["metadata"] == {"type": "pickle", "bytes": len(pickle.dumps(Trap()))}
    assert UNPICKLED == []  # never unpickled
    assert c5["tombstoned"] == {"seq": 11, "reason": HOSTILE}

    values = {w["channel"]: w for w in c5["pending_writes"]}
    assert list(values) == [HOSTILE, "2", "big", "deep", "ok", "none", "raw"]
    assert values[HOSTILE]["idx"] == "7"  # as text, not a number
    assert values[HOSTILE]["task_id"] == "x" * TEXT_LIMIT + cut
    assert values[HOSTILE]["value"] == {"type": "pickle", "bytes": 1}
    assert values["2"]["value"]["error"] == "payload is not base64"
    assert values["big"]["value"] == {"type": "json", "bytes": JSON_LIMIT + 1}
    assert values["deep"]["value"]["error"] == "payload is not JSON"
    assert values["ok"]["value"] == {"type": "json", "bytes": 10, "json": {"a": [1]}}
    assert values["none"]["value"] == {"type": "null", "bytes": 0, "json": None}
    assert "error" in values["raw"]["value"]

    (orphan,) = view["unattached_writes"]
    assert (orphan["checkpoint_id"], orphan["channel"], orphan["seq"]) == ("nobody", "null", 8)


def test_other_runs_have_no_thread() -> None:
    records = [ckpt(1, {"checkpoint_id": "c1"})]
    assert thread_view({}, records) is None
    assert thread_view(None, records) is None
    assert thread_view("metadata", records) is None
    assert thread_view({THREAD_KEY: None}, records) is None
    empty = thread_view({THREAD_KEY: "t"}, [])
    assert empty is not None
    assert (empty["thread_id"], empty["namespaces"], empty["problems"]) == ("t", [], [])


def test_typed_value_sizes_without_decoding() -> None:
    assert typed_value(typed("msgpack", b"\x93\x01\x02\x03")) == {"type": "msgpack", "bytes": 4}
    assert typed_value({"type": HUGE, "b64": ""})["type"].endswith(f"({len(HUGE)} characters)")
