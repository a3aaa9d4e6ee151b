"""On-bucket layout and the segment encoding.

Layout (relative to the archive root: the bucket prefix or the directory)::

    runs/<run_id>/index.json                              run index (CAS-updated)
    runs/<run_id>/seg/<first>-<last>-<sha16>.jsonl.zst    segments (create-only)
    runs/<run_id>/seg/<first>-<last>-<sha16>.sealed       encrypted segments (format 3)

``<first>``/``<last>`` are the segment's seq range, zero-padded to 12 digits so
keys sort in seq order; ``<sha16>`` is the first 16 hex digits of the SHA-256 of
the uncompressed body, so the same flush retried yields the same key (and
``If-None-Match: *`` makes the retry a no-op), while a different body for the same
range can never overwrite another.

A segment is one zstd frame (content size and XXH64 checksum in the frame) of
JSON Lines: one record per line, ``\\n``-terminated, in seq order. From format 2
the first line is a header (``"type": "segment"``) naming the run, the seq range,
the record count and the SHA-256 of the previous segment's body: the hash chain.
Read it with ``zstd -dc SEG | jq -c .``.

Readers trust nothing a body says: a segment's frame may not decompress to more
than its ref's ``raw_bytes`` (:func:`decompress_bounded`), its key must be under its
run's ``seg/`` and its range a range (:func:`check_ref`), and its header and records
must be the run's and inside the range (:func:`check_contents`).
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import orjson
import zstandard
from pydantic import TypeAdapter, ValidationError

from runarchive.errors import CorruptObjectError
from runarchive.format.model import CHAIN_FROM_VERSION, Checkpoint, Event, Record, SegmentRef

SEQ_DIGITS = 12
HEADER_TYPE = "segment"
# The most a segment may decompress to, whatever its ref declares: an index claiming
# more is refused before anything is allocated. Writers cut segments at
# ``flush_bytes`` (8 MiB) or ``max_segment_records`` records; 4 GiB leaves room for a
# backlog of large checkpoints while keeping a crafted index from exhausting memory.
MAX_SEGMENT_BYTES = 4 << 30
HEAD_BYTES = 64 << 10  # a header line is < 1 KiB (a run id is <= 128 characters)
_CHUNK = 1 << 20
# Compressed bytes fed to the decoder per step when streaming (:func:`iter_frame`). One
# zstd block of 128 KiB fits in 4 bytes (an RLE block), so 1 KiB of input can come out
# as at most 32 MiB: the most a bomb can make a streaming reader hold past its limit.
_IN_STEP = 1 << 10
_SEGMENT_NAME = re.compile(r"[A-Za-z0-9._-]+")
_records = TypeAdapter(Record)
_local = threading.local()


def run_prefix(run_id: str) -> str:
    """Key prefix of everything that belongs to one run."""
    return f"runs/{run_id}/"


def index_key(run_id: str) -> str:
    """Key of a run's index object."""
    return f"runs/{run_id}/index.json"


def segment_key(
    run_id: str, first_seq: int, last_seq: int, sha256: str, *, sealed: bool = False
) -> str:
    """Deterministic key of a segment: seq range plus a prefix of the body hash
    (``.sealed`` for an encrypted one, whose hash is of the stored object)."""
    return (
        f"runs/{run_id}/seg/{first_seq:0{SEQ_DIGITS}d}-{last_seq:0{SEQ_DIGITS}d}"
        f"-{sha256[:16]}" + (".sealed" if sealed else ".jsonl.zst")
    )


@dataclass(frozen=True)
class EncodedSegment:
    """A segment ready to upload."""

    body: bytes  # compressed
    raw_bytes: int
    sha256: str  # of the uncompressed JSON Lines


def _compressor(level: int) -> zstandard.ZstdCompressor:
    # zstandard compressors are not thread-safe; one per thread and level.
    cache: dict[int, zstandard.ZstdCompressor] = _local.__dict__.setdefault("c", {})
    comp = cache.get(level)
    if comp is None:
        comp = cache[level] = zstandard.ZstdCompressor(
            level=level, write_checksum=True, write_content_size=True
        )
    return comp


def segment_header(
    run_id: str,
    first_seq: int,
    last_seq: int,
    records: int,
    prev_sha256: str | None,
    fmt: int = CHAIN_FROM_VERSION,
) -> bytes:
    """The header line of a format-2 (3 when sealed) segment (without its newline)."""
    return orjson.dumps(
        {
            "type": HEADER_TYPE,
            "format": fmt,
            "run": run_id,
            "first_seq": first_seq,
            "last_seq": last_seq,
            "records": records,
            "prev_sha256": prev_sha256,
        }
    )


