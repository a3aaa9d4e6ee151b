"""Trust, LangGraph side: ArchiveSaver on two hosts sharing one SeaweedFS bucket,
driven by real compiled StateGraphs.

* A thread new to a host is claimed in the bucket (create-only) before its first record
  is acknowledged: of two hosts creating one thread, the loser gets RunExistsError at
  its first put and has acknowledged nothing.
* A read (get_tuple, list, get_state, restore, ``runarchive show``) never takes a thread
  over: the owner keeps writing.
* Reads are never stale: a host whose cache holds an old copy of a thread another host
  continued sees the continuation; at most one conditional GET of the index per read
  when nothing changed, none on the host that owns and writes the thread.
"""

from __future__ import annotations

import base64
import copy
import operator
from collections.abc import Sequence
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import ChannelVersions, CheckpointMetadata
from langgraph.checkpoint.base import Checkpoint as LGCheckpoint
from langgraph.checkpoint.conformance.test_utils import generate_checkpoint, generate_metadata
from langgraph.graph import END, START, StateGraph
from support.trust import Hosts, cli, run_exists_error

from runarchive import Archive
from runarchive.errors import InvalidInputError
from runarchive.format.codec import index_key
from runarchive.format.model import Checkpoint
from runarchive.langgraph import ArchiveSaver

pytestmark = pytest.mark.real_server

T = "T"
CONFIG: RunnableConfig = {"configurable": {"thread_id": T}}
RUN_ID = "lg-T"


