"""Streaming segment decoding: a segment's records, handed out only once all of it checks.

A restore used to decompress each segment whole, hash it, then parse every line into
a list: the body, its uncompressed bytes and its records were in memory together, for
every segment at once. Here a segment is decompressed piece by piece
(:func:`~runarchive.format.codec.iter_frame`, bounded by its ref's ``raw_bytes``) and parsed
line by line, and no record of it is handed out before **every** check of today's
restore has passed: the zstd frame (complete, its XXH64, no more than ``raw_bytes``),
the SHA-256 the index records (of the body, or for a sealed segment of the stored
object, plus AES-GCM), the header against the ref, each record valid, of the run and
in order inside the range, and the count. A consumer therefore never sees a record of
a segment that turns out to be bad; it sees the exception instead.

To check everything before handing anything out, a reader must either hold what it
decoded or decode twice. :func:`segment_records` does both, by size:

* a plain segment's body is first streamed once through SHA-256 only (memory: one
  piece; about 1 GB/s). A body that is not the one the index names is refused before
  a line of it is parsed, as before;
* a segment of at most ``buffer_bytes`` uncompressed (default :data:`BUFFER_BYTES`,
  4 MiB) is then parsed once and its records held until they are handed out: at most
  its records in memory (≈ 4-7 times its JSON for small records);
* a larger one (a compacted segment, a backlog of large checkpoints, a custom
  ``max_segment_records``) is parsed twice: once to check every line, then again to
  hand records out one at a time, which cannot fail differently (same bytes, same
  checks). Memory: the compressed body and one record; cost: a second parse.

Either way the compressed object (for a sealed one: its decrypted zstd frame) is held
while its records are read. Records are slimmed as they are built: the run id and the
repeated names (type, kind, lane, checkpoint name) are shared strings, and records
with the same fields share pydantic's ``fields_set``, which more than halves what a
small record costs (≈ 1.6 KB to ≈ 0.7 KB for a 160-byte event).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence

import orjson
from pydantic import TypeAdapter, ValidationError

from runarchive.crypto.keyring import Keyring
from runarchive.crypto.sealing import open_sealed_frame
from runarchive.errors import CorruptObjectError
from runarchive.format.codec import (
    check_count,
    check_header,
    check_record,
    header_of,
    iter_frame,
    iter_lines,
)
from runarchive.format.model import (
    CHAIN_FROM_VERSION,
    Checkpoint,
    DataKey,
    Event,
    Record,
    SegmentRef,
)

BUFFER_BYTES = 4 << 20
_BOUND = "the raw_bytes its index declares"
_SHARED_FIELDS = ("run", "type", "kind", "lane", "name")
_MAX_SHARED_STRINGS = 4096
_records: TypeAdapter[Checkpoint | Event] = TypeAdapter(Record)


class Slimmer:
    """Shares what records of one run repeat, to make each one smaller.

    Strings of :data:`_SHARED_FIELDS` equal to one seen before (up to
    :data:`_MAX_SHARED_STRINGS` distinct ones) are replaced by that one before
    validation; after it, a record's ``__pydantic_fields_set__`` (a set per instance,
    ≈ 730 bytes) is replaced by the first equal one. Records are frozen, so no one
    mutates that set in place; ``model_copy`` copies it. Not thread-safe: one per
    stream.
    """

    def __init__(self, run_id: str) -> None:
        self._strings: dict[str, str] = {run_id: run_id}
        self._sets: dict[frozenset[str], set[str]] = {}

    def parse(self, line: bytes, key: str, n: int) -> Checkpoint | Event:
        """Line ``n`` of segment ``key`` as a record (``CorruptObjectError`` if it is
        not one)."""
        try:
            doc = orjson.loads(line)
            if type(doc) is dict:
                strings = self._strings
                for field in _SHARED_FIELDS:
                    value = doc.get(field)
                    if type(value) is str:
                        shared = strings.get(value)
                        if shared is not None:
                            doc[field] = shared
                        elif len(strings) < _MAX_SHARED_STRINGS:
                            strings[value] = value
            rec = _records.validate_python(doc)
        except (orjson.JSONDecodeError, ValidationError) as exc:
            raise CorruptObjectError(key, f"line {n} is not a valid record ({exc})") from exc
        fields = rec.__pydantic_fields_set__
        frozen = frozenset(fields)
        shared_set = self._sets.setdefault(frozen, fields)
        if shared_set is not fields:
            object.__setattr__(rec, "__pydantic_fields_set__", shared_set)
        return rec


def parse_segment(
    frame: bytes, ref: SegmentRef, run_id: str, slim: Slimmer
) -> Iterator[Checkpoint | Event]:
    """The records of one segment's zstd ``frame``, checked as they come: the frame
    (bounded by ``ref.raw_bytes``, complete), the header (format >= 2) against the ref,
    each record against the run and the range; the count once the frame ends. A record
    handed out is not known good until the iterator is exhausted:
    :func:`segment_records` hands out none before that."""
    key = ref.key
    lines = iter_lines(iter_frame(frame, key, ref.raw_bytes, _BOUND))
    n, last, count = 0, ref.first_seq - 1, 0
    if ref.format >= CHAIN_FROM_VERSION:
        first = next(lines, None)
        header = header_of(first) if first is not None else None
        if header is None:
            raise CorruptObjectError(key, "the first line is not the segment header")
        check_header(header, ref, run_id)
        n = 1
    for line in lines:
        # As bytes.splitlines(), which the whole-body parser uses: a stray "\r" also
        # ends a line (JSON allows it only as whitespace between tokens).
        for part in line.splitlines() if b"\r" in line else (line,):
            n += 1
            if not part:
                continue
            rec = slim.parse(part, key, n)
            last = check_record(rec, last, ref, run_id)
            count += 1
            yield rec
    check_count(count, ref)


def segment_frame(
    body: bytes,
    ref: SegmentRef,
    run_id: str,
    keyring: Keyring | None = None,
    keys: Sequence[DataKey] = (),
) -> bytes:
    """The zstd frame of a fetched segment object, its SHA-256 checked: a plain body
    is streamed once through SHA-256 (bounded by ``raw_bytes``); a sealed one is
    checked (stored SHA-256, header, AES-GCM) and decrypted
    (:func:`~runarchive.crypto.sealing.open_sealed_frame`)."""
    if ref.dek is not None:
        return open_sealed_frame(body, ref, run_id, keyring, keys)
    digest = hashlib.sha256()
    for piece in iter_frame(body, ref.key, ref.raw_bytes, _BOUND):
        digest.update(piece)
    actual = digest.hexdigest()
    if actual != ref.sha256:
        raise CorruptObjectError(
            ref.key,
            f"SHA-256 of the body is {actual[:16]}..., the index says {ref.sha256[:16]}...",
        )
    return body


def segment_records(
    frame: bytes,
    ref: SegmentRef,
    run_id: str,
    slim: Slimmer,
    buffer_bytes: int | None = None,
) -> Iterator[Checkpoint | Event]:
    """The records of a segment whose ``frame`` :func:`segment_frame` returned, none
    before all of them passed every check (see the module docstring). ``buffer_bytes``
    (``None``: :data:`BUFFER_BYTES`; negative: no limit) is the largest ``raw_bytes``
    decoded once and held; a larger segment is decoded twice."""
    limit = BUFFER_BYTES if buffer_bytes is None else buffer_bytes
    if limit < 0 or ref.raw_bytes <= limit:
        held = list(parse_segment(frame, ref, run_id, slim))
        held.reverse()  # handed out from the end: each record is released as it goes
        while held:
            yield held.pop()
        return
    for _ in parse_segment(frame, ref, run_id, slim):
        pass
    yield from parse_segment(frame, ref, run_id, slim)


def decode_segment_records(
    body: bytes,
    ref: SegmentRef,
    run_id: str,
    keyring: Keyring | None = None,
    keys: Sequence[DataKey] = (),
    slim: Slimmer | None = None,
) -> list[Checkpoint | Event]:
    """Every record of one segment object, checked: what
    :func:`~runarchive.crypto.sealing.decode_any` returns, decoded piece by piece (the
    uncompressed body is never whole in memory)."""
    frame = segment_frame(body, ref, run_id, keyring, keys)
    return list(parse_segment(frame, ref, run_id, slim or Slimmer(run_id)))
