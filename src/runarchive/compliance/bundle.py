"""The export bundle format (``docs/export.md``, ``bundle_format`` 1) and its checks.

A bundle holds, per run, the decompressed records (``runs/<id>/records.jsonl``), the
index as stored (``index.json``), a summary (``run.json``) and the raw segment
objects (``segments/``), plus ``export.json``, a ``README`` and ``MANIFEST.sha256``.
This module has what both sides need: the pure checks of an index's hash chain and
of one segment (used by :mod:`runarchive.compliance.export` before it writes anything), the
documents a bundle holds. :func:`~runarchive.compliance.bundle_verify.verify_export` re-checks a
bundle in a ``.tar``, a directory or a bucket.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError

from runarchive.crypto.keyring import Keyring
from runarchive.crypto.sealing import check_sealed, open_segment
from runarchive.errors import (
    CorruptObjectError,
    FormatVersionError,
)
from runarchive.format.codec import check_ref, decompress_segment
from runarchive.format.model import (
    CHAIN_FROM_VERSION,
    FORMAT_VERSION,
    Checkpoint,
    DataKey,
    Event,
    Record,
    RunIndex,
    SegmentRef,
)

BUNDLE_FORMAT = 1
README, EXPORT_JSON, MANIFEST = "README", "export.json", "MANIFEST.sha256"
REPORT = "report.html"  # the viewer's page of the bundle's runs (runarchive.viewer.report)
_MANIFEST_LINE = re.compile(r"([0-9a-f]{64}) [ *](.+)")
_records = TypeAdapter(Record)


@dataclass(frozen=True)
class ExportProblem:
    """One thing wrong with a bundle: the file (relative to the bundle root) and what."""

    path: str
    problem: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


class CheckFailed(Exception):
    """A failed check (``key``: the object concerned, if not the index); export turns it
    into ``CorruptObjectError``, :func:`verify_export` into an :class:`ExportProblem`."""

    def __init__(self, problem: str, key: str | None = None) -> None:
        super().__init__(problem)
        self.problem, self.key = problem, key


def _short(sha: str | None) -> str:
    return "null" if sha is None else f"{sha[:16]}..."


# -- checks shared by export and verify_export (pure) -----------------------------


def check_chain(index: RunIndex) -> None:
    """Check an index's segment refs: each a segment of the run (its key gives the
    file name in a bundle, so this comes before any path is built), contiguous seq
    ranges from 1, consistent counts, each ``prev_sha256`` the previous ref's
    ``sha256``, ``chain_head`` the last one. Raises ``CheckFailed`` with the key of the
    offending segment (or none: the index)."""
    expected, prev = 1, None
    links: set[str | None] = {None}
    names: set[str] = set()
    for ref in index.segments:
        if ref.format > FORMAT_VERSION:
            raise FormatVersionError(
                f"{ref.key!r} was written by format version {ref.format}; this runarchive "
                f"reads up to {FORMAT_VERSION}. Upgrade runarchive to export it."
            )
        try:
            check_ref(ref, index.run_id)
        except CorruptObjectError as exc:
            raise CheckFailed(exc.detail, ref.key) from None
        if ref.first_seq != expected or ref.last_seq < ref.first_seq:
            raise CheckFailed(
                f"covers seq {ref.first_seq}-{ref.last_seq}, but the previous segment "
                f"ends at {expected - 1}: the run's segments are not contiguous",
                ref.key,
            )
        if ref.records + ref.dropped != ref.last_seq - ref.first_seq + 1:
            raise CheckFailed("records + dropped does not equal the size of its seq range", ref.key)
        if ref.checkpoints + ref.events != ref.records:
            raise CheckFailed("checkpoints + events does not equal records", ref.key)
        if ref.format >= CHAIN_FROM_VERSION and ref.prev_sha256 not in links:
            raise CheckFailed(
                f"prev_sha256 is {_short(ref.prev_sha256)}, the previous segment's sha256 "
                f"is {_short(prev)}: the hash chain is broken",
                ref.key,
            )
        name = segment_file(ref)
        if name in names:
            raise CheckFailed("two segments of the run have the same file name", ref.key)
        names.add(name)
        expected, prev = ref.last_seq + 1, ref.sha256
        links = {prev, ref.link} if ref.link else {prev}  # format 4: a merged segment
    if index.last_seq != expected - 1:
        raise CheckFailed(f"last_seq is {index.last_seq}, the segments end at {expected - 1}")
    chained = any(r.format >= CHAIN_FROM_VERSION for r in index.segments)
    if (chained or index.chain_head is not None) and index.chain_head != prev:
        raise CheckFailed(
            f"chain_head is {_short(index.chain_head)}, the last segment's sha256 is "
            f"{_short(prev)}: the hash chain does not end at the head"
        )


def chain_prev(ref: SegmentRef, before: SegmentRef | None) -> str | None:
    """The ``prev_sha256`` the header of ``ref`` must carry, ``before`` being the
    previous ref: its ``sha256``, or its ``link`` when ``ref`` names that (format 4)."""
    if before is None:
        return None
    if before.link is not None and ref.prev_sha256 == before.link:
        return before.link
    return before.sha256


def check_segment(
    ref: SegmentRef,
    body: bytes,
    prev: str | None,
    run_id: str,
    keyring: Keyring | None = None,
    keys: Sequence[DataKey] = (),
) -> tuple[bytes, list[Checkpoint | Event]] | None:
    """Verify one segment object against its ref and the chain (``prev``: the previous
    segment's sha256); return its record lines (header removed) and records. A sealed
    segment without ``keyring`` is checked as far as it can be (stored SHA-256,
    plaintext header) and gives ``None``."""
    if ref.dek is not None:
        try:
            if keyring is None:
                check_sealed(body, ref, run_id)
                return None
            raw = open_segment(body, ref, run_id, keyring, keys)
        except CorruptObjectError as exc:
            raise CheckFailed(exc.detail) from None
        return _check_plain(ref, raw, prev, run_id)
    try:
        raw = decompress_segment(body, ref.key, raw_bytes=ref.raw_bytes)
    except CorruptObjectError as exc:
        raise CheckFailed(exc.detail) from None
    actual = hashlib.sha256(raw).hexdigest()
    if actual != ref.sha256:
        raise CheckFailed(
            f"SHA-256 of the body is {_short(actual)}, the index says {_short(ref.sha256)}"
        )
    return _check_plain(ref, raw, prev, run_id)


def _check_plain(
    ref: SegmentRef, raw: bytes, prev: str | None, run_id: str
) -> tuple[bytes, list[Checkpoint | Event]]:
    rest, first_line = raw, 1
    if ref.format >= CHAIN_FROM_VERSION:
        head, _, rest = raw.partition(b"\n")
        first_line = 2
        try:
            header = orjson.loads(head)
        except orjson.JSONDecodeError:
            header = None
        if not isinstance(header, dict) or header.get("type") != "segment":
            raise CheckFailed("the first line is not the segment header")
        want = {
            "format": ref.format,
            "run": run_id,
            "first_seq": ref.first_seq,
            "last_seq": ref.last_seq,
            "records": ref.records,
            "prev_sha256": prev,
        }
        for name, value in want.items():
            if header.get(name) != value:
                raise CheckFailed(
                    f"header {name} is {header.get(name)!r}, expected {value!r}"
                    + (": the hash chain is broken" if name == "prev_sha256" else "")
                )
    records = parse_lines(rest, run_id, first_line)
    last = ref.first_seq - 1
    for rec in records:
        if not last < rec.seq <= ref.last_seq:
            raise CheckFailed(
                f"record seq {rec.seq} is out of order or outside {ref.first_seq}-{ref.last_seq}"
            )
        last = rec.seq
    checkpoints = sum(1 for r in records if isinstance(r, Checkpoint))
    if (len(records), checkpoints) != (ref.records, ref.checkpoints):
        raise CheckFailed(
            f"holds {len(records)} records ({checkpoints} checkpoints), the index says "
            f"{ref.records} ({ref.checkpoints})"
        )
    return rest, records


def parse_lines(raw: bytes, run_id: str, first_line: int = 1) -> list[Checkpoint | Event]:
    """Parse ``\\n``-terminated JSON Lines of records of ``run_id``; the error names the line."""
    if raw and not raw.endswith(b"\n"):
        raise CheckFailed("the last line has no newline")
    out: list[Checkpoint | Event] = []
    for n, line in enumerate(raw.split(b"\n")[:-1], start=first_line):
        try:
            rec = _records.validate_python(orjson.loads(line))
        except (orjson.JSONDecodeError, ValidationError) as exc:
            why = str(exc).splitlines()[0]
            raise CheckFailed(f"line {n} is not a valid record ({why})") from None
        if rec.run != run_id:
            raise CheckFailed(f"line {n} belongs to run {rec.run!r}, not {run_id!r}")
        out.append(rec)
    return out


def segment_file(ref: SegmentRef) -> str:
    """A segment's file in the bundle, relative to its run directory."""
    return "segments/" + ref.key.rsplit("/", 1)[-1]


def run_document(index: RunIndex, opened: RunIndex | None = None) -> dict[str, Any]:
    """``run.json``: the run's metadata, counts, seq range, chain head and segments;
    for an encrypted run its key ids, and the metadata of ``opened`` (its decrypted
    index) if the export decrypts."""
    dumped = (opened or index).model_dump(mode="json")
    segs = index.segments
    extra: dict[str, Any] = {}
    if index.keys:
        extra["encryption"] = {
            "alg": "AES-256-GCM",
            "decrypted": opened is not None,
            "keys": [{"id": k.id, "kek": k.kek} for k in index.keys],
        }
    return extra | {
        "bundle_format": BUNDLE_FORMAT,
        **{k: dumped[k] for k in ("run_id", "agent", "metadata", "status")},
        **{k: dumped[k] for k in ("created_at", "updated_at", "ended_at", "result", "error")},
        "records": sum(s.records for s in segs),
        "checkpoints": sum(s.checkpoints for s in segs),
        "events": sum(s.events for s in segs),
        "dropped": sum(s.dropped for s in segs),
        "first_seq": 1 if segs else None,
        "last_seq": index.last_seq,
        "chain_head": index.chain_head,
        "stored_bytes": index.stored_bytes,
        "raw_bytes": index.raw_bytes,
        "segments": [
            {
                "file": segment_file(s),
                "key": s.key,
                "format": s.format,
                "first_seq": s.first_seq,
                "last_seq": s.last_seq,
                "records": s.records,
                "checkpoints": s.checkpoints,
                "events": s.events,
                "dropped": s.dropped,
                "stored_bytes": s.stored_bytes,
                "raw_bytes": s.raw_bytes,
                "sha256": s.sha256,
                "prev_sha256": s.prev_sha256,
            }
            | ({"dek": s.dek} if s.dek is not None else {})
            for s in segs
        ],
    }


def manifest_text(sums: dict[str, str]) -> str:
    """``sha256sum`` lines for every file but the manifest, sorted by path."""
    return "".join(f"{sums[p]}  {p}\n" for p in sorted(sums) if p != MANIFEST)


def readme_text(doc: dict[str, Any]) -> str:
    """The bundle's ``README``: layout and how to check it without runarchive."""
    runs = "\n".join(f"  {r['run_id']}  {r['status']}  {r['records']} records" for r in doc["runs"])
    return f"""runarchive export bundle (bundle_format {BUNDLE_FORMAT})
Created {doc["created_at"]} by runarchive {doc["runarchive_version"]} from {doc["source"]}.
Runs:
{runs}

LAYOUT (paths relative to this directory)
  README                              this file
  export.json                         what was exported: time, source, filter, runs, chain heads
  MANIFEST.sha256                     SHA-256 of every other file (sha256sum format)
  report.html                         the runs, their timelines and records, to open in a
                                      browser (self-contained, no network)
  runs/<run_id>/records.jsonl         every archived record, one JSON object per line, by seq
  runs/<run_id>/index.json            the run index exactly as the archive stored it
  runs/<run_id>/run.json              agent, status, times, counts, seq range, chain_head and
                                      the segments with their sha256 and prev_sha256
  runs/<run_id>/segments/*.jsonl.zst  the archived segment objects, byte for byte

Records are checkpoints ("type": "checkpoint": name, metadata, state) and events
("type": "event": kind, lane, data), each with run, seq and ts (UTC). Seqs increase;
a missing seq is a checkpoint the archive's compression policy did not keep
(run.json "dropped" counts them). Full reference: docs/export.md and docs/format.md
of runarchive.

CHECK IT (needs only bash, tar, sha256sum, jq and zstd)
  tar -xf BUNDLE.tar && cd BUNDLE     # if you received a .tar: it holds one directory
  sha256sum -c MANIFEST.sha256        # every line must say OK
  diff <(find . -type f ! -name MANIFEST.sha256 | cut -c3- | LC_ALL=C sort) \\
       <(cut -c67- MANIFEST.sha256)   # no output: no file added or missing

READ IT
  jq -c . runs/<run_id>/records.jsonl
  jq -c 'select(.type == "event")' runs/<run_id>/records.jsonl
  jq . runs/<run_id>/run.json

RE-CHECK THE HASH CHAIN of a run, in runs/<run_id>/
  # 1. each segment has the sha256 run.json (and index.json) gives: of its uncompressed
  #    body (*.jsonl.zst), or of the file itself for an encrypted segment (*.sealed):
  jq -r '.segments[] | "\\(.sha256) \\(.file)"' run.json | while read -r sha f; do
    case "$f" in *.sealed) got=$(sha256sum < "$f") ;; *) got=$(zstd -dc "$f" | sha256sum) ;; esac
    test "$(echo "$got" | cut -c1-64)" = "$sha" && echo "OK $f" || echo "BAD $f"
  done
  # 2. each segment links to the one before it, and the last is the chain head ("true"):
  jq -e '[.segments[].prev_sha256] == ([null] + [.segments[].sha256])[:-1]
         and .chain_head == ([.segments[].sha256] | last)' run.json
  # 3. each segment's first line (its header) repeats that link in prev_sha256:
  for f in $(jq -r '.segments[].file' run.json); do zstd -dc "$f" | head -n 1; done
  # 4. records.jsonl is exactly the segments' records without their headers (no output):
  for f in $(jq -r '.segments[].file' run.json); do zstd -dc "$f" | tail -n +2; done |
    cmp - records.jsonl
  # 5. index.json (with its pages) names those segments and says what run.json and
  #    export.json say of the run ("true"); an edited index with a regenerated
  #    MANIFEST.sha256 passes steps 1-4 and fails here:
  {{ jq -r '.pages[]?.key | "pages/" + (split("/") | last)' index.json |
      while read -r p; do zstd -dc "$p"; echo; done; cat index.json; }} |
    jq -se --slurpfile run run.json --slurpfile exp ../../export.json '
      def refs: map({{key, sha256, prev_sha256, first_seq, last_seq, records, dropped}});
      last as $i | $run[0] as $r | ($exp[0].runs[] | select(.run_id == $r.run_id)) as $e
      | (map(.segments[]) | refs) == ($r.segments | refs)
        and ([$i, $r, $e] | map({{run_id, agent, status, last_seq, chain_head}}) | unique
             | length) == 1
        and ($i.keys != [] or ([$i, $r] | map({{metadata, result, error}}) | unique
             | length) == 1)'
  (Segments of format 1, written before runarchive had the chain, have no header and no
  link; run.json gives each segment's "format".)
{_sealed_text(doc)}"""


def _sealed_text(doc: dict[str, Any]) -> str:
    sealed = [r["run_id"] for r in doc["runs"] if r.get("sealed")]
    if not sealed:
        return ""
    return f"""
ENCRYPTED RUNS ({len(sealed)}: {", ".join(sealed[:5])}{" ..." if len(sealed) > 5 else ""})
  These runs were exported sealed: their segments (segments/*.sealed) are AES-256-GCM
  ciphertext and there is no records.jsonl. Steps 1-2 above work on them as they are
  (sha256 and prev_sha256 are of the stored objects); steps 3-4 need the key.
  run.json "encryption.keys" names the key-encryption key of each data key ("kek":
  local:<id> or kms:<key>); index.json holds the wrapped data keys. With the key:
  runarchive export --decrypt from the archive, or decrypt by hand as runarchive's
  docs/format.md section 11 describes (Python's cryptography package, zstd, jq).
"""
