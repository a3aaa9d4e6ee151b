"""ArchiveSaver: LangGraph's conformance suite (real S3 server), unit tests, restarts."""

from __future__ import annotations

import asyncio
import json
import operator
import os
import subprocess
import sys
import threading
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import CheckpointTuple
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import ALL_CAPABILITIES
from langgraph.checkpoint.conformance.test_utils import (
    generate_checkpoint,
    generate_config,
    generate_metadata,
)
from langgraph.checkpoint.serde.types import ERROR
from langgraph.graph import END, START, StateGraph
from support import CHILDREN
from support.backends import Backend

from runarchive import Archive, InvalidInputError, Policy, Reader
from runarchive.format.codec import index_key, run_prefix
from runarchive.format.model import validate_run_id
from runarchive.langgraph import ArchiveSaver

ROOT = Path(__file__).resolve().parents[2]
CHILD = CHILDREN / "langgraph_child.py"
EXAMPLE = ROOT / "examples" / "langgraph_resume.py"
ArchiveFactory = Callable[..., Archive]


def put(
    saver: ArchiveSaver,
    tid: str,
    parent: RunnableConfig | None = None,
    *,
    ns: str = "",
    values: dict[str, Any] | None = None,
    **meta: Any,
) -> RunnableConfig:
    """Put one checkpoint (child of ``parent``) and return its config."""
    config = generate_config(tid, checkpoint_ns=ns)
    if parent is not None:
        config["configurable"]["checkpoint_id"] = parent["configurable"]["checkpoint_id"]
    cp = generate_checkpoint(channel_values=values or {})
    cp["channel_versions"] = dict.fromkeys(values or {}, 1)
    return saver.put(config, cp, generate_metadata(**meta), dict(cp["channel_versions"]))


def cid(config: RunnableConfig | CheckpointTuple) -> str:
    conf = config.config if isinstance(config, CheckpointTuple) else config
    return str(conf["configurable"]["checkpoint_id"])


def ids(saver: ArchiveSaver, config: RunnableConfig | None, **kw: Any) -> list[str]:
    return [cid(t) for t in saver.list(config, **kw)]


# -- the conformance suite ---------------------------------------------------------


ENCRYPTED = {"encryption": "local", "encryption_keys": "k1=" + "A" * 43 + "="}


@pytest.mark.real_server
@pytest.mark.parametrize(
    ("backend", "settings"),
    [("file", {}), ("seaweedfs", {}), ("file", ENCRYPTED)],
    indirect=["backend"],
    ids=["file", "seaweedfs", "file-encrypted"],
)
def test_conformance_suite_all_capabilities(backend: Backend, settings: dict[str, Any]) -> None:
    """langgraph-checkpoint-conformance 0.0.2: 8 capabilities, 81 tests, 0 failures
    (also with client-side encryption on)."""

    @checkpointer_test(name=f"ArchiveSaver[{backend.name}]")
    async def factory() -> AsyncGenerator[ArchiveSaver, None]:
        archive = backend.open(**settings)  # a fresh cache directory per capability suite
        try:
            yield ArchiveSaver(archive)
        finally:
            archive.close()

    report = asyncio.run(validate(factory))
    results = report.results
    failures = {name: r.failures for name, r in results.items() if r.tests_failed}
    assert not failures, json.dumps(failures, indent=1)
    detected = {name for name, r in results.items() if r.detected}
    assert detected == {c.value for c in ALL_CAPABILITIES}
    assert all(r.passed for r in results.values())
    assert sum(r.tests_passed for r in results.values()) == 81
    assert report.conformance_level() == "FULL"


# -- unit tests --------------------------------------------------------------------


@pytest.fixture
def saver(archive_factory: ArchiveFactory) -> ArchiveSaver:
    return ArchiveSaver(archive_factory())


