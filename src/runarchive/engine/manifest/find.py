"""Finding a run's manifest entry outside this process's own objects: where its run
index says it is, and the format 1 shards (``docs/format.md`` §10.5, §10.6)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from runarchive.engine.manifest.format import DONE_PREFIX, LEGACY_ACTIVE_PREFIX, decode, encode
from runarchive.errors import (
    CorruptObjectError,
    ManifestConflictError,
    ObjectNotFoundError,
    PreconditionFailedError,
)
from runarchive.format.codec import index_key
from runarchive.store import IfMatch, Store

MAX_ATTEMPTS = 50
RunsChange = Callable[[dict[str, dict[str, Any]]], bool]
"""Mutates a ``runs`` map in place; False: nothing to write."""


@dataclass(frozen=True)
class Whereabouts:
    """What locates a run's entry: from its run index (status, end, owner)."""

    status: str
    ended_at: datetime | None
    owner_host: str
    owner_pid: int
    epoch: int

    @classmethod
    def of(cls, index: Any) -> Whereabouts:
        """From a ``RunIndex`` (or anything with its fields)."""
        return cls(
            str(index.status),
            index.ended_at,
            str(index.owner_host or ""),
            int(index.owner_pid or 0),
            int(index.epoch),
        )


def read_whereabouts(store: Store, run_id: str) -> Whereabouts | None:
    """Where the run index says a run's entry is (1 GET), ``None`` if it has no index.
    Only the status and owner fields are read, so any index format that has them works."""
    key = index_key(run_id)
    try:
        doc = orjson.loads(store.get(key).body)
    except ObjectNotFoundError:
        return None
    except orjson.JSONDecodeError as exc:
        raise CorruptObjectError(key, f"not a run index ({exc})") from exc
    if not isinstance(doc, dict):
        raise CorruptObjectError(key, "not a run index (not an object)")
    ended = doc.get("ended_at")
    return Whereabouts(
        str(doc.get("status", "running")),
        datetime.fromisoformat(ended) if isinstance(ended, str) else None,
        str(doc.get("owner_host") or ""),
        int(doc.get("owner_pid") or 0),
        int(doc.get("epoch") or 0),
    )


def legacy_shards(store: Store) -> list[str]:
    """Keys of the format 1 shards present: 1 LIST of ``manifest/active/`` and 1
    delimited LIST of ``manifest/done/`` (its objects, not its day partitions)."""
    found = [m.key for m in store.list(LEGACY_ACTIVE_PREFIX) if m.key.endswith(".json.zst")]
    _, top = store.list_level(DONE_PREFIX)
    return found + [m.key for m in top if m.key.endswith(".json.zst")]


def legacy_update(
    store: Store,
    key: str,
    change: RunsChange,
    *,
    rng: random.Random,
    on_conflict: Callable[[], None],
) -> None:
    """Apply ``change`` to format 1 shard ``key`` by compare-and-swap, if it exists
    (never creates one: format 1 objects are only ever emptied)."""
    for attempt in range(MAX_ATTEMPTS):
        try:
            got = store.get(key)
        except ObjectNotFoundError:
            return
        doc = decode(got.body, key)
        runs = dict(doc["runs"])
        if not change(runs):
            return
        try:
            store.put(key, encode({**doc, "runs": runs}), mode=IfMatch(got.etag))
        except PreconditionFailedError:
            on_conflict()
            time.sleep(rng.uniform(0, min(0.2, 0.005 * 2**attempt)))
            continue
        return
    raise ManifestConflictError(
        f"manifest shard {key!r} changed under {MAX_ATTEMPTS} attempts; try again"
    )
