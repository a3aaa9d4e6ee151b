"""Persisted data: records, segment references and the run index (format version 2).

Everything that is written to the bucket is a frozen pydantic model here, and
``docs/format.md`` describes the same shapes for readers without runarchive.
Readers accept every format version up to :data:`FORMAT_VERSION`; writers write
the newest; an object from a newer version raises ``FormatVersionError``.
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

from runarchive.errors import CorruptObjectError, FormatVersionError, InvalidInputError

FORMAT_VERSION = 4
# Version 2: segment bodies start with a header line that links each segment to the
# previous one (the hash chain); version-1 segments (no header) stay readable.
CHAIN_FROM_VERSION = 2
# Version 3: client-side encryption (sealed segments, data keys and sealed fields in
# the index). Plaintext runs are still written as version 2, so that runarchive
# versions that read up to 2 keep reading every run that does not need 3.
PLAIN_FORMAT = 2
SEALED_FORMAT = 3
# Version 4: a paged run index (a head naming immutable pages of segment refs) and
# live compaction (merged segments that carry the chain link of what they replaced,
# and the kept checkpoints' seqs and names in each ref). Written only when a run needs
# it (pages or a merged segment); a run of a few flushes stays version 2 (or 3).
PAGED_FORMAT = 4

RunStatus = Literal["running", "completed", "failed"]

_RUN_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,128}")
MAX_NAME_LEN = 256


def validate_run_id(run_id: object) -> str:
    """Return ``run_id`` if valid: 1-128 of ``[A-Za-z0-9._-]``, no ``..``, not ``.``."""
    if not isinstance(run_id, str):
        raise InvalidInputError(f"run_id must be a str, not {type(run_id).__name__}")
    if not _RUN_ID_RE.fullmatch(run_id) or ".." in run_id or run_id == ".":
        raise InvalidInputError(
            f"invalid run_id {run_id!r}: use 1-128 characters from [A-Za-z0-9._-], without '..'"
        )
    return run_id


def validate_name(value: object, what: str) -> str:
    """Return a checkpoint name / event kind / lane / agent if it is a usable str."""
    if not isinstance(value, str):
        raise InvalidInputError(f"{what} must be a str, not {type(value).__name__}")
    if not 1 <= len(value) <= MAX_NAME_LEN or not value.isprintable():
        raise InvalidInputError(
            f"invalid {what} {value!r}: use 1-{MAX_NAME_LEN} printable characters"
        )
    return value


def new_writer_id() -> str:
    """A random id for one claim of a run (``RunIndex.writer``)."""
    return secrets.token_hex(8)


def new_run_id(now: datetime | None = None) -> str:
    """A fresh run id that sorts by creation time: ``20261125T044755123456Z-1a2b3c4d``."""
    now = now or datetime.now(UTC)
    return now.strftime("%Y%m%dT%H%M%S%fZ") + "-" + secrets.token_hex(4)


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def format_ts(ts: datetime) -> str:
    """ISO 8601 UTC with microseconds and a ``Z``: sorts as text, parses with ``jq``."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class _Persisted(BaseModel):
    # Unknown fields (added by a newer writer of the same format version) are kept,
    # so rewriting an index never drops what a newer writer put there.
    model_config = ConfigDict(frozen=True, extra="allow")


class Checkpoint(_Frozen):
    """A named snapshot of an agent's state."""

    run: str
    seq: int
    ts: datetime
    type: Literal["checkpoint"] = "checkpoint"
    name: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    state: Any = None


class Event(_Frozen):
    """One entry of the run's event log."""

    run: str
    seq: int
    ts: datetime
    type: Literal["event"] = "event"
    kind: str
    lane: str = "main"
    data: Any = None


Record = Annotated[Checkpoint | Event, Field(discriminator="type")]


class SegmentRef(_Persisted):
    """One segment object as the run index describes it."""

    key: str
    first_seq: int
    last_seq: int
    records: int
    checkpoints: int
    events: int
    dropped: int = 0  # checkpoints in [first_seq, last_seq] left out by the policy
    stored_bytes: int  # compressed object size
    raw_bytes: int  # uncompressed JSON Lines size
    sha256: str  # of the uncompressed body
    first_ts: datetime
    last_ts: datetime
    format: StrictInt = PLAIN_FORMAT
    # SHA-256 of the previous segment's body (None for the run's first): the hash
    # chain, also written in the segment's own header line (format >= 2).
    prev_sha256: str | None = None
    # Sealed segments (format 3): the id of the run's data key (RunIndex.keys) that
    # encrypts it; sha256 is then of the stored object, so the chain can be checked
    # without the key.
    dek: str | None = None
    # Format 4 (live compaction). ``level``: 0 for a flush's segment, L+1 for one that
    # merged segments of level L. ``link``: for a merged segment, the chain value the
    # next segment's ``prev_sha256`` may name instead of this one's ``sha256`` (the
    # ``sha256`` or ``link`` of the last segment it replaced). ``ckpts``: the seq and
    # name of every checkpoint in the segment (for an encrypted run, a keyed hash of
    # the name), so a compactor can apply the policy over the whole run from the index
    # alone; None when unknown (segments written before format 4).
    level: StrictInt = 0
    link: str | None = None
    ckpts: tuple[tuple[int, str], ...] | None = None


class PageRef(_Persisted):
    """One page of a paged run index (format 4), as the head names it."""

    key: str
    first_seq: int  # of its first segment
    last_seq: int  # of its last segment
    segments: int  # refs in the page
    sha256: str  # of the page's uncompressed JSON
    stored_bytes: int


