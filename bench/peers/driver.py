# ruff: noqa: PLC0415  (imports are lazy: each system has only its own packages)
"""One system's side of ``bench/bench_peers.py``, run by that system's own python.

Usage: ``driver.py '<json>'`` with ``system`` (runarchive, s3, objectstorage,
tigris), ``phase`` (write, restore, list, graph), ``endpoint`` (the counting proxy),
``bucket``, ``prefix``, ``runs``, ``steps``, ``region``, ``workdir``. Credentials
come from the environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY).

Before and after the measured part it prints ``MARK <name>`` and waits for a line
on stdin, so the parent can read the proxy's request counter at exactly those
points (opening a client is not counted). The last stdout line is the JSON result.
Needs only the standard library plus the system under test (and its langgraph).
"""

from __future__ import annotations

import json
import operator
import random
import sys
import time
from typing import Annotated, Any, TypedDict

WORDS = [
    "agent",
    "plan",
    "search",
    "result",
    "tool",
    "call",
    "observe",
    "reflect",
    "answer",
    "question",
    "context",
    "memory",
    "token",
    "model",
    "prompt",
    "reply",
    "user",
    "assistant",
    "function",
    "argument",
    "value",
    "error",
    "retry",
    "timeout",
    "file",
    "path",
    "read",
    "write",
    "list",
    "update",
    "delete",
    "create",
    "index",
    "segment",
    "bucket",
    "object",
    "cache",
    "city",
    "weather",
    "forecast",
    "price",
    "stock",
    "market",
    "report",
    "chart",
    "figure",
    "number",
    "total",
    "average",
    "the",
    "a",
    "an",
    "of",
    "to",
    "in",
    "on",
    "for",
    "with",
    "by",
    "from",
    "at",
    "as",
    "is",
    "are",
    "was",
    "were",
    "be",
    "been",
    "being",
    "have",
    "has",
]
NAMES = ("plan", "act", "observe", "reflect")


def mark(name: str) -> None:
    print(f"MARK {name}", flush=True)
    sys.stdin.readline()


