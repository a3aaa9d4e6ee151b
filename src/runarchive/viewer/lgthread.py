"""A LangGraph thread as the viewer shows it: checkpoints grouped by namespace, each
with its parent, its LangGraph metadata and its pending writes (pure).

The records are the adapter's (``docs/langgraph.md``), but they come from a bucket:
any field may be missing, of another type, or huge. Nothing here raises on them or
runs them: a serialised value is decoded only when it is plain JSON (serde type
``json``, and small); any other type (``msgpack``, ``pickle``, ``bytes``, ...) is
shown as its type and size, never unpickled or unpacked. Text is cut to
:data:`TEXT_LIMIT` characters.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from typing import Any

from runarchive.format.lgshapes import THREAD_KEY, TOMBSTONE_KIND, WRITES_KIND
from runarchive.format.model import Checkpoint, Event

JSON = Any
TEXT_LIMIT = 200  # characters of an id, channel or task shown; the rest is counted
JSON_LIMIT = 4096  # bytes of a serde "json" value decoded for the page


def text(value: Any) -> str:
    """``value`` as text for the page: a string as is, anything else as JSON, cut
    to :data:`TEXT_LIMIT` characters (the cut says how long it was)."""
    if isinstance(value, str):
        shown = value
    else:
        try:
            shown = json.dumps(value, sort_keys=True, default=repr)
        except (TypeError, ValueError, RecursionError):
            shown = repr(type(value))
    if len(shown) > TEXT_LIMIT:
        return f"{shown[:TEXT_LIMIT]}… ({len(shown)} characters)"
    return shown


def _key(value: Any) -> str:
    # Lookups use the whole value (two long ids that share a prefix stay apart).
    return value if isinstance(value, str) else "\0" + text(value)


def _int(value: Any) -> int | str | None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    return text(value)


def typed_value(value: Any) -> dict[str, JSON]:
    """A serialised value ``{"type", "b64"}`` as ``{"type", "bytes"}``, plus
    ``"json"`` (the value) when its type is ``json`` (or ``null``) and it is small
    enough; ``"error"`` says why a malformed one could not be read."""
    if not isinstance(value, dict):
        return {"type": None, "bytes": None, "error": f"not a serialised value: {text(value)}"}
    kind, b64 = value.get("type"), value.get("b64")
    out: dict[str, JSON] = {"type": text(kind), "bytes": None}
    if not isinstance(b64, str):
        out["error"] = "no base64 payload"
        return out
    try:
        raw = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        out["error"] = "payload is not base64"
        return out
    out["bytes"] = len(raw)
    if kind == "null":
        out["json"] = None
    elif kind == "json" and len(raw) <= JSON_LIMIT:
        try:
            out["json"] = json.loads(raw)
        except (ValueError, RecursionError):
            out["error"] = "payload is not JSON"
    return out


def _meta_fields(record_meta: Any, state_meta: dict[str, JSON]) -> dict[str, JSON]:
    # The adapter repeats the JSON-representable LangGraph metadata in the record's
    # own metadata (readable without LangGraph's serialiser); a json-typed state
    # metadata, when present, is the exact one.
    meta: dict[str, Any] = dict(record_meta) if isinstance(record_meta, dict) else {}
    if isinstance(state_meta.get("json"), dict):
        meta.update(state_meta["json"])
    writes = meta.get("writes")
    parents = meta.get("parents")
    return {
        "step": _int(meta.get("step")),
        "source": None if meta.get("source") is None else text(meta["source"]),
        "writes": sorted(text(k) for k in writes) if isinstance(writes, dict) else None,
        "parents": parents if isinstance(parents, dict) else {},
    }


class _Thread:
    """One pass over a thread's records in seq order."""

    def __init__(self) -> None:
        self.by_ns: dict[str, list[dict[str, JSON]]] = {}
        self.names: dict[str, str] = {}  # namespace key -> the namespace as text
        self.seen: dict[tuple[str, str], dict[str, JSON]] = {}  # the latest of each id
        self.unattached: list[dict[str, JSON]] = []
        self.problems: list[dict[str, JSON]] = []

    def problem(self, seq: int, message: str) -> None:
        self.problems.append({"seq": seq, "message": message})

    def checkpoint(self, rec: Checkpoint) -> None:
        st = rec.state
        if not isinstance(st, dict) or "checkpoint_id" not in st:
            self.problem(rec.seq, "not a LangGraph checkpoint (its state has no checkpoint_id)")
            return
        ns, cid, parent = (
            st.get("checkpoint_ns", ""),
            st["checkpoint_id"],
            st.get("parent_checkpoint_id"),
        )
        meta = typed_value(st.get("metadata"))
        fields = _meta_fields(rec.metadata, meta)
        parent_rec = None if parent is None else self.seen.get((_key(ns), _key(parent)))
        item: dict[str, JSON] = {
            "seq": rec.seq,
            "ts": rec.ts.isoformat(),
            "checkpoint_id": text(cid),
            "parent_id": None if parent is None else text(parent),
            "parent_seq": None if parent_rec is None else parent_rec["seq"],
            "step": fields["step"],
            "source": fields["source"],
            "writes": fields["writes"],
            "parents": [
                {
                    "ns": text(pns),
                    "checkpoint_id": text(pid),
                    "seq": (self.seen.get((_key(pns), _key(pid))) or {}).get("seq"),
                }
                for pns, pid in fields["parents"].items()
            ],
            "metadata": {k: v for k, v in meta.items() if k != "json"},
            "tombstoned": None,
            "pending_writes": [],
        }
        self.names.setdefault(_key(ns), text(ns))
        self.by_ns.setdefault(_key(ns), []).append(item)
        self.seen[(_key(ns), _key(cid))] = item

    def writes(self, ev: Event) -> None:
        d = ev.data if isinstance(ev.data, dict) else {}
        items = d.get("writes")
        if not isinstance(items, list):
            self.problem(ev.seq, f"{WRITES_KIND} event without a list of writes")
            return
        loc = (_key(d.get("checkpoint_ns", "")), _key(d.get("checkpoint_id")))
        target = self.seen.get(loc)
        for item in items:
            if not isinstance(item, dict):
                self.problem(ev.seq, f"a pending write that is not an object: {text(item)}")
                continue
            write = {
                "seq": ev.seq,
                "task_id": text(d.get("task_id")),
                "task_path": text(d.get("task_path", "")),
                "channel": text(item.get("channel")),
                "idx": _int(item.get("idx")),
                "value": typed_value(item.get("value")),
            }
            if target is None:
                write["checkpoint_ns"] = text(d.get("checkpoint_ns", ""))
                write["checkpoint_id"] = text(d.get("checkpoint_id"))
                self.unattached.append(write)
                continue
            listed: list[dict[str, JSON]] = target["pending_writes"]
            idx = write["idx"]
            if isinstance(idx, int) and idx < 0:
                # Special channels (errors, interrupts) replace their previous value,
                # as the adapter serves them.
                listed[:] = [
                    w for w in listed if (w["task_id"], w["idx"]) != (write["task_id"], idx)
                ]
            listed.append(write)

    def tombstone(self, ev: Event) -> None:
        d = ev.data if isinstance(ev.data, dict) else {}
        locs = d.get("checkpoints")
        if not isinstance(locs, list):
            self.problem(ev.seq, f"{TOMBSTONE_KIND} event without a list of checkpoints")
            return
        reason = text(d.get("reason"))
        for loc in locs:
            if not (isinstance(loc, list) and len(loc) == 2):
                self.problem(ev.seq, f"a tombstoned checkpoint that is not [ns, id]: {text(loc)}")
                continue
            item = self.seen.get((_key(loc[0]), _key(loc[1])))
            if item is not None and item["tombstoned"] is None:
                item["tombstoned"] = {"seq": ev.seq, "reason": reason}

    def result(self, thread_id: Any) -> dict[str, JSON]:
        order = sorted(self.by_ns, key=lambda k: (k != "", self.names[k]))
        return {
            "thread_id": text(thread_id),
            "namespaces": [
                {
                    "ns": self.names[k],
                    "label": self.names[k] if k else "root",
                    "checkpoints": self.by_ns[k],
                }
                for k in order
            ],
            "unattached_writes": self.unattached,
            "problems": self.problems,
        }