def test_roundtrip_and_what_the_bucket_holds(saver: ArchiveSaver) -> None:
    values = {"msgs": [{"role": "human"}], "raw": b"\x00\x01", "tags": {"a", "b"}}
    c1 = put(saver, "t-1", values=values, source="input", step=-1, note="x")
    c2 = put(saver, "t-1", c1, step=0, obj=object.__name__)
    tup = saver.get_tuple(c2)
    assert tup is not None
    assert tup.config == {
        "configurable": {"thread_id": "t-1", "checkpoint_ns": "", "checkpoint_id": cid(c2)}
    }
    assert tup.parent_config is not None
    assert cid(tup.parent_config) == cid(c1)
    assert tup.pending_writes == []
    first = saver.get_tuple(c1)
    assert first is not None
    assert first.parent_config is None
    assert first.checkpoint["channel_values"] == values  # bytes, sets survive (LangGraph's serde)
    assert first.metadata["note"] == "x"
    assert first.metadata["source"] == "input"

    archive = saver.archive
    archive.flush()
    restored = archive.restore("lg-t-1")
    assert restored.index.metadata == {"langgraph_thread_id": "t-1"}
    assert restored.index.policy == Policy(keep_all=True).model_dump()
    rec = restored.checkpoints[0]
    assert rec.name == "root"
    assert rec.metadata["checkpoint_id"] == cid(c1)
    assert rec.metadata["note"] == "x"
    assert rec.state["parent_checkpoint_id"] is None
    assert rec.state["checkpoint"]["type"] == "msgpack"
    assert restored.checkpoints[1].state["parent_checkpoint_id"] == cid(c1)


def test_thread_ids_map_to_valid_deterministic_run_ids(
    saver: ArchiveSaver, archive_factory: ArchiveFactory
) -> None:
    assert saver.run_id_for("ticket-42") == "lg-ticket-42"
    odd = ["a/b", "..", "x" * 200, "sha256-abc", "ü", " "]
    run_ids = {saver.run_id_for(t) for t in odd}
    assert len(run_ids) == len(odd)
    for tid in odd:
        run_id = saver.run_id_for(tid)
        assert validate_run_id(run_id)
        assert run_id.startswith("lg-sha256-")
        assert run_id == ArchiveSaver(saver.archive).run_id_for(tid)
        put(saver, tid, step=1)
        tup = saver.get_tuple(generate_config(tid))
        assert tup is not None
        assert tup.config["configurable"]["thread_id"] == tid
    # A run with that id that is not this thread's is refused, not mixed up.
    saver.archive.start_run("langgraph", "lg-taken", {"langgraph_thread_id": "other"})
    with pytest.raises(InvalidInputError, match="give this saver another run_prefix"):
        put(saver, "taken")
    with pytest.raises(InvalidInputError, match="thread_id"):
        saver.get_tuple({"configurable": {}})
    with pytest.raises(InvalidInputError):
        ArchiveSaver(saver.archive, run_prefix="a/b")


def test_get_tuple_latest_specific_unknown_and_namespaces(saver: ArchiveSaver) -> None:
    c1 = put(saver, "t", step=0)
    c2 = put(saver, "t", c1, step=1)
    sub = put(saver, "t", ns="child:1", step=5)
    latest = saver.get_tuple(generate_config("t"))
    assert latest is not None
    assert cid(latest) == cid(c2)
    child = saver.get_tuple(generate_config("t", checkpoint_ns="child:1"))
    assert child is not None
    assert cid(child) == cid(sub)
    assert child.metadata["step"] == 5
    assert saver.get_tuple(generate_config("t", checkpoint_ns="child:2")) is None
    assert saver.get_tuple(generate_config("t", checkpoint_id="nope")) is None
    assert (
        saver.get_tuple(generate_config("t", checkpoint_ns="child:1", checkpoint_id=cid(c1)))
        is None
    )
    before = saver.archive.store.total
    assert saver.get_tuple(generate_config("never-written")) is None
    assert saver.archive.store.total - before == 1  # the one GET of its index