def join_lines(lines: list[bytes], header: bytes | None = None) -> bytes:
    """Record lines (each without its newline), after ``header`` if given, as JSON Lines."""
    if header is not None:
        lines = [header, *lines]
    return b"\n".join(lines) + b"\n" if lines else b""


def compress(raw: bytes, level: int = 3) -> bytes:
    """One zstd frame with content size and checksum."""
    return _compressor(level).compress(raw)


def encode_segment(
    lines: list[bytes], level: int = 3, header: bytes | None = None
) -> EncodedSegment:
    """Join record lines (each without its newline), after ``header`` if given, into
    one compressed zstd frame."""
    raw = join_lines(lines, header)
    return EncodedSegment(
        body=compress(raw, level),
        raw_bytes=len(raw),
        sha256=hashlib.sha256(raw).hexdigest(),
    )


def _shown(value: object) -> str:
    """A value from an object body, for a message: repr, cut short."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def decompress_bounded(body: bytes, key: str, limit: int, bound: str) -> bytes:
    """The first zstd frame of ``body``, refused (``CorruptObjectError``) if it holds
    more than ``limit`` bytes (``bound`` says where the limit comes from).

    A frame that declares its content size is judged by its header before anything
    is allocated; one that does not (``zstd`` from a pipe) is first streamed and
    counted, stopping one chunk past ``limit``, then decompressed. Either way a small
    object cannot make a reader allocate more than ``limit``.
    """
    declared = _declared_size(body, key, limit, bound)
    try:
        if declared >= 0:
            # Allocates exactly ``declared``; zstd fails a frame that holds more.
            return zstandard.ZstdDecompressor().decompress(body)
        return _decompress_unsized(body, key, limit, bound)
    except zstandard.ZstdError as exc:
        raise CorruptObjectError(key, f"zstd frame does not decode ({exc})") from exc


def _declared_size(body: bytes, key: str, limit: int, bound: str) -> int:
    """The frame's declared content size (-1: not declared), refused above ``limit``."""
    try:
        declared = zstandard.frame_content_size(body)
    except zstandard.ZstdError as exc:
        raise CorruptObjectError(key, f"zstd frame does not decode ({exc})") from exc
    if declared > limit:
        holds = f"declares {declared:,} bytes, more than"
        raise CorruptObjectError(key, _too_big(holds, limit, bound))
    return int(declared)


def _too_big(holds: str, limit: int, bound: str) -> str:
    return (
        f"its zstd frame {holds} {limit:,} bytes ({bound}): refused as a "
        "decompression bomb, nothing over the limit was kept"
    )


def _decompress_unsized(body: bytes, key: str, limit: int, bound: str) -> bytes:
    # The stream reader bounds the output but cannot tell a truncated frame from a
    # whole one; once the output is known to fit, a one-shot decompressobj (same
    # bytes) reports whether the frame was complete.
    reader = zstandard.ZstdDecompressor().stream_reader(body)
    size = 0
    while chunk := reader.read(min(_CHUNK, limit + 1 - size)):
        size += len(chunk)
        if size > limit:
            holds = "declares no size and decompresses to more than"
            raise CorruptObjectError(key, _too_big(holds, limit, bound))
    obj = zstandard.ZstdDecompressor().decompressobj()
    raw = obj.decompress(body)
    if not obj.eof:
        raise CorruptObjectError(key, "zstd frame does not decode (it is truncated)")
    return raw


def iter_frame(body: bytes, key: str, limit: int, bound: str) -> Iterator[bytes]:
    """The first zstd frame of ``body``, decompressed piece by piece (each piece at most
    a few hundred KiB for ordinary data): what :func:`decompress_bounded` returns, in
    bounded memory, with the same checks.

    A frame declaring more than ``limit`` bytes is refused before anything is
    decompressed; one declaring nothing is counted and refused as soon as its output
    passes ``limit`` (never more than 32 MiB past it is held). zstd checks the frame's
    XXH64 as it ends; a frame that stops early is refused after its last piece
    (``CorruptObjectError`` naming ``key``, like every problem here), so a consumer must
    treat what it read as unchecked until the iterator is exhausted. Bytes after the
    first frame are ignored, as by :func:`decompress_bounded`.
    """
    _declared_size(body, key, limit, bound)  # refuses a frame declaring too much
    obj = zstandard.ZstdDecompressor().decompressobj()
    view, size = memoryview(body), 0
    for start in range(0, len(body), _IN_STEP):
        try:
            piece = obj.decompress(view[start : start + _IN_STEP])
        except zstandard.ZstdError as exc:
            raise CorruptObjectError(key, f"zstd frame does not decode ({exc})") from exc
        if piece:
            size += len(piece)
            if size > limit:
                holds = "decompresses to more than"
                raise CorruptObjectError(key, _too_big(holds, limit, bound))
            yield piece
        if obj.eof:
            return
    raise CorruptObjectError(key, "zstd frame does not decode (it is truncated)")


