"""The manifest's persisted shapes and keys (``docs/format.md`` §10): format 2, and
the legacy format 1 shards it still reads.

Format 2 (written)::

    manifest/live/<writer>.json.zst                       one writer process's running runs
    manifest/done/<YYYYMMDD>/<HH>-<writer>-<n>.json.zst   runs it finished, by end hour

``<writer>`` is ``<host>.<pid>.<random 8 hex>.<lease seconds>``: the lease in the name
lets ``interrupted()`` tell a stale object from a fresh one by its LIST entry alone.

Format 1 (read forever, written only to remove a run from it)::

    manifest/active/<s>.json.zst, manifest/done/<s>.json.zst   s = 0..7
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
import zstandard
from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_serializer

from runarchive.errors import CorruptObjectError, FormatVersionError, InvalidInputError
from runarchive.format.codec import decompress_bounded
from runarchive.format.model import DataKey, RunStatus, SealedValue, format_ts

MANIFEST_FORMAT = 2  # written; docs/format.md §10
LEGACY_FORMAT = 1  # read, and rewritten only to remove a run (§10.6)
LIVE_PREFIX = "manifest/live/"
DONE_PREFIX = "manifest/done/"
LEGACY_ACTIVE_PREFIX = "manifest/active/"
SHARDS = 8  # format 1
Kind = Literal["active", "done"]
KINDS: tuple[Kind, ...] = ("active", "done")
# A crafted object must not exhaust memory: a live object holds one process's running
# runs (≈ 400 B each), a done object at most DONE_CAP; legacy shards were ~600,000 runs.
MAX_SHARD_BYTES = 256 << 20
DONE_CAP = 256  # entries per done object: a finish rewrites at most ~100 KB of JSON

_SAFE = re.compile(r"[^A-Za-z0-9_-]")
WRITER_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}\.[0-9]{1,10}\.[0-9a-f]{8}\.[0-9]{1,7}$")


class RunEntry(BaseModel):
    """One run as the manifest lists it (the same shape in every format)."""

    model_config = ConfigDict(frozen=True, extra="allow")

    run_id: str
    agent: str
    status: RunStatus = "running"
    created_at: datetime
    updated_at: datetime
    ended_at: datetime | None = None
    owner_host: str = ""
    owner_pid: int = 0
    epoch: StrictInt = 0
    lease_expires_at: datetime | None = None
    last_seq: int = 0
    records: int = 0
    stored_bytes: int = 0
    metadata: dict[str, Any] = Field(default_factory=dict)
    chain_head: str | None = None  # the run index's chain head when this entry was written
    # An encrypted run's metadata, sealed as in its index, and the data key that opens
    # it; readers with the key fill ``metadata`` in when they list.
    sealed_metadata: SealedValue | None = None
    metadata_key: DataKey | None = None

    @field_serializer("created_at", "updated_at", "ended_at", "lease_expires_at")
    def _fixed_width_utc(self, value: datetime | None) -> str | None:
        # Always UTC with 6 fraction digits, so that the text sorts as the time does.
        return None if value is None else format_ts(value)


class LiveDoc(BaseModel):
    """A writer process's live object (format 2). ``runs`` holds its running runs;
    ``ended`` the runs it finished in the last ``RECENT`` seconds (for paged listings,
    docs/format.md §10.4); ``complete_after``: ``ended`` lacks runs that ended before."""

    model_config = ConfigDict(frozen=True, extra="allow")

    format: Literal[2] = 2
    kind: Literal["live"] = "live"
    writer: str
    host: str
    pid: int
    lease_seconds: int
    updated_at: str
    runs: dict[str, dict[str, Any]] = Field(default_factory=dict)
    ended: dict[str, dict[str, Any]] = Field(default_factory=dict)
    complete_after: str | None = None


class DoneDoc(BaseModel):
    """One done partition object (format 2): runs one writer finished in one hour."""

    model_config = ConfigDict(frozen=True, extra="allow")

    format: Literal[2] = 2
    kind: Literal["done"] = "done"
    writer: str
    partition: str  # YYYYMMDD/HH of the runs' ended_at
    runs: dict[str, dict[str, Any]] = Field(default_factory=dict)


def dump_entry(entry: RunEntry) -> dict[str, Any]:
    """An entry as stored: plaintext runs' entries keep their pre-encryption shape."""
    data = entry.model_dump(mode="json")
    for name in ("sealed_metadata", "metadata_key"):
        if data.get(name) is None:
            data.pop(name, None)
    return data