def test_list_filters_before_limit_and_namespaces(saver: ArchiveSaver) -> None:
    configs: list[RunnableConfig] = []
    parent = None
    for step in range(5):
        parent = put(saver, "t", parent, step=step, source="loop" if step % 2 else "input")
        configs.append(parent)
    sub = put(saver, "t", ns="child:1", step=9)
    other = put(saver, "u", step=0)
    newest_first = [cid(c) for c in reversed(configs)]
    assert ids(saver, generate_config("t")) == newest_first  # checkpoint_ns "" only
    assert ids(saver, {"configurable": {"thread_id": "t"}}) == sorted(
        [*newest_first, cid(sub)], reverse=True
    )
    assert ids(saver, generate_config("t"), filter={"source": "loop"}) == newest_first[1:4:2]
    assert ids(saver, generate_config("t"), filter={"source": "input", "step": 2}) == [
        newest_first[2]
    ]
    assert ids(saver, generate_config("t"), filter={"missing": 1}) == []
    assert ids(saver, generate_config("t"), before=configs[3]) == newest_first[2:]
    assert ids(saver, generate_config("t"), before=configs[3], limit=1) == [newest_first[2]]
    assert ids(saver, generate_config("t"), limit=0) == []
    assert ids(saver, configs[1]) == [cid(configs[1])]  # checkpoint_id in config
    assert ids(saver, generate_config("nobody")) == []
    everything = ids(saver, None)  # every thread this host holds
    assert set(everything) == {*newest_first, cid(sub), cid(other)}
    assert [t.metadata["step"] for t in saver.list(None, filter={"step": 9})] == [9]


def test_pending_writes(saver: ArchiveSaver) -> None:
    c1 = put(saver, "t", step=0)
    saver.put_writes(c1, [("a", 1), ("b", {"x": [1]})], "task-2", "p:1")
    saver.put_writes(c1, [("a", 1), ("b", "dup")], "task-2", "p:1")  # same (task, idx): kept once
    saver.put_writes(c1, [("c", b"bytes")], "task-1", "p:0")
    saver.put_writes(c1, [(ERROR, "first")], "task-3")
    saver.put_writes(c1, [(ERROR, "second")], "task-3")  # special channels: the last wins
    tup = saver.get_tuple(c1)
    assert tup is not None
    # writes_sort_key order: task_path, then task_id, then index
    assert tup.pending_writes == [
        ("task-3", ERROR, "second"),
        ("task-1", "c", b"bytes"),
        ("task-2", "a", 1),
        ("task-2", "b", {"x": [1]}),
    ]
    listed = next(iter(saver.list(c1)))
    assert listed.pending_writes == tup.pending_writes
    c2 = put(saver, "t", c1, step=1)
    tup2 = saver.get_tuple(c2)
    assert tup2 is not None
    assert tup2.pending_writes == []
    with pytest.raises(InvalidInputError, match="checkpoint_id"):
        saver.put_writes(generate_config("t"), [("a", 1)], "task")
    # Events carry them; a fresh saver (index rebuilt from the cache) sees the same.
    again = ArchiveSaver(saver.archive).get_tuple(c1)
    assert again is not None
    assert again.pending_writes == tup.pending_writes


def test_prune_and_delete_for_runs_hide_but_the_bucket_keeps_history(
    saver: ArchiveSaver, archive_factory: ArchiveFactory
) -> None:
    parent = None
    made = []
    for step in range(4):
        parent = put(saver, "t", parent, step=step, run_id=f"run-{step % 2}")
        made.append(cid(parent))
    sub1 = put(saver, "t", ns="child:1", step=0, run_id="run-0")
    sub2 = put(saver, "t", sub1, ns="child:1", step=1, run_id="run-1")
    saver.put_writes(parent, [("ch", "v")], "task")  # on the newest root checkpoint

    saver.delete_for_runs(["run-0", "not-a-run"])
    assert ids(saver, generate_config("t")) == [made[3], made[1]]
    assert ids(saver, generate_config("t", checkpoint_ns="child:1")) == [cid(sub2)]
    saver.prune(["t", "unknown"], strategy="keep_latest")
    assert ids(saver, generate_config("t")) == [made[3]]
    latest = saver.get_tuple(generate_config("t"))
    assert latest is not None
    assert latest.pending_writes == [("task", "ch", "v")]
    with pytest.raises(InvalidInputError, match="keep_latest"):
        saver.prune(["t"], strategy="oldest")

    archive = saver.archive
    archive.flush()
    run_id = saver.run_id_for("t")
    # The bucket still has every checkpoint; the tombstones are events after them.
    restored = Reader.open(archive.url).restore(run_id)
    assert len(restored.checkpoints) == 6
    tombs = [e for e in restored.events if e.kind == "lg.tombstone"]
    assert [t.data["reason"] for t in tombs] == ["delete_for_runs", "prune:keep_latest"]
    assert sorted(tombs[0].data["checkpoints"]) == sorted(
        [["", made[0]], ["", made[2]], ["child:1", cid(sub1)]]
    )
    # Another host (fresh cache) sees the pruned view, from the bucket.
    archive.close()
    other = ArchiveSaver(archive_factory())
    assert ids(other, generate_config("t")) == [made[3]]
    assert ids(other, generate_config("t", checkpoint_ns="child:1")) == [cid(sub2)]
    other.prune(["t"], strategy="delete")
    assert ids(other, {"configurable": {"thread_id": "t"}}) == []
    assert other.get_tuple(generate_config("t")) is None
    assert len(other.archive.restore(run_id).checkpoints) == 6  # still all there
    again = put(other, "t", step=7)  # the thread goes on
    assert ids(other, generate_config("t")) == [cid(again)]