def pct(values: list[float], q: float) -> float:
    data = sorted(values)
    if not data:
        return float("nan")
    pos = (len(data) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


class Transcript:
    """The growing transcript of bench_core: one 150-400 character message per step."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.messages: list[dict[str, Any]] = []

    def step(self, i: int) -> tuple[str, dict[str, Any], dict[str, Any]]:
        target = self.rng.randint(150, 400)
        words: list[str] = []
        while sum(len(w) + 1 for w in words) < target:
            w = self.rng.choice(WORDS)
            words.append(f"{w}-{self.rng.randint(0, 99999)}" if self.rng.random() < 0.08 else w)
        role = ("user", "assistant", "tool", "assistant")[i % 4]
        self.messages.append({"role": role, "content": " ".join(words)[:target]})
        state = {"step": i, "goal": "answer the user's question", "messages": self.messages}
        event = {"tool": self.rng.choice(("search", "read", "python")), "ms": i % 997, "step": i}
        return NAMES[i % 4], state, event


# ---------------------------------------------------------------- runarchive


def ra_open(cfg: dict[str, Any], cache: str) -> Any:
    from runarchive import Archive
    from runarchive.policy import Policy

    return Archive.open(
        f"s3://{cfg['bucket']}/{cfg['prefix']}",
        cache_dir=cache,
        endpoint_url=cfg["endpoint"],
        region=cfg["region"],
        addressing_style="path",
        policy=Policy(keep_all=True),  # keep every checkpoint, as the peers do
    )


def ra_reader(cfg: dict[str, Any]) -> Any:
    from runarchive import Reader

    return Reader.open(
        f"s3://{cfg['bucket']}/{cfg['prefix']}",
        endpoint_url=cfg["endpoint"],
        region=cfg["region"],
        addressing_style="path",
    )


# ---------------------------------------------------------------- peers


def boto_client(cfg: dict[str, Any]) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=cfg["endpoint"],
        region_name=cfg["region"],
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 5}),
    )


def peer_saver(cfg: dict[str, Any]) -> Any:
    system, bucket, prefix = cfg["system"], cfg["bucket"], cfg["prefix"]
    if system == "s3":
        from langgraph_checkpoint_s3 import S3CheckpointSaver

        return S3CheckpointSaver(bucket, prefix=prefix + "/", s3_client=boto_client(cfg))
    if system == "objectstorage":
        from langgraph_checkpoint_objectstorage import ObjectStorageSaver

        return ObjectStorageSaver.from_conn_string(
            f"s3://{bucket}/{prefix}",
            use_listings_cache=False,  # else a reader misses other instances' writes
            client_kwargs={"endpoint_url": cfg["endpoint"], "region_name": cfg["region"]},
            config_kwargs={"s3": {"addressing_style": "path"}},
        )
    if system == "tigris":
        from langgraph.checkpoint.tigris import TigrisSaver

        saver = TigrisSaver(bucket, client=boto_client(cfg), prefix=prefix)
        saver.setup()
        return saver
    raise SystemExit(f"unknown system {system!r}")


def thread_config(thread: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}


# ---------------------------------------------------------------- phases


def write(cfg: dict[str, Any]) -> dict[str, Any]:
    runs, steps = cfg["runs"], cfg["steps"]
    lat: list[float] = []
    ids: list[str] = []
    if cfg["system"] == "runarchive":
        archive = ra_open(cfg, cfg["workdir"] + "/cache")
        mark("start")
        t0 = time.perf_counter()
        for r in range(runs):
            tr = Transcript(r)
            with archive.start_run(agent="bench", run_id=f"run-{r}") as run:
                ids.append(run.run_id)
                for i in range(steps):
                    name, state, event = tr.step(i)
                    t = time.perf_counter()
                    run.checkpoint(name, state)
                    lat.append(time.perf_counter() - t)
                    run.event("tool_call", event)
        archive.flush()
        wall = time.perf_counter() - t0
        mark("end")
        archive.close()
    else:
        from langgraph.checkpoint.base import empty_checkpoint

        saver = peer_saver(cfg)
        mark("start")
        t0 = time.perf_counter()
        for r in range(runs):
            tr = Transcript(r)
            thread = f"run-{r}"
            ids.append(thread)
            config: Any = thread_config(thread)
            for i in range(steps):
                name, state, event = tr.step(i)
                cp = empty_checkpoint()
                cp["channel_values"] = {"state": state}
                cp["channel_versions"] = {"state": i + 1}
                meta: Any = {"source": "loop", "step": i, "parents": {}, "name": name}
                t = time.perf_counter()
                config = saver.put(config, cp, meta, {"state": i + 1})
                lat.append(time.perf_counter() - t)
                saver.put_writes(config, [("events", event)], f"task-{i}")
        wall = time.perf_counter() - t0
        mark("end")
    ms = [x * 1000 for x in lat]
    return {"ids": ids, "p50_ms": pct(ms, 50), "p99_ms": pct(ms, 99), "wall_s": wall}


def restore(cfg: dict[str, Any]) -> dict[str, Any]:
    run_id = cfg["run_id"]
    if cfg["system"] == "runarchive":
        reader = ra_reader(cfg)
        mark("start")
        t0 = time.perf_counter()
        restored = reader.restore(run_id)
        seconds = time.perf_counter() - t0
        mark("end")
        cps = [r for r in restored.records if r.type == "checkpoint"]
        n, steps = len(cps), len(cps[-1].state["messages"]) if cps else 0
    else:
        saver = peer_saver(cfg)
        mark("start")
        t0 = time.perf_counter()
        tuples = list(saver.list(thread_config(run_id)))
        seconds = time.perf_counter() - t0
        mark("end")
        n = len(tuples)
        steps = len(tuples[0].checkpoint["channel_values"]["state"]["messages"]) if tuples else 0
    return {"seconds": seconds, "checkpoints": n, "latest_messages": steps}


def list_runs(cfg: dict[str, Any]) -> dict[str, Any]:
    """runarchive: the manifest. The peers have no run listing: a delimiter LIST of the
    prefix holding one 'folder' per thread (what a user of them would do)."""
    if cfg["system"] == "runarchive":
        reader = ra_reader(cfg)
        mark("start")
        t0 = time.perf_counter()
        found = [e.run_id for e in reader.list_runs(limit=None)]
        seconds = time.perf_counter() - t0
        mark("end")
    elif cfg["system"] == "objectstorage":  # no boto3 in its venv: its fsspec filesystem
        fs = peer_saver(cfg).fs
        mark("start")
        t0 = time.perf_counter()
        found = [
            p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(f"{cfg['bucket']}/{cfg['prefix']}")
        ]
        seconds = time.perf_counter() - t0
        mark("end")
    else:
        client = boto_client(cfg)
        under = {
            "s3": f"{cfg['prefix']}/checkpoints/",
            "objectstorage": f"{cfg['prefix']}/",
            "tigris": f"{cfg['prefix']}/checkpoints/",
        }[cfg["system"]]
        mark("start")
        t0 = time.perf_counter()
        found = []
        for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=cfg["bucket"], Prefix=under, Delimiter="/"
        ):
            found += [p["Prefix"][len(under) :].strip("/") for p in page.get("CommonPrefixes", [])]
        seconds = time.perf_counter() - t0
        mark("end")
    return {"seconds": seconds, "runs": len(found)}


class GraphState(TypedDict):
    messages: Annotated[list[str], operator.add]


def graph(cfg: dict[str, Any]) -> dict[str, Any]:
    from langgraph.graph import END, START, StateGraph

    builder = StateGraph(GraphState)
    builder.add_node("plan", lambda s: {"messages": [f"plan after {len(s['messages'])}"]})
    builder.add_node("act", lambda s: {"messages": ["act: called a tool"]})
    builder.add_node("answer", lambda s: {"messages": ["answer: done"]})
    builder.add_edge(START, "plan")
    builder.add_edge("plan", "act")
    builder.add_edge("act", "answer")
    builder.add_edge("answer", END)
    invokes = cfg["invokes"]
    archive = None
    if cfg["system"] == "runarchive":
        from runarchive.langgraph import ArchiveSaver

        archive = ra_open(cfg, cfg["workdir"] + "/graph-cache")
        saver: Any = ArchiveSaver(archive)
    else:
        saver = peer_saver(cfg)
    app = builder.compile(checkpointer=saver)
    mark("start")
    t0 = time.perf_counter()
    for n in range(invokes):
        app.invoke({"messages": [f"question {n}"]}, thread_config("graph-1"))
    if archive is not None:
        archive.flush()  # the requests the background flusher would make, counted now
    seconds = time.perf_counter() - t0
    mark("end")
    out = app.get_state(thread_config("graph-1")).values
    if archive is not None:
        archive.close()
    return {"seconds": seconds, "invokes": invokes, "messages": len(out["messages"])}


def main() -> int:
    cfg = json.loads(sys.argv[1])
    phase = {"write": write, "restore": restore, "list": list_runs, "graph": graph}[cfg["phase"]]
    result = phase(cfg)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