class IndexPage(_Persisted):
    """``runs/<run_id>/pages/<first>-<last>-<sha16>.json.zst``: an immutable run of
    consecutive segment refs that a head names instead of listing them."""

    format: StrictInt = PAGED_FORMAT
    kind: Literal["index-page"] = "index-page"
    run_id: str
    segments: tuple[SegmentRef, ...]


class DataKey(_Persisted):
    """A run's data key, wrapped by a key-encryption key (``kek``: ``local:<id>`` or
    ``kms:<key>``). ``rekey`` replaces ``kek``/``wrapped``; ``id`` never changes."""

    id: str
    kek: str
    wrapped: str  # base64
    alg: Literal["AES-256-GCM"] = "AES-256-GCM"
    created_at: datetime


class SealedValue(_Persisted):
    """A JSON value encrypted with a run's data key ``dek`` (AES-256-GCM, associated
    data ``runarchive:<run_id>:<field>``): base64 ``nonce`` and ``ct`` (with tag)."""

    dek: str
    nonce: str
    ct: str


class RetiredObject(_Persisted):
    """A segment a compaction replaced: still readable until ``gc`` deletes it after
    the grace period, so a restore that read the previous index never misses it."""

    key: str
    retired_at: datetime


class CompactionRecord(_Persisted):
    """What one compaction of a run did (kept in the index, for auditors)."""

    at: datetime
    segments_before: int
    segments_after: int
    records_before: int
    records_after: int
    stored_bytes_before: int
    stored_bytes_after: int
    old_chain_head: str | None  # the head it replaced (an older export names this one)


class EpochStart(_Persisted):
    """Where a takeover began (``RunIndex.epoch_starts``)."""

    seq: int  # the index's last_seq when the epoch began
    writer: str  # the writer id of the index it took over


class RunIndex(_Persisted):
    """``runs/<run_id>/index.json``: a run's metadata and its segments, in seq order."""

    format: StrictInt = PLAIN_FORMAT
    run_id: str
    agent: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    status: RunStatus = "running"
    created_at: datetime
    updated_at: datetime
    ended_at: datetime | None = None
    result: Any = None
    error: str | None = None
    last_seq: int = 0  # highest seq covered by a segment; 0 = none yet
    segments: tuple[SegmentRef, ...] = ()
    chain_head: str | None = None  # sha256 of the last segment: the head of the hash chain
    retired: tuple[RetiredObject, ...] = ()  # replaced by compaction, deleted by gc later
    compactions: tuple[CompactionRecord, ...] = ()
    # Ownership: the writer that may append. resume() on another host bumps the
    # epoch by compare-and-swap; a writer whose epoch is lower is fenced.
    epoch: StrictInt = 0
    owner_host: str = ""
    owner_pid: int = 0
    # Who wrote this index: a random id per claim (start_run, resume), so a writer
    # adopts an index it finds in the bucket only if it wrote it itself (a lost
    # response), never another host's of the same epoch. "" in indexes written
    # before this field existed.
    writer: str = ""
    # Takeovers: epoch (as a string) -> where that epoch's owner took the run over
    # (resume): the index's last_seq then, and the writer id that index had. A fenced
    # writer that is that writer knows the bucket holds its records up to there, even
    # after the new owner's live compaction merged its segments away.
    epoch_starts: dict[str, EpochStart] = Field(default_factory=dict)
    # The run's own compression policy (start_run(policy=...)), as Policy fields;
    # None means the writing archive's configured policy. Kept as plain JSON so a
    # reader never fails on a policy field a later version adds; writers validate it.
    policy: dict[str, Any] | None = None
    # Client-side encryption (format 3): the run's wrapped data keys, and the fields
    # that carry agent data (metadata, result, error) sealed; those fields are then
    # empty in plaintext. Reader.index() opens them when the key is configured.
    keys: tuple[DataKey, ...] = ()
    sealed: dict[str, SealedValue] = Field(default_factory=dict)
    # Format 4: pages of segment refs that precede ``segments`` (see IndexPage). In
    # the bucket's head, ``segments`` holds only the refs after the last page. Once
    # expanded (runarchive.format.indexpages.expand / load_index) a RunIndex has every ref in
    # ``segments`` and no ``pages``.
    pages: tuple[PageRef, ...] = ()

    @property
    def stored_bytes(self) -> int:
        """Sum of the segments' object sizes."""
        return sum(s.stored_bytes for s in self.segments)

    @property
    def raw_bytes(self) -> int:
        """Sum of the segments' uncompressed sizes."""
        return sum(s.raw_bytes for s in self.segments)


def parse_index(body: bytes, key: str) -> RunIndex:
    """Decode an index object, refusing newer format versions with a clear message."""
    try:
        raw = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise CorruptObjectError(key, f"not JSON ({exc})") from exc
    # The version is checked before the shape: a newer shape is not corruption.
    version = raw.get("format") if isinstance(raw, dict) else None
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise FormatVersionError(
            f"{key!r} was written by format version {version}; this runarchive reads "
            f"up to {FORMAT_VERSION}. Upgrade runarchive to read it."
        )
    try:
        return RunIndex.model_validate(raw)
    except ValidationError as exc:
        raise CorruptObjectError(
            key, f"not a valid run index ({exc.error_count()} errors)"
        ) from exc