def test_delete_thread_removes_the_run_from_the_bucket(
    saver: ArchiveSaver, archive_factory: ArchiveFactory
) -> None:
    c1 = put(saver, "t", step=0)
    saver.put_writes(c1, [("a", 1)], "task")
    put(saver, "keep", step=0)
    saver.archive.flush()
    run_id = saver.run_id_for("t")
    assert saver.archive.store.head(index_key(run_id)) is not None
    saver.delete_thread("t")
    assert list(saver.archive.store.list(run_prefix(run_id))) == []
    assert saver.get_tuple(generate_config("t")) is None
    assert saver.archive.cache.run(run_id) is None
    saver.delete_thread("t")  # unknown: no error
    assert ArchiveSaver(archive_factory()).get_tuple(generate_config("t")) is None
    assert saver.get_tuple(generate_config("keep")) is not None
    c2 = put(saver, "t", step=1)  # a new run under the same id
    assert ids(saver, generate_config("t")) == [cid(c2)]


def test_copy_thread(saver: ArchiveSaver, archive_factory: ArchiveFactory) -> None:
    c1 = put(saver, "src", values={"v": 1}, step=0)
    c2 = put(saver, "src", c1, values={"v": 2}, step=1)
    saver.put_writes(c2, [("ch", "w"), ("ch2", 2)], "task", "p")
    sub = put(saver, "src", ns="child:1", step=0)
    saver.prune(["src"], strategy="keep_latest")  # hidden checkpoints are not copied
    saver.copy_thread("src", "dst")
    got = saver.get_tuple(generate_config("dst"))
    assert got is not None
    assert cid(got) == cid(c2)
    assert got.checkpoint["channel_values"] == {"v": 2}
    assert got.pending_writes == [("task", "ch", "w"), ("task", "ch2", 2)]
    assert got.config["configurable"]["thread_id"] == "dst"
    assert got.parent_config is not None
    assert cid(got.parent_config) == cid(c1)
    assert ids(saver, generate_config("dst", checkpoint_ns="child:1")) == [cid(sub)]
    assert ids(saver, generate_config("src")) == [cid(c2)]
    saver.copy_thread("nothing-here", "dst2")
    assert ids(saver, generate_config("dst2")) == []
    with pytest.raises(InvalidInputError, match="same"):
        saver.copy_thread("src", "src")
    # From a fresh host, the source coming from the bucket:
    saver.archive.close()
    other = ArchiveSaver(archive_factory())
    other.copy_thread("dst", "dst3")
    dst3 = other.get_tuple(generate_config("dst3"))
    assert dst3 is not None
    assert dst3.pending_writes == got.pending_writes
    assert other.archive.cache.run(other.run_id_for("dst3")) is not None