def new_writer_key(host: str, pid: int, lease_seconds: float) -> str:
    """A fresh writer key for one process (``<host>.<pid>.<rand8>.<lease>``)."""
    lease = max(1, math.ceil(lease_seconds))
    return f"{safe_host(host)}.{pid}.{secrets.token_hex(4)}.{lease}"


def safe_host(host: str) -> str:
    """``host`` in the key charset: other characters become ``_``, 64 at most."""
    return _SAFE.sub("_", host)[:64] or "_"


def host_prefix(host: str, pid: int | None = None) -> str:
    """The LIST prefix of a host's (or one process's) live objects."""
    return f"{LIVE_PREFIX}{safe_host(host)}." + (f"{pid}." if pid is not None else "")


def check_writer_key(writer: str) -> str:
    """``writer`` if it is a well-formed writer key, else ``InvalidInputError``."""
    if not WRITER_RE.fullmatch(writer):
        raise InvalidInputError(
            f"invalid manifest writer key {writer!r}: expected <host>.<pid>.<8 hex>.<lease>"
        )
    return writer


def live_key(writer: str) -> str:
    """Key of a writer's live object."""
    return f"{LIVE_PREFIX}{writer}.json.zst"


def writer_of_live_key(key: str) -> str | None:
    """The writer key a live object's key names, or ``None`` for a foreign key."""
    name = key[len(LIVE_PREFIX) :] if key.startswith(LIVE_PREFIX) else ""
    name = name.removesuffix(".json.zst")
    return name if WRITER_RE.fullmatch(name) else None


def lease_of_writer(writer: str) -> int:
    """The lease (seconds) a writer key declares."""
    return int(writer.rsplit(".", 1)[1])


def partition_of(ended: datetime) -> tuple[str, str]:
    """(``YYYYMMDD``, ``HH``) of an end time, in UTC."""
    t = ended.astimezone(UTC)
    return t.strftime("%Y%m%d"), t.strftime("%H")


def done_key(day: str, hour: str, writer: str, n: int) -> str:
    """Key of a writer's ``n``-th done object of one hour."""
    return f"{DONE_PREFIX}{day}/{hour}-{writer}-{n}.json.zst"


def day_of_prefix(prefix: str) -> str:
    """``YYYYMMDD`` of a ``manifest/done/YYYYMMDD/`` prefix."""
    return prefix[len(DONE_PREFIX) :].rstrip("/")


def shard_of(run_id: str) -> int:
    """The format 1 shard (0..7) a run id belongs to."""
    return int(hashlib.sha256(run_id.encode()).hexdigest()[:8], 16) % SHARDS


def shard_key(kind: Kind, shard: int) -> str:
    """Key of one format 1 shard."""
    return f"manifest/{kind}/{shard}.json.zst"


def encode(doc: dict[str, Any]) -> bytes:
    """A manifest object's body: one zstd frame (checksum on) of one JSON document."""
    return zstandard.ZstdCompressor(level=3, write_checksum=True).compress(orjson.dumps(doc))


def decode(body: bytes, key: str) -> dict[str, Any]:
    """The JSON document of a manifest object of either format; ``CorruptObjectError``
    naming ``key`` if it is not one, ``FormatVersionError`` if it is newer."""
    raw = decompress_bounded(body, key, MAX_SHARD_BYTES, "the ceiling of a manifest object")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise CorruptObjectError(key, f"not a manifest object ({exc})") from exc
    version = doc.get("format") if isinstance(doc, dict) else None
    if not isinstance(version, int) or not isinstance(doc.get("runs"), dict):
        raise CorruptObjectError(key, "not a manifest object (no format/runs)")
    if version > MANIFEST_FORMAT:
        raise FormatVersionError(
            f"{key!r} was written by format version {version}; this runarchive reads up to "
            f"{MANIFEST_FORMAT}. Upgrade runarchive to read it."
        )
    out: dict[str, Any] = doc
    return out


def decode_live(body: bytes, key: str) -> LiveDoc:
    """A live object, validated (``CorruptObjectError`` naming ``key`` otherwise)."""
    doc = decode(body, key)
    try:
        return LiveDoc.model_validate(doc)
    except ValueError as exc:
        raise CorruptObjectError(key, f"not a live manifest object ({exc})") from None


def decode_done(body: bytes, key: str) -> DoneDoc:
    """A done partition object, validated."""
    doc = decode(body, key)
    try:
        return DoneDoc.model_validate(doc)
    except ValueError as exc:
        raise CorruptObjectError(key, f"not a done manifest object ({exc})") from None


def decode_legacy(body: bytes, key: str) -> dict[str, dict[str, Any]]:
    """The ``runs`` of a format 1 shard."""
    runs: dict[str, dict[str, Any]] = decode(body, key)["runs"]
    return runs