def iter_lines(pieces: Iterable[bytes]) -> Iterator[bytes]:
    """The ``\\n``-separated lines of the concatenated ``pieces``, without their
    newlines; a last line without one is yielded too, an empty last one is not (as
    ``bytes.split`` then dropping a trailing ``b""``). Holds one piece plus the line
    being assembled: a line spanning many pieces is joined once, not re-copied."""
    parts: list[bytes] = []
    for piece in pieces:
        lines = piece.split(b"\n")
        if len(lines) == 1:
            parts.append(piece)
            continue
        if parts:
            parts.append(lines[0])
            lines[0] = b"".join(parts)
            parts.clear()
        tail = lines.pop()
        yield from lines
        if tail:
            parts.append(tail)
    if parts:
        yield b"".join(parts)


def read_head(body: bytes, key: str, limit: int = HEAD_BYTES) -> bytes:
    """At most the first ``limit`` bytes a segment's frame decompresses to: enough
    for its header line, whatever the frame holds after it (no checksum check)."""
    try:
        return zstandard.ZstdDecompressor().stream_reader(body).read(limit)
    except zstandard.ZstdError as exc:
        raise CorruptObjectError(key, f"zstd frame does not decode ({exc})") from exc


def decompress_segment(
    body: bytes, key: str, expected_sha256: str | None = None, raw_bytes: int | None = None
) -> bytes:
    """Decompress a segment body, checking the zstd checksum and (if given) the SHA-256.

    ``raw_bytes`` is the size its ref declares: the body may not decompress to more
    (``CorruptObjectError``, see :func:`decompress_bounded`); without it, at most
    :data:`MAX_SEGMENT_BYTES`.
    """
    if raw_bytes is None:
        raw = decompress_bounded(body, key, MAX_SEGMENT_BYTES, "the ceiling of a segment")
    elif not 0 <= raw_bytes <= MAX_SEGMENT_BYTES:
        raise CorruptObjectError(key, _raw_bytes_problem(raw_bytes))
    else:
        raw = decompress_bounded(body, key, raw_bytes, "the raw_bytes its index declares")
    if expected_sha256 is not None:
        actual = hashlib.sha256(raw).hexdigest()
        if actual != expected_sha256:
            raise CorruptObjectError(
                key,
                f"SHA-256 of the body is {actual[:16]}..., the index says "
                f"{expected_sha256[:16]}...",
            )
    return raw


def _raw_bytes_problem(raw_bytes: int) -> str:
    return (
        f"the index declares raw_bytes {raw_bytes:,}, outside 0 to the "
        f"{MAX_SEGMENT_BYTES:,}-byte ceiling of a segment"
    )


def check_ref(ref: SegmentRef, run_id: str) -> None:
    """What an index says of one segment, checked before it is fetched or a path is
    built from it: its key is a segment of ``run_id`` (``runs/<run_id>/seg/<name>``,
    ``<name>`` one path component), its seq range is a range from 1 up, and its counts
    and sizes are possible. Raises ``CorruptObjectError`` naming the key."""
    prefix = f"runs/{run_id}/seg/"
    name = ref.key[len(prefix) :] if ref.key.startswith(prefix) else ""
    if not _SEGMENT_NAME.fullmatch(name) or name in (".", ".."):
        raise CorruptObjectError(
            ref.key,
            f"the index of run {run_id!r} lists it, but it is not a segment of that run "
            f"({prefix}<name>): the index was altered",
        )
    if not 1 <= ref.first_seq <= ref.last_seq:
        raise CorruptObjectError(
            ref.key,
            f"the index gives it the seq range {ref.first_seq}-{ref.last_seq}; a range "
            "starts at 1 or later and does not end before it starts",
        )
    if not 0 <= ref.records <= ref.last_seq - ref.first_seq + 1:
        raise CorruptObjectError(
            ref.key,
            f"the index says it holds {ref.records} records in the seq range "
            f"{ref.first_seq}-{ref.last_seq}",
        )
    if not 0 <= ref.raw_bytes <= MAX_SEGMENT_BYTES:
        raise CorruptObjectError(ref.key, _raw_bytes_problem(ref.raw_bytes))