def test_async_methods_run_off_the_event_loop(saver: ArchiveSaver) -> None:
    seen: set[int] = set()
    inner = saver.archive.cache.append

    def spy(*args: Any) -> None:
        seen.add(threading.get_ident())
        inner(*args)

    saver.archive.cache.append = spy  # type: ignore[method-assign]

    async def scenario() -> None:
        loop_thread = threading.get_ident()
        cfg = generate_config("a")
        c1 = await saver.aput(cfg, generate_checkpoint(), generate_metadata(step=0, run_id="r"), {})
        await saver.aput_writes(c1, [("x", 1)], "task")
        c2 = await saver.aput(
            {**cfg, "configurable": {**cfg["configurable"], **c1["configurable"]}},
            generate_checkpoint(),
            generate_metadata(step=1),
            {},
        )
        tup = await saver.aget_tuple(c1)
        assert tup is not None
        assert tup.pending_writes == [("task", "x", 1)]
        assert [cid(t) async for t in saver.alist(cfg)] == [cid(c2), cid(c1)]
        assert [cid(t) async for t in saver.alist(cfg, limit=1)] == [cid(c2)]
        await saver.acopy_thread("a", "b")
        assert len([t async for t in saver.alist(generate_config("b"))]) == 2
        await saver.adelete_for_runs(["r"])
        assert [cid(t) async for t in saver.alist(cfg)] == [cid(c2)]
        await saver.aprune(["b"], strategy="delete")
        assert await saver.aget_tuple(generate_config("b")) is None
        await saver.adelete_thread("a")
        assert await saver.aget_tuple(cfg) is None
        assert loop_thread not in seen

    asyncio.run(scenario())
    assert seen


def test_index_rebuilt_from_cache_and_bucket_after_eviction(
    archive_factory: ArchiveFactory,
) -> None:
    archive = archive_factory(cache_keep_records=10, flush_records=50)
    saver = ArchiveSaver(archive)
    made, parent = [], None
    for step in range(120):
        parent = put(saver, "long", parent, step=step)
        made.append(cid(parent))
        if step % 10 == 0:
            saver.put_writes(parent, [("n", step)], f"t{step}")
    archive.flush()
    row = archive.cache.run(saver.run_id_for("long"))
    assert row is not None
    assert row.evicted_seq > 50
    fresh = ArchiveSaver(archive)  # rebuilds its index: cache + evicted range from the bucket
    assert ids(fresh, generate_config("long")) == made[::-1]
    before = archive.store.counts["get"]
    old = fresh.get_tuple(generate_config("long", checkpoint_id=made[0]))
    assert old is not None
    assert old.metadata["step"] == 0
    assert old.pending_writes == [("t0", "n", 0)]
    assert archive.store.counts["get"] - before >= 1  # read back from its segment


def test_concurrent_puts_are_all_kept(saver: ArchiveSaver) -> None:
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            parent = None
            for step in range(15):
                parent = put(saver, f"t{n % 3}", parent, step=step, worker=n)
                saver.put_writes(parent, [("w", n)], f"task-{n}")
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for tid in ("t0", "t1", "t2"):
        tuples = list(saver.list(generate_config(tid)))
        assert len(tuples) == 30
        assert all(len(t.pending_writes or []) == 1 for t in tuples)


