"""The viewer's data: runs, a run's timeline, a record and its diff, as JSON values.

Pure functions over what the reader returns (manifest entries, a run index, records,
a verification report): no I/O, so the server and ``report.html`` show the same thing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from runarchive.compliance.verify import VerifyReport
from runarchive.engine.manifest.core import RunEntry
from runarchive.format.model import Checkpoint, Event, RunIndex
from runarchive.viewer.lgthread import thread_view

JSON = Any


def _ts(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def run_row(entry: RunEntry, *, interrupted: bool = False) -> dict[str, JSON]:
    """One line of the runs table. ``interrupted``: its writer stopped renewing."""
    return {
        "run_id": entry.run_id,
        "status": entry.status,
        "agent": entry.agent,
        "host": entry.owner_host,
        "created_at": _ts(entry.created_at),
        "ended_at": _ts(entry.ended_at),
        "records": entry.records,
        "last_seq": entry.last_seq,
        "stored_bytes": entry.stored_bytes,
        "sealed": entry.sealed_metadata is not None and not entry.metadata,
        "interrupted": interrupted,
    }


def runs_page(
    entries: Iterable[RunEntry],
    *,
    next_page: str | None = None,
    interrupted: Iterable[str] = (),
) -> dict[str, JSON]:
    """A page of the runs table; ``next_page`` is the manifest's token of the next."""
    stale = set(interrupted)
    return {
        "runs": [run_row(e, interrupted=e.run_id in stale) for e in entries],
        "next_page": next_page,
    }


def record_label(record: Checkpoint | Event) -> str:
    """What the timeline writes on a record: a checkpoint's name, an event's kind."""
    return record.name if isinstance(record, Checkpoint) else record.kind


def record_lane(record: Checkpoint | Event) -> str:
    """The swimlane of a record: events carry one; checkpoints are on ``checkpoints``."""
    return "checkpoints" if isinstance(record, Checkpoint) else record.lane


def gaps(seqs: Iterable[int], last_seq: int) -> list[list[int]]:
    """The seqs in 1..``last_seq`` no record has, as inclusive ``[first, last]``
    ranges: checkpoints the policy dropped (or seqs before a retention cut)."""
    present = sorted(set(seqs))
    out: list[list[int]] = []
    expected = 1
    for seq in present:
        if seq > expected:
            out.append([expected, seq - 1])
        expected = max(expected, seq + 1)
    if last_seq >= expected:
        out.append([expected, last_seq])
    return out


def timeline(index: RunIndex, records: Iterable[Checkpoint | Event]) -> dict[str, JSON]:
    """A run's page: its metadata, result or error, and its records in seq order
    (seq, time, type, label, lane) with the lanes and the gaps between them."""
    header = {
        "run_id": index.run_id,
        "agent": index.agent,
        "status": index.status,
        "created_at": _ts(index.created_at),
        "ended_at": _ts(index.ended_at),
        "host": index.owner_host,
        "metadata": index.metadata,
        "result": index.result,
        "error": index.error,
        "last_seq": index.last_seq,
        "sealed": sorted(index.sealed),
    }
    return run_timeline(header, records)


def run_timeline(header: dict[str, JSON], records: Iterable[Checkpoint | Event]) -> dict[str, JSON]:
    """``header`` (the run's fields, ``last_seq`` and ``metadata`` among them) with
    the timeline of ``records`` added: ``records``, ``lanes`` and ``gaps``; and
    ``thread``: a LangGraph thread's view (:func:`~runarchive.viewer.lgthread.thread_view`),
    ``None`` for any other run."""
    items: list[dict[str, JSON]] = []
    seqs: list[int] = []
    lanes: list[str] = []
    ordered = sorted(records, key=lambda r: r.seq)
    for record in ordered:
        lane = record_lane(record)
        if lane not in lanes:
            lanes.append(lane)
        seqs.append(record.seq)
        items.append(
            {
                "seq": record.seq,
                "ts": _ts(record.ts),
                "type": record.type,
                "label": record_label(record),
                "lane": lane,
            }
        )
    last_seq = header.get("last_seq") or 0
    return header | {
        "lanes": lanes,
        "records": items,
        "gaps": gaps(seqs, int(last_seq)),
        "thread": thread_view(header.get("metadata"), ordered),
    }


