"""Record helpers and the per-thread index of :mod:`runarchive.adapters.langgraph` (private).

Kept apart from the saver so that each file stays readable; imported only by
``runarchive.langgraph``. The shapes are described in ``docs/langgraph.md``; the names
in them are in :mod:`runarchive.format.lgshapes`.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from runarchive.errors import CorruptObjectError, StateNotSerializableError
from runarchive.format.jsonvalue import check_json_value
from runarchive.format.lgshapes import TOMBSTONE_KIND, WRITES_KIND
from runarchive.format.model import Checkpoint, Event
from runarchive.policy import Policy

if TYPE_CHECKING:
    from langgraph.checkpoint.serde.base import SerializerProtocol

    from runarchive.engine.view import RunView
    from runarchive.run import Run

KEEP_ALL = Policy(keep_all=True)
HASHED = "sha256-"

PendingWrite = tuple[str, str, Any]
Loc = tuple[str, str]  # (checkpoint_ns, checkpoint_id)


def enc(typed: tuple[str, bytes]) -> dict[str, str]:
    return {"type": typed[0], "b64": base64.b64encode(typed[1]).decode("ascii")}


def dec(value: Any, where: str) -> tuple[str, bytes]:
    try:
        return str(value["type"]), base64.b64decode(value["b64"], validate=True)
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptObjectError(where, f"not an encoded LangGraph value ({exc})") from None


def json_safe(metadata: dict[str, Any]) -> dict[str, Any]:
    """The JSON-representable part of LangGraph metadata, for humans reading segments
    with ``jq`` (the exact metadata travels serialised in the state)."""
    out: dict[str, Any] = {}
    for key, value in metadata.items():
        try:
            out[str(key)] = check_json_value(value, "metadata")
        except StateNotSerializableError:
            continue
    return out


def checkpoint_name(ns: str) -> str:
    # One name per namespace, so a lossy policy's "latest of each name" keeps the
    # newest checkpoint of every subgraph.
    name = "ns:" + ns if ns else "root"
    if len(name) > 256 or not name.isprintable():
        name = "ns:" + HASHED + hashlib.sha256(ns.encode()).hexdigest()
    return name


@dataclass
class Entry:
    seq: int
    parent: str | None
    metadata: dict[str, Any]


@dataclass
class WriteRef:
    seq: int  # the lg.writes event holding the value
    pos: int  # its position in the event's list
    task_id: str
    task_path: str
    idx: int
    channel: str


@dataclass
class ThreadIndex:
    """One thread's in-memory index: where each live checkpoint and write is."""

    thread_id: str
    run: Run | RunView  # a view: read from the bucket, not owned here
    lock: threading.RLock
    checkpoints: dict[str, dict[str, Entry]] = field(default_factory=dict)
    writes: dict[Loc, dict[tuple[str, int], WriteRef]] = field(default_factory=dict)

    def add_checkpoint(self, ns: str, cid: str, entry: Entry) -> None:
        self.checkpoints.setdefault(ns, {})[cid] = entry

    def add_writes(self, ns: str, cid: str, seq: int, data: dict[str, Any]) -> None:
        refs = self.writes.setdefault((ns, cid), {})
        task_id, task_path = str(data["task_id"]), str(data.get("task_path", ""))
        for pos, item in enumerate(data["writes"]):
            idx = int(item["idx"])
            refs[(task_id, idx)] = WriteRef(seq, pos, task_id, task_path, idx, item["channel"])

    def drop(self, locs: Sequence[Loc]) -> None:
        for ns, cid in locs:
            self.checkpoints.get(ns, {}).pop(cid, None)
            if not self.checkpoints.get(ns, True):
                del self.checkpoints[ns]
            self.writes.pop((ns, cid), None)

    def apply(self, rec: Checkpoint | Event, serde: SerializerProtocol) -> None:
        """Replay one record of the run (index rebuild after a restart or takeover)."""
        if isinstance(rec, Checkpoint):
            st = rec.state
            if not isinstance(st, dict) or "checkpoint_id" not in st:
                return  # not written by this adapter
            where = f"run {rec.run} seq {rec.seq}"
            meta = serde.loads_typed(dec(st["metadata"], where))
            entry = Entry(rec.seq, st.get("parent_checkpoint_id"), meta)
            self.add_checkpoint(st["checkpoint_ns"], st["checkpoint_id"], entry)
        elif rec.kind == WRITES_KIND:
            d = rec.data
            self.add_writes(d["checkpoint_ns"], d["checkpoint_id"], rec.seq, d)
        elif rec.kind == TOMBSTONE_KIND:
            self.drop([(ns, cid) for ns, cid in rec.data["checkpoints"]])