@pytest.mark.slow
def test_import_runarchive_does_not_import_langgraph() -> None:
    code = (
        "import sys, runarchive\n"
        "assert not [m for m in sys.modules if m.startswith(('langgraph', 'langchain'))]\n"
        "sys.modules['langgraph'] = None\n"
        "try:\n"
        "    import runarchive.langgraph\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'runarchive[langgraph]'" in out.stdout


# -- from_url: a saver that owns its archive ------------------------------------------


def _counter_graph(saver: ArchiveSaver) -> Any:
    def step(state: Counter) -> dict[str, Any]:
        return {"n": state["n"] + 1, "log": ["step"]}

    g = StateGraph(Counter)
    g.add_node("step", step)
    g.add_edge(START, "step")
    g.add_edge("step", END)
    return g.compile(checkpointer=saver)


def test_from_url_owns_its_archive_and_closes_it(tmp_path: Path) -> None:
    """``with ArchiveSaver.from_url(...)``: the archive is closed (and flushed) at the
    end, so a fresh host (an empty cache) continues the thread from the bucket."""
    url = (tmp_path / "bucket").as_uri()
    config: RunnableConfig = {"configurable": {"thread_id": "owned"}}
    with ArchiveSaver.from_url(url, cache_dir=tmp_path / "c1", flush_age=3600) as saver:
        assert _counter_graph(saver).invoke({"n": 0, "log": []}, config)["n"] == 1
        archive = saver.archive
        assert not archive.closed
    assert archive.closed  # flush_age=3600: only the close put the run in the bucket
    saver.close()  # again: nothing happens

    with ArchiveSaver.from_url(url, cache_dir=tmp_path / "c2", agent="lg2") as fresh:
        assert fresh.agent == "lg2"
        assert _counter_graph(fresh).get_state(config).values["n"] == 1
        assert _counter_graph(fresh).invoke({"n": 5, "log": []}, config)["n"] == 6
    assert fresh.archive.closed


def test_a_saver_on_a_callers_archive_leaves_it_open(archive_factory: ArchiveFactory) -> None:
    archive = archive_factory()
    with ArchiveSaver(archive) as saver:
        put(saver, "t1")
    saver.close()
    assert not archive.closed
    assert archive.start_run("agent", "still-open").run_id == "still-open"


def test_async_with_from_url_closes_off_the_event_loop(tmp_path: Path) -> None:
    url = (tmp_path / "bucket").as_uri()

    async def scenario() -> ArchiveSaver:
        async with ArchiveSaver.from_url(url, cache_dir=tmp_path / "c") as saver:
            config = generate_config("async-owned")
            cp = generate_checkpoint()
            await saver.aput(config, cp, generate_metadata(), {})
            assert (await saver.aget_tuple(generate_config("async-owned"))) is not None
        return saver

    saver = asyncio.run(scenario())
    assert saver.archive.closed
    reader = Reader.open(url)
    try:  # the run reached the bucket at the close
        assert reader.restore(saver.run_id_for("async-owned")).checkpoints
    finally:
        reader.close()


def test_from_url_closes_the_archive_when_the_saver_refuses_its_options(
    tmp_path: Path,
) -> None:
    url = (tmp_path / "bucket").as_uri()
    with pytest.raises(InvalidInputError, match="run_prefix"):
        ArchiveSaver.from_url(url, cache_dir=tmp_path / "c", run_prefix="")
    # The cache directory was released: another archive can open it at once.
    with ArchiveSaver.from_url(url, cache_dir=tmp_path / "c") as saver:
        assert saver.run_prefix == "lg-"


# -- real graphs ---------------------------------------------------------------------


class Counter(TypedDict):
    n: int
    log: Annotated[list[str], operator.add]


def _failing_graph(saver: ArchiveSaver, fail: dict[str, int]) -> Any:
    def start(state: Counter) -> dict[str, Any]:
        return {"log": ["start"]}

    def left(state: Counter) -> dict[str, Any]:
        fail["left_runs"] += 1
        return {"log": ["left"]}

    def right(state: Counter) -> dict[str, Any]:
        if fail["right"]:
            raise RuntimeError("host lost power")
        return {"log": ["right"]}

    def join(state: Counter) -> dict[str, Any]:
        return {"log": ["join"], "n": state["n"] + 1}

    g = StateGraph(Counter)
    for name, fn in [("start", start), ("left", left), ("right", right), ("join", join)]:
        g.add_node(name, fn)
    g.add_edge(START, "start")
    g.add_edge("start", "left")
    g.add_edge("start", "right")
    g.add_edge(["left", "right"], "join")
    g.add_edge("join", END)
    return g.compile(checkpointer=saver)


def test_graph_failure_resumed_on_a_fresh_host(archive_factory: ArchiveFactory) -> None:
    """A node fails mid-step: the parallel task's writes are pending writes in the
    bucket, and a fresh host resumes without re-running it."""
    fail = {"right": 1, "left_runs": 0}
    archive = archive_factory()
    graph = _failing_graph(ArchiveSaver(archive), fail)
    config: RunnableConfig = {"configurable": {"thread_id": "g"}}
    with pytest.raises(RuntimeError, match="lost power"):
        graph.invoke({"n": 0, "log": []}, config)
    stuck = graph.get_state(config)
    assert stuck.next
    assert set(stuck.next) <= {"left", "right"}
    archive.close()

    fail["right"] = 0
    other = archive_factory()
    graph2 = _failing_graph(ArchiveSaver(other), fail)
    # get_state shows the pending write of the task that succeeded (read from the bucket)
    assert graph2.get_state(config).values["log"] == ["start", "left"]
    final = graph2.invoke(None, config)
    assert final["n"] == 1
    assert sorted(final["log"]) == ["join", "left", "right", "start"]
    assert fail["left_runs"] == 1  # its pending write was reused, not re-run


def test_request_budget_per_super_step(archive_factory: ArchiveFactory) -> None:
    """At defaults a fast graph costs its thread lookup (GET) and its claim (one
    create-only PUT of the index) and then nothing until a flush: 2 requests per flush
    (+ the manifest at the run's first flush)."""
    archive = archive_factory()
    saver = ArchiveSaver(archive)

    def step(state: Counter) -> dict[str, Any]:
        return {"n": state["n"] + 1, "log": ["x"]}

    g = StateGraph(Counter)
    g.add_node("step", step)
    g.add_edge(START, "step")
    g.add_conditional_edges("step", lambda s: END if s["n"] >= 50 else "step")
    graph = g.compile(checkpointer=saver)
    store = archive.store
    store.reset()
    graph.invoke({"n": 0, "log": []}, {"configurable": {"thread_id": "budget"}})
    during = dict(store.counts)
    assert during == {"get": 1, "put": 1}
    assert store.recent[-1] == ("put", "runs/lg-budget/index.json")  # claimed before acks
    archive.flush()
    flush = store.total - 2
    assert store.counts["put"] >= 2
    assert flush <= 4


# -- processes -------------------------------------------------------------------------


@pytest.mark.real_server
@pytest.mark.parametrize("backend", ["file", "seaweedfs"], indirect=True)
def test_killed_writer_read_back_and_continued_on_a_fresh_host(
    backend: Backend, tmp_path: Path
) -> None:
    settings = {k: v for k, v in backend.settings.items() if k != "cache_dir"}
    proc = subprocess.run(
        [
            sys.executable,
            str(CHILD),
            backend.url,
            str(tmp_path / "dead-host"),
            "th/1",
            json.dumps(settings),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == -9, proc.stderr  # SIGKILLed itself after its flush
    last = proc.stdout.split()[1]

    archive = backend.open()  # a fresh cache directory
    saver = ArchiveSaver(archive)
    config = generate_config("th/1")
    tup = saver.get_tuple(config)
    assert tup is not None
    assert cid(tup) == last
    assert tup.checkpoint["channel_values"] == {"step": 2, "blob": b"\x00\xff"}
    assert tup.metadata["run_id"] == "r1"
    assert tup.metadata["step"] == 2
    assert tup.pending_writes == [("task-1", "ch", {"n": 1}), ("task-1", "other", [1, 2])]
    listed = list(saver.list(config))
    assert [t.metadata["step"] for t in listed] == [2, 1, 0]
    assert listed[1].parent_config is not None
    assert len(list(saver.list({"configurable": {"thread_id": "th/1"}}))) == 4
    # Continue the thread on this host, then read it from a third one.
    nxt = put(saver, "th/1", tup.config, step=3)
    archive.close()
    third = ArchiveSaver(backend.open())
    latest = third.get_tuple(config)
    assert latest is not None
    assert cid(latest) == cid(nxt)
    assert latest.parent_config is not None
    assert cid(latest.parent_config) == last


@pytest.mark.real_server
@pytest.mark.parametrize("backend", ["seaweedfs"], indirect=True)
def test_example_stops_and_resumes_from_the_bucket(backend: Backend, tmp_path: Path) -> None:
    endpoint = str(backend.settings["endpoint_url"])
    proc = subprocess.run(
        [
            sys.executable,
            str(EXAMPLE),
            backend.url,
            "--endpoint-url",
            endpoint,
            "--workdir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "RUNARCHIVE_ADDRESSING_STYLE": "path"},
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "host A ran: plan, research, draft, review" in out
    assert "host A stopped before: publish" in out
    assert "host B found 6 checkpoints, next: ('publish',)" in out
    assert "host B ran: publish" in out
    assert "publish: 560 words live" in out
    assert "host B requests: " in out