def check_contents(
    header: dict[str, object] | None,
    records: list[Checkpoint | Event],
    ref: SegmentRef,
    run_id: str,
) -> None:
    """A decoded segment against its ref: the header (if any) names ``run_id`` and
    the ref's range and count; every record is of ``run_id``, seqs increase inside
    ``[first_seq, last_seq]``, and there are ``ref.records`` of them. Raises
    ``CorruptObjectError`` naming the key: an index that lists another run's segment
    (or a range it does not hold) must not restore it."""
    if header is not None:
        check_header(header, ref, run_id)
    last = ref.first_seq - 1
    for rec in records:
        last = check_record(rec, last, ref, run_id)
    check_count(len(records), ref)


def check_header(header: dict[str, object], ref: SegmentRef, run_id: str) -> None:
    """A segment's header names ``run_id`` and the ref's range and record count
    (:func:`check_contents`, the header part)."""
    want = {
        "run": run_id,
        "first_seq": ref.first_seq,
        "last_seq": ref.last_seq,
        "records": ref.records,
    }
    for field, value in want.items():
        got = header.get(field)
        if got != value or type(got) is not type(value):  # true == 1 in Python
            raise CorruptObjectError(
                ref.key,
                f"its header says {field} {_shown(header.get(field))}, the index says {value!r}",
            )


def check_record(rec: Checkpoint | Event, last: int, ref: SegmentRef, run_id: str) -> int:
    """One record of a segment is of ``run_id`` and its seq follows ``last`` (the
    previous record's, or ``first_seq - 1``) inside the ref's range; returns its seq
    (:func:`check_contents`, one record)."""
    if rec.run != run_id:
        raise CorruptObjectError(
            ref.key, f"it holds a record of run {_shown(rec.run)}, not of {run_id!r}"
        )
    if not last < rec.seq <= ref.last_seq:
        raise CorruptObjectError(
            ref.key,
            f"record seq {rec.seq} is out of order or outside the segment's range "
            f"{ref.first_seq}-{ref.last_seq}",
        )
    return rec.seq


def check_count(count: int, ref: SegmentRef) -> None:
    """A segment holds as many records as its ref says (:func:`check_contents`)."""
    if count != ref.records:
        raise CorruptObjectError(ref.key, f"it holds {count} records, the index says {ref.records}")


def split_header(
    raw: bytes, key: str, fmt: int | None = None
) -> tuple[dict[str, object] | None, bytes]:
    """A segment body's header and the record lines after it.

    ``fmt`` is the format its ref names: >= 2 requires the header (``CorruptObjectError``
    without it), 1 has none. ``None`` detects it: no record's ``type`` is
    ``"segment"``, so a first line of that type can only be the header.
    """
    if fmt is not None and fmt < CHAIN_FROM_VERSION:
        return None, raw
    first, _, rest = raw.partition(b"\n")
    header = header_of(first)
    if header is not None:
        return header, rest
    if fmt is None:
        return None, raw
    raise CorruptObjectError(key, "the first line is not the segment header")


def header_of(line: bytes) -> dict[str, object] | None:
    """``line`` parsed if it is a segment header (a JSON object of ``"type":
    "segment"``), else ``None``."""
    try:
        header = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if isinstance(header, dict) and header.get("type") == HEADER_TYPE:
        return header
    return None


def parse_records(raw: bytes, key: str, first_line: int = 1) -> list[Checkpoint | Event]:
    """Parse JSON Lines into records, naming the object and line on failure."""
    out: list[Checkpoint | Event] = []
    for n, line in enumerate(raw.splitlines(), start=first_line):
        if not line:
            continue
        try:
            out.append(_records.validate_python(orjson.loads(line)))
        except (orjson.JSONDecodeError, ValidationError) as exc:
            raise CorruptObjectError(key, f"line {n} is not a valid record ({exc})") from exc
    return out


def decode_segment(
    body: bytes,
    key: str,
    expected_sha256: str | None = None,
    fmt: int | None = None,
    raw_bytes: int | None = None,
) -> list[Checkpoint | Event]:
    """Decompress, verify and parse one segment object of format ``fmt`` (its ref's;
    ``None``: detected from the body), of at most ``raw_bytes`` uncompressed."""
    raw = decompress_segment(body, key, expected_sha256, raw_bytes)
    header, rest = split_header(raw, key, fmt)
    return parse_records(rest, key, first_line=1 if header is None else 2)