class RecordingSaver(ArchiveSaver):
    """An ArchiveSaver that notes every put/put_writes that returned (was acknowledged):
    checkpoint id -> (parent id, channel values)."""

    def __init__(self, archive: Archive) -> None:
        super().__init__(archive)
        self.acked: dict[str, tuple[str | None, dict[str, Any]]] = {}
        self.acked_writes = 0

    def put(
        self,
        config: RunnableConfig,
        checkpoint: LGCheckpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        out = super().put(config, checkpoint, metadata, new_versions)
        parent = config["configurable"].get("checkpoint_id")
        self.acked[checkpoint["id"]] = (parent, copy.deepcopy(checkpoint["channel_values"]))
        return out

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        super().put_writes(config, writes, task_id, task_path)
        self.acked_writes += 1


class Counter(TypedDict):
    n: int
    stop: int
    log: Annotated[list[str], operator.add]


def counter_graph(saver: ArchiveSaver, tag: str) -> Any:
    """START -> step (loops until n reaches stop) -> END. An invoke on a new thread with
    n=0 writes stop + 2 checkpoints; one on an existing thread writes stop - n + 2."""

    def step(state: Counter) -> dict[str, Any]:
        return {"n": state["n"] + 1, "log": [f"{tag}{state['n']}"]}

    g = StateGraph(Counter)
    g.add_node("step", step)
    g.add_edge(START, "step")
    g.add_conditional_edges("step", lambda s: END if s["n"] >= s["stop"] else "step")
    return g.compile(checkpointer=saver)


def bucket_checkpoints(hosts: Hosts, serde: Any) -> dict[str, tuple[str | None, dict[str, Any]]]:
    """A fresh host's restore of the thread's run: checkpoint id -> (parent, values)."""
    restored = hosts.reader().restore(RUN_ID)
    assert [r.seq for r in restored.records] == list(range(1, len(restored.records) + 1))
    out = {}
    for rec in restored.records:
        if isinstance(rec, Checkpoint):
            blob = rec.state["checkpoint"]
            cp = serde.loads_typed((blob["type"], base64.b64decode(blob["b64"])))
            out[rec.state["checkpoint_id"]] = (
                rec.state["parent_checkpoint_id"],
                cp["channel_values"],
            )
    return out


def ids_newest_first(saver: ArchiveSaver) -> list[str]:
    return [str(t.config["configurable"]["checkpoint_id"]) for t in saver.list(CONFIG)]


def latest_id(saver: ArchiveSaver) -> str | None:
    tup = saver.get_tuple(CONFIG)
    return None if tup is None else str(tup.config["configurable"]["checkpoint_id"])


# -- 1. two hosts, one new thread ------------------------------------------------------------


def put_direct(saver: ArchiveSaver, parent: str | None, i: int) -> str:
    """saver.put of one checkpoint on T (child of ``parent``), as LangGraph does."""
    config: RunnableConfig = {"configurable": {"thread_id": T, "checkpoint_ns": ""}}
    if parent is not None:
        config["configurable"]["checkpoint_id"] = parent
    cp = generate_checkpoint(channel_values={"n": i, "host": "b"})
    cp["channel_versions"] = {"n": i + 1, "host": 1}
    out = saver.put(config, cp, generate_metadata(step=i), dict(cp["channel_versions"]))
    return str(out["configurable"]["checkpoint_id"])


@pytest.mark.parametrize(
    ("b_checkpoints", "durability", "b_by"),
    [(3, "local", "graph"), (5, "local", "graph"), (3, "remote", "put")],
    ids=["3+3", "3+5", "3+3-remote"],
)
def test_two_hosts_creating_one_thread_the_loser_is_refused_and_nothing_acked_is_lost(
    hosts: Hosts, b_checkpoints: int, durability: str, b_by: str
) -> None:
    """get_tuple(T) is None on both hosts; A writes 3 checkpoints on T, then B writes
    its own. Today both are acknowledged, and B's first records vanish from the bucket
    (B's flush adopts A's index as its own: a fresh host sees A's 3 only; with 5, B's
    last ones hang after A's with their parent missing); with durability="remote" B
    silently takes A's thread over. New: B's first put raises RunExistsError, B has
    acknowledged nothing, and the bucket holds exactly A's checkpoints.

    In the remote case B writes with saver.put (its first put has no parent, as after
    its get_tuple returned None): a graph on B would re-read T first and see A's
    checkpoints, already in the bucket, and continuing those is a legitimate takeover.
    """
    a = hosts.open("host-a", durability=durability)
    b = hosts.open("host-b", durability=durability)
    sa, sb = RecordingSaver(a), RecordingSaver(b)
    assert sa.get_tuple(CONFIG) is None
    assert sb.get_tuple(CONFIG) is None

    counter_graph(sa, "a").invoke({"n": 0, "stop": 1, "log": []}, CONFIG)
    assert len(sa.acked) == 3
    refused: Exception | None = None
    try:
        if b_by == "graph":
            counter_graph(sb, "b").invoke({"n": 0, "stop": b_checkpoints - 2, "log": []}, CONFIG)
        else:
            parent = None
            for i in range(b_checkpoints):
                parent = put_direct(sb, parent, i)
    except Exception as exc:
        refused = exc
    b_status = [r for r in b.status().runs if r.run_id == RUN_ID]
    a.flush()
    b.flush()
    a.close()
    b.close()

    held = bucket_checkpoints(hosts, sa.serde)
    acked = {**sa.acked, **sb.acked}
    missing = sorted(set(acked) - set(held))
    assert missing == [], f"{len(missing)} acknowledged checkpoints not in the bucket: {missing}"
    for cid, (parent, values) in acked.items():
        assert held[cid] == (parent, values), cid
    orphans = [
        cid for cid, (parent, _) in held.items() if parent is not None and parent not in held
    ]
    assert orphans == [], "checkpoints whose parent is not in the bucket"

    exists = run_exists_error()
    assert isinstance(refused, exists), (
        f"host-b was not refused: {refused!r}, acked {len(sb.acked)}"
    )
    assert issubclass(exists, InvalidInputError)
    assert (len(sb.acked), sb.acked_writes) == (0, 0)
    assert [r.last_seq for r in b_status] in ([], [0])  # nothing recorded on host-b
    assert held == sa.acked  # exactly A's checkpoints
    sc = ArchiveSaver(hosts.open("host-c"))  # a fresh host, through the saver
    assert ids_newest_first(sc) == sorted(sa.acked, reverse=True)
    assert counter_graph(sc, "c").get_state(CONFIG).values == {"n": 1, "stop": 1, "log": ["a0"]}


# -- 2. a read never takes a thread over -------------------------------------------------------


def test_a_read_never_takes_a_thread_over(hosts: Hosts) -> None:
    """Host B reads thread T (get_tuple, list, get_state, restore, ``runarchive show``)
    while host A runs it. Today B's first get_tuple takes T over (archive.resume: epoch
    + 1) and A's next flush raises FencedError. New: T's index (epoch, owner) and its
    manifest entry do not change; A continues and flushes; everyone sees A's work."""
    a = hosts.open("host-a")
    sa = RecordingSaver(a)
    ga = counter_graph(sa, "a")
    ga.invoke({"n": 0, "stop": 1, "log": []}, CONFIG)
    a.flush()
    reader = hosts.reader()
    before = reader.index(RUN_ID)
    assert before.owner_host == "host-a"

    def unchanged(after_what: str) -> None:
        index = reader.index(RUN_ID)
        assert (index.epoch, index.owner_host) == (before.epoch, "host-a"), after_what
        (entry,) = [e for e in reader.list_runs(limit=None) if e.run_id == RUN_ID]
        assert (entry.epoch, entry.owner_host) == (before.epoch, "host-a"), after_what

    b = hosts.open("host-b")
    sb = ArchiveSaver(b)
    a_ids = sorted(sa.acked, reverse=True)
    assert latest_id(sb) == a_ids[0]
    unchanged("host-b's get_tuple")
    assert ids_newest_first(sb) == a_ids
    unchanged("host-b's list")
    assert counter_graph(sb, "b").get_state(CONFIG).values == {"n": 1, "stop": 1, "log": ["a0"]}
    unchanged("host-b's graph.get_state")
    restored = b.restore(RUN_ID)
    assert len(restored.checkpoints) == 3
    unchanged("host-b's archive.restore")
    assert cli("--url", hosts.url, "show", RUN_ID) == 0
    unchanged("runarchive show")

    # A, still the owner, continues: 3 more checkpoints, flushed without FencedError.
    ga.invoke({"n": 5, "stop": 6, "log": []}, CONFIG)
    assert len(sa.acked) == 6
    a.flush()
    after = reader.index(RUN_ID)
    assert (after.epoch, after.owner_host) == (before.epoch, "host-a")
    assert bucket_checkpoints(hosts, sa.serde) == sa.acked
    # And B, reading again, sees A's continuation.
    assert latest_id(sb) == max(sa.acked)
    assert counter_graph(sb, "b").get_state(CONFIG).values == {
        "n": 6,
        "stop": 6,
        "log": ["a0", "a5"],
    }


# -- 3. no stale cached reads; what a read costs --------------------------------------------------


def test_reads_are_never_stale_and_cost_at_most_one_conditional_get(hosts: Hosts) -> None:
    """A runs T (5 checkpoints) and closes; B continues it (5 more) and closes; A reopens
    its cache: get_tuple/list/get_state must show B's 10 checkpoints. Today A's cache
    answers with its own 5. Cost: the owner that writes T makes 0 requests per read; a
    host that does not own T makes at most 1 (a conditional GET of T's index) when
    nothing changed."""
    a = hosts.open("host-a")
    sa = RecordingSaver(a)
    counter_graph(sa, "a").invoke({"n": 0, "stop": 3, "log": []}, CONFIG)
    assert len(sa.acked) == 5
    a.close()

    b = hosts.open("host-b", counting=True)
    sb = RecordingSaver(b)
    gb = counter_graph(sb, "b")
    gb.invoke({"n": 10, "stop": 13, "log": []}, CONFIG)
    assert len(sb.acked) == 5
    final = {"n": 13, "stop": 13, "log": ["a0", "a1", "a2", "b10", "b11", "b12"]}
    b.store.reset()
    for _ in range(3):
        assert latest_id(sb) == max(sb.acked)
    assert len(ids_newest_first(sb)) == 10
    assert gb.get_state(CONFIG).values == final
    assert b.store.total == 0, f"the owner's reads made requests: {list(b.store.recent)}"
    b.close()

    all_ids = sorted({**sa.acked, **sb.acked}, reverse=True)
    assert bucket_checkpoints(hosts, sa.serde) == {**sa.acked, **sb.acked}
    a2 = hosts.open("host-a", counting=True)  # the same cache directory as before
    sa2 = ArchiveSaver(a2)
    ga2 = counter_graph(sa2, "a")
    assert latest_id(sa2) == all_ids[0], "host-a read its stale cached copy of T"
    assert ids_newest_first(sa2) == all_ids
    assert ga2.get_state(CONFIG).values == final

    index = index_key(RUN_ID)
    for what, read, want in (
        ("get_tuple", lambda: latest_id(sa2), all_ids[0]),
        ("list", lambda: ids_newest_first(sa2), all_ids),
        ("get_state", lambda: ga2.get_state(CONFIG).values, final),
    ):
        a2.store.reset()
        assert read() == want, what
        made = list(a2.store.recent)
        assert len(made) <= 1, f"{what} on a thread this host does not own: {made}"
        assert all(op == "get" and key == index for op, key in made), (what, made)
