"""A run's archived records as the lines stored in its segments: what compaction
(ended runs, :mod:`runarchive.maintenance.compact`) and live compaction (the writer's
flusher, :mod:`runarchive.engine.livecompact`) re-plan and rewrite byte for byte.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import orjson

from runarchive.crypto.keyring import Keyring
from runarchive.crypto.sealing import segment_raw
from runarchive.format.codec import split_header
from runarchive.format.model import RunIndex, SegmentRef
from runarchive.store import Store


@dataclass(frozen=True)
class Line:
    """One archived record: what the planner needs, and its bytes as stored."""

    seq: int
    type: str
    name: str
    ts: str
    raw: bytes


def _read_lines(
    store: Store, ref: SegmentRef, index: RunIndex, keyring: Keyring | None
) -> list[Line]:
    raw = segment_raw(store.get(ref.key).body, ref, index.run_id, keyring, index.keys)
    _, rest = split_header(raw, ref.key, ref.format)
    out = []
    for line in rest.splitlines():
        if line:
            rec = orjson.loads(line)
            name = rec.get("name") if rec.get("type") == "checkpoint" else rec.get("kind")
            out.append(Line(rec["seq"], rec["type"], str(name), rec["ts"], line))
    return out


def read_lines_of(
    store: Store,
    index: RunIndex,
    refs: list[SegmentRef],
    keyring: Keyring | None = None,
    workers: int = 8,
) -> list[list[Line]]:
    """The record lines of each of ``refs`` (1 GET each, in parallel; checked)."""
    if len(refs) <= 1:
        return [_read_lines(store, ref, index, keyring) for ref in refs]
    with ThreadPoolExecutor(max_workers=min(workers, len(refs))) as pool:
        return list(pool.map(lambda ref: _read_lines(store, ref, index, keyring), refs))


def read_lines(
    store: Store,
    index: RunIndex,
    workers: int = 8,
    keyring: Keyring | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[Line]:
    """Every archived record line of a run, checked against the index's SHA-256s
    (sealed segments decrypted with ``keyring``); ``progress`` is told ``(segments
    read, segments)``.

    Cost: 1 GET per segment, in parallel.
    """
    if not index.segments:
        return []
    total, done, lock = len(index.segments), [0], threading.Lock()

    def read(ref: SegmentRef) -> list[Line]:
        lines = _read_lines(store, ref, index, keyring)
        if progress is not None:
            with lock:  # calls in order, from one thread at a time
                done[0] += 1
                progress(done[0], total)
        return lines

    with ThreadPoolExecutor(max_workers=min(workers, len(index.segments))) as pool:
        parts = list(pool.map(read, index.segments))
    return [ln for part in parts for ln in part]
