"""A LangGraph graph checkpointed to a bucket, stopped midway, resumed on a fresh host.

    python examples/langgraph_resume.py                 # a file:// bucket in a temp dir
    python examples/langgraph_resume.py s3://bucket/prefix --endpoint-url http://127.0.0.1:8333

Host A runs the graph until it pauses before ``publish`` (waiting for approval) and
exits. Host B starts with an empty cache, finds the thread in the bucket, and runs
it to the end. Plain Python nodes, no LLM.
"""

from __future__ import annotations

import argparse
import itertools
import operator
import tempfile
from pathlib import Path
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph

from runarchive import Archive
from runarchive.langgraph import ArchiveSaver


class Report(TypedDict):
    topic: str
    log: Annotated[list[str], operator.add]  # each node appends; LangGraph merges
    words: int


def plan(state: Report) -> dict[str, Any]:
    return {"log": [f"plan: outline for {state['topic']!r}"]}


def research(state: Report) -> dict[str, Any]:
    return {"log": ["research: 3 sources"], "words": 120}


def draft(state: Report) -> dict[str, Any]:
    return {"log": ["draft: first version"], "words": state["words"] + 480}


def review(state: Report) -> dict[str, Any]:
    return {"log": ["review: approved with edits"], "words": state["words"] - 40}


def publish(state: Report) -> dict[str, Any]:
    return {"log": [f"publish: {state['words']} words live"]}


NODES = {"plan": plan, "research": research, "draft": draft, "review": review, "publish": publish}


def build(saver: ArchiveSaver) -> Any:
    graph = StateGraph(Report)
    for name, fn in NODES.items():
        graph.add_node(name, fn)
    for a, b in itertools.pairwise([START, *NODES, END]):  # a straight line
        graph.add_edge(a, b)
    # Pause before publishing: the state at that point is what host B picks up.
    return graph.compile(checkpointer=saver, interrupt_before=["publish"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", help="s3://bucket/prefix or file:///dir")
    parser.add_argument("--endpoint-url")
    parser.add_argument("--workdir", type=Path, help="where caches (and the default bucket) go")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="lg-resume-"))
    url = args.url or (work / "bucket").as_uri()
    settings: dict[str, Any] = {"endpoint_url": args.endpoint_url} if args.endpoint_url else {}
    config = {"configurable": {"thread_id": "report-42"}}

    # Host A: runs until the interrupt, then exits (close() flushes the cache).
    with Archive.open(url, cache_dir=work / "host-a", **settings) as archive:
        graph = build(ArchiveSaver(archive))
        graph.invoke({"topic": "quarterly costs", "log": [], "words": 0}, config)
        state = graph.get_state(config)
        print(f"host A ran: {', '.join(e.split(':')[0] for e in state.values['log'])}")
        print(f"host A stopped before: {', '.join(state.next)}")

    # Host B: an empty cache directory; everything comes from the bucket.
    with Archive.open(url, cache_dir=work / "host-b", **settings) as archive:
        saver = ArchiveSaver(archive)
        graph = build(saver)
        archive.store.reset()  # count from here: opening costs 5 requests (a probe)
        state = graph.get_state(config)  # takes the thread over from the bucket
        print(f"host B found {len(list(saver.list(config)))} checkpoints, next: {state.next}")
        graph.invoke(None, config)  # resume: runs publish
        final = graph.get_state(config)
        print(f"host B ran: {final.values['log'][-1].split(':')[0]}")
        archive.flush()
        counts = ", ".join(f"{n} {op.upper()}" for op, n in sorted(archive.store.counts.items()))
        print(f"host B requests: {counts} (takeover, then one flush)")
    print("final log:")
    for line in final.values["log"]:
        print(f"  {line}")


if __name__ == "__main__":
    main()