def thread_view(metadata: Any, records: Iterable[Checkpoint | Event]) -> dict[str, JSON] | None:
    """The thread of a run the LangGraph adapter wrote (its ``metadata`` names the
    thread, :data:`~runarchive.format.lgshapes.THREAD_KEY`), or ``None`` for any
    other run. ``records`` in seq order.

    ``{"thread_id", "namespaces": [{"ns", "label", "checkpoints": [...]}],
    "unattached_writes", "problems"}``: the root namespace first (label ``root``),
    each checkpoint with ``seq``, ``ts``, ``checkpoint_id``, ``parent_id``, ``parent_seq``
    (the parent's record, if the run holds it), ``step``, ``source``, ``writes``
    (node names), ``parents`` (the enclosing graphs' checkpoints), ``metadata``
    (serialised type and size), ``tombstoned`` (``{"seq", "reason"}`` of the
    ``lg.tombstone`` that hid it from LangGraph, or ``None``: the archive keeps it)
    and ``pending_writes`` (``task_id``, ``task_path``, ``channel``, ``idx``,
    ``value``: see :func:`typed_value`). Records of another shape are listed in
    ``problems`` by seq."""
    if not isinstance(metadata, dict) or metadata.get(THREAD_KEY) is None:
        return None
    thread = _Thread()
    for rec in records:
        if isinstance(rec, Checkpoint):
            thread.checkpoint(rec)
        elif rec.kind == WRITES_KIND:
            thread.writes(rec)
        elif rec.kind == TOMBSTONE_KIND:
            thread.tombstone(rec)
    return thread.result(metadata[THREAD_KEY])