def record_pages(records: Iterable[Checkpoint | Event]) -> dict[str, dict[str, JSON]]:
    """Every record's page (:func:`record_page`) by seq (as text, a JSON key): what
    ``report.html`` embeds. One pass, remembering the last checkpoint of each name."""
    pages: dict[str, dict[str, JSON]] = {}
    last: dict[str, Checkpoint] = {}
    for record in sorted(records, key=lambda r: r.seq):
        if isinstance(record, Checkpoint):
            pages[str(record.seq)] = record_page(record, last.get(record.name))
            last[record.name] = record
        else:
            pages[str(record.seq)] = record_page(record)
    return pages


def record_value(record: Checkpoint | Event) -> dict[str, JSON]:
    """A record as JSON, as the archive stores it."""
    value: dict[str, JSON] = record.model_dump(mode="json")
    return value


_MISSING = object()


def diff(before: JSON, after: JSON) -> list[dict[str, str]]:
    """The paths that differ between two JSON values, each ``{"op", "path"}`` with
    ``op`` ``added``, ``removed`` or ``changed``; a path is ``/``-separated keys and
    list indexes (JSON Pointer, RFC 6901 escaping), ``""`` for the whole value."""
    out: list[dict[str, str]] = []
    _diff(before, after, "", out)
    return out


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _diff(a: JSON, b: JSON, path: str, out: list[dict[str, str]]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in a:
            sub = f"{path}/{_escape(str(key))}"
            if key not in b:
                out.append({"op": "removed", "path": sub})
            else:
                _diff(a[key], b[key], sub, out)
        for key in b:
            if key not in a:
                out.append({"op": "added", "path": f"{path}/{_escape(str(key))}"})
    elif isinstance(a, list) and isinstance(b, list):
        for i in range(max(len(a), len(b))):
            sub = f"{path}/{i}"
            if i >= len(b):
                out.append({"op": "removed", "path": sub})
            elif i >= len(a):
                out.append({"op": "added", "path": sub})
            else:
                _diff(a[i], b[i], sub, out)
    elif type(a) is not type(b) or a != b:
        out.append({"op": "changed", "path": path})


def record_page(record: Checkpoint | Event, previous: Checkpoint | None = None) -> dict[str, JSON]:
    """A record's page: its JSON and, for a checkpoint, the previous checkpoint of the
    same name (its seq) and the diff of their states (``None`` when it is the first)."""
    page: dict[str, JSON] = {"record": record_value(record), "previous_seq": None, "diff": None}
    if isinstance(record, Checkpoint) and previous is not None:
        page["previous_seq"] = previous.seq
        page["diff"] = diff(previous.state, record.state)
    return page


def previous_checkpoint(
    records: Sequence[Checkpoint | Event], seq: int
) -> tuple[Checkpoint | Event | None, Checkpoint | None]:
    """The record at ``seq`` in ``records`` (seq order) and the last checkpoint before
    it with the same name, or ``None`` for either."""
    found: Checkpoint | Event | None = None
    by_name: dict[str, Checkpoint] = {}
    previous: Checkpoint | None = None
    for record in records:
        if record.seq == seq:
            found = record
            if isinstance(record, Checkpoint):
                previous = by_name.get(record.name)
            break
        if isinstance(record, Checkpoint):
            by_name[record.name] = record
    return found, previous


def verify_summary(report: VerifyReport) -> dict[str, JSON]:
    """What ``verify`` found, for a run page or the report: counts and problems."""
    return {
        "ok": report.ok,
        "runs": report.runs,
        "segments": report.segments,
        "records": report.records,
        "problems": [
            {
                "severity": p.severity,
                "kind": p.kind,
                "run_id": p.run_id,
                "key": p.key,
                "message": p.message,
            }
            for p in report.problems
        ],
    }
