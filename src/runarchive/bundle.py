"""The export bundle format (``docs/export.md``, ``bundle_format`` 1) and its checks.

A bundle holds, per run, the decompressed records (``runs/<id>/records.jsonl``), the
index as stored (``index.json``), a summary (``run.json``) and the raw segment
objects (``segments/``), plus ``export.json``, a ``README`` and ``MANIFEST.sha256``.
This module has what both sides need: the pure checks of an index's hash chain and
of one segment (used by :mod:`runarchive.export` before it writes anything), the
documents a bundle holds, and :func:`verify_export`, which re-checks a bundle in a
``.tar``, a directory or a bucket.
"""

from __future__ import annotations

import hashlib
import os
import re
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import orjson
import zstandard
from pydantic import TypeAdapter, ValidationError

from runarchive.crypto import Keyring, check_stored, open_index, open_segment, split_sealed
from runarchive.errors import (
    CorruptObjectError,
    EncryptionError,
    FormatVersionError,
    InvalidInputError,
)
from runarchive.model import (
    CHAIN_FROM_VERSION,
    FORMAT_VERSION,
    Checkpoint,
    DataKey,
    Event,
    Record,
    RunIndex,
    SegmentRef,
    parse_index,
    validate_run_id,
)
from runarchive.store import Store

if TYPE_CHECKING:
    from runarchive.config import ArchiveConfig

BUNDLE_FORMAT = 1
README, EXPORT_JSON, MANIFEST = "README", "export.json", "MANIFEST.sha256"
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
    """Check an index's segment refs: contiguous seq ranges from 1, consistent counts,
    each ``prev_sha256`` the previous ref's ``sha256``, ``chain_head`` the last one.
    Raises ``CheckFailed`` with the key of the offending segment (or none: the index)."""
    expected, prev = 1, None
    names: set[str] = set()
    for ref in index.segments:
        if ref.format > FORMAT_VERSION:
            raise FormatVersionError(
                f"{ref.key!r} was written by format version {ref.format}; this runarchive "
                f"reads up to {FORMAT_VERSION}. Upgrade runarchive to export it."
            )
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
        if ref.format >= CHAIN_FROM_VERSION and ref.prev_sha256 != prev:
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
    if index.last_seq != expected - 1:
        raise CheckFailed(f"last_seq is {index.last_seq}, the segments end at {expected - 1}")
    chained = any(r.format >= CHAIN_FROM_VERSION for r in index.segments)
    if (chained or index.chain_head is not None) and index.chain_head != prev:
        raise CheckFailed(
            f"chain_head is {_short(index.chain_head)}, the last segment's sha256 is "
            f"{_short(prev)}: the hash chain does not end at the head"
        )


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
            check_stored(body, ref)
            header, _, _ = split_sealed(body, ref.key)
            if keyring is None:
                for name in ("run", "first_seq", "last_seq", "dek"):
                    want = run_id if name == "run" else getattr(ref, name)
                    if header.get(name) != want:
                        raise CheckFailed(f"sealed header {name} is {header.get(name)!r}")
                return None
            raw = open_segment(body, ref, run_id, keyring, keys)
        except CorruptObjectError as exc:
            raise CheckFailed(exc.detail) from None
        return _check_plain(ref, raw, prev, run_id)
    try:
        raw = zstandard.ZstdDecompressor().decompress(body)
    except zstandard.ZstdError as exc:
        raise CheckFailed(f"the zstd frame does not decode ({exc})") from None
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


def store_for_url(url: str, config: ArchiveConfig | None = None) -> Store:
    """The store an ``s3://`` / ``file://`` URL names, with ``config``'s other settings
    (endpoint, region, object lock, SSE) or the ``RUNARCHIVE_*`` environment."""
    from runarchive.config import load_config  # noqa: PLC0415
    from runarchive.reader import make_store  # noqa: PLC0415 - reader imports this module
    from runarchive.retention import check_store_settings  # noqa: PLC0415

    base = config.model_dump(exclude={"url"}) if config is not None else {}
    cfg = load_config(**{**base, "url": url})
    store = make_store(cfg)
    try:
        check_store_settings(cfg, store)
    except BaseException:
        store.close()
        raise
    return store


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
  # 1. each segment's uncompressed body has the sha256 run.json (and index.json) gives:
  jq -r '.segments[] | "\\(.sha256) \\(.file)"' run.json | while read -r sha f; do
    test "$(zstd -dc "$f" | sha256sum | cut -c1-64)" = "$sha" && echo "OK $f" || echo "BAD $f"
  done
  # 2. each segment links to the one before it, and the last is the chain head ("true"):
  jq -e '[.segments[].prev_sha256] == ([null] + [.segments[].sha256])[:-1]
         and .chain_head == ([.segments[].sha256] | last)' run.json
  # 3. each segment's first line (its header) repeats that link in prev_sha256:
  for f in $(jq -r '.segments[].file' run.json); do zstd -dc "$f" | head -n 1; done
  # 4. records.jsonl is exactly the segments' records without their headers (no output):
  for f in $(jq -r '.segments[].file' run.json); do zstd -dc "$f" | tail -n +2; done |
    cmp - records.jsonl
  (Segments of format 1, written before runarchive had the chain, have no header and no
  link; run.json gives each segment's "format".)
"""


# -- verify_export ----------------------------------------------------------------


class _Source:
    """A bundle's files, whatever holds them; ``bad`` lists unsafe entries."""

    def __init__(self) -> None:
        self.names: set[str] = set()
        self.bad: list[ExportProblem] = []

    def read(self, name: str) -> bytes:
        raise NotImplementedError

    def close(self) -> None:
        """Release the tar file or the store."""


class _DirSource(_Source):
    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root
        for dirpath, dirnames, filenames in os.walk(root):
            for name in [*dirnames, *filenames]:
                full = Path(dirpath) / name
                rel = full.relative_to(root).as_posix()
                if full.is_symlink():
                    self.bad.append(ExportProblem(rel, "a symbolic link; bundles hold files only"))
                elif name in filenames:
                    self.names.add(rel)

    def read(self, name: str) -> bytes:
        return (self.root / name).read_bytes()


class _TarSource(_Source):
    def __init__(self, path: Path) -> None:
        super().__init__()
        self.tar = tarfile.open(path, "r:*")  # noqa: SIM115 - closed by close()
        self.members: dict[str, tarfile.TarInfo] = {}
        tops: set[str] = set()
        for m in self.tar.getmembers():
            parts = PurePosixPath(m.name).parts
            if m.name.startswith("/") or ".." in parts:
                self.bad.append(ExportProblem(m.name, "an unsafe path in the tar"))
                continue
            if parts:
                tops.add(parts[0])
            if m.isdir():
                continue
            if not m.isfile() or len(parts) < 2:
                self.bad.append(ExportProblem(m.name, "not a file inside the bundle directory"))
                continue
            self.members["/".join(parts[1:])] = m
        if len(tops) > 1:
            self.bad.append(
                ExportProblem(path.name, f"has {len(tops)} top-level entries, a bundle has one")
            )
        self.names = set(self.members)

    def read(self, name: str) -> bytes:
        f = self.tar.extractfile(self.members[name])
        assert f is not None
        return f.read()

    def close(self) -> None:
        self.tar.close()


class _StoreSource(_Source):
    def __init__(self, store: Store, owned: bool) -> None:
        super().__init__()
        self.store, self.owned = store, owned
        self.names = {m.key for m in store.list("")}

    def read(self, name: str) -> bytes:
        return self.store.get(name).body

    def close(self) -> None:
        if self.owned:
            self.store.close()


def _open_source(bundle: str | os.PathLike[str] | Store, config: ArchiveConfig | None) -> _Source:
    if isinstance(bundle, Store):
        return _StoreSource(bundle, owned=False)
    if isinstance(bundle, str) and bundle.startswith(("s3://", "file://")):
        return _StoreSource(store_for_url(bundle, config), owned=True)
    path = Path(os.fspath(bundle))
    if path.is_dir():
        return _DirSource(path)
    if not path.is_file():
        raise InvalidInputError(f"{path} does not exist; give a bundle .tar, directory or URL")
    try:
        return _TarSource(path)
    except tarfile.TarError as exc:
        raise InvalidInputError(f"{path} is not a tar file ({exc})") from None


def verify_export(
    bundle: str | os.PathLike[str] | Store,
    *,
    config: ArchiveConfig | None = None,
    keyring: Keyring | None = None,
) -> list[ExportProblem]:
    """Check a bundle (a ``.tar``, a directory, an ``s3://``/``file://`` URL or a Store);
    return its problems, each naming a file. ``[]`` means the bundle is sound.

    Checks: every file against ``MANIFEST.sha256`` and no file missing or extra; that
    ``export.json``, ``run.json`` and ``index.json`` agree (chain heads, segments,
    counts); ``records.jsonl`` parses, its seqs increase and fit the index's segments;
    each segment decompresses to its sha256, its header and links hold up to
    ``chain_head``, and its records are exactly those of ``records.jsonl``. Reads every
    file twice (on a store: 1 LIST and 2 GETs per file); ``config`` gives the settings
    for a URL (default: the ``RUNARCHIVE_*`` environment). Encrypted runs: without
    ``keyring`` their segments are checked by stored SHA-256, header and chain only;
    with it, decrypted and checked in full.
    """
    src = _open_source(bundle, config)
    try:
        return _verify(src, keyring)
    finally:
        src.close()


def _verify(src: _Source, keyring: Keyring | None) -> list[ExportProblem]:
    out = list(src.bad)
    listed: dict[str, str] = {}
    if MANIFEST not in src.names:
        out.append(ExportProblem(MANIFEST, "missing: the bundle cannot be checked without it"))
    else:
        for n, line in enumerate(src.read(MANIFEST).decode(errors="replace").splitlines(), 1):
            m = _MANIFEST_LINE.fullmatch(line)
            if m is None or m[2] in listed or m[2] == MANIFEST:
                out.append(ExportProblem(MANIFEST, f"line {n} is malformed or repeated: {line!r}"))
            else:
                listed[m[2]] = m[1]
    for path, want in sorted(listed.items()):
        if path not in src.names:
            out.append(ExportProblem(path, "missing: MANIFEST.sha256 lists it"))
        elif (got := hashlib.sha256(src.read(path)).hexdigest()) != want:
            out.append(
                ExportProblem(
                    path, f"SHA-256 is {_short(got)}, MANIFEST.sha256 says {_short(want)}"
                )
            )
    for name in sorted(src.names - set(listed) - {MANIFEST}):
        out.append(ExportProblem(name, "extra file: not listed in MANIFEST.sha256"))
    doc = _json(src, EXPORT_JSON, out)
    if not isinstance(doc, dict):
        return out
    fmt = doc.get("bundle_format")
    if fmt != BUNDLE_FORMAT:
        out.append(
            ExportProblem(
                EXPORT_JSON,
                f"bundle_format is {fmt!r}; this runarchive reads {BUNDLE_FORMAT}"
                + (": upgrade runarchive" if isinstance(fmt, int) and fmt > BUNDLE_FORMAT else ""),
            )
        )
        return out
    entries = doc.get("runs") if isinstance(doc.get("runs"), list) else None
    if entries is None or not all(isinstance(e, dict) for e in entries):
        out.append(ExportProblem(EXPORT_JSON, "runs is not a list of objects"))
        return out
    exported = [e.get("run_id") for e in entries]
    present = {n.split("/")[1] for n in src.names if n.startswith("runs/") and n.count("/") >= 2}
    for rid in sorted(present - {r for r in exported if isinstance(r, str)}):
        out.append(ExportProblem(f"runs/{rid}/", "a run directory export.json does not list"))
    for entry in entries:
        out.extend(_verify_run(src, entry, keyring))
    return out


def _json(src: _Source, path: str, out: list[ExportProblem]) -> Any:
    if path not in src.names:
        out.append(ExportProblem(path, "missing"))
        return None
    try:
        return orjson.loads(src.read(path))
    except orjson.JSONDecodeError as exc:
        out.append(ExportProblem(path, f"not JSON ({exc})"))
        return None


def _verify_run(
    src: _Source, entry: dict[str, Any], keyring: Keyring | None
) -> list[ExportProblem]:
    out: list[ExportProblem] = []
    rid = entry.get("run_id")
    try:
        validate_run_id(rid)
    except InvalidInputError as exc:
        return [ExportProblem(EXPORT_JSON, f"a run has an invalid run_id: {exc}")]
    assert isinstance(rid, str)
    base = f"runs/{rid}/"
    doc = _json(src, base + "run.json", out)
    if base + "index.json" not in src.names:
        return [*out, ExportProblem(base + "index.json", "missing")]
    try:
        index = parse_index(src.read(base + "index.json"), base + "index.json")
        if index.run_id != rid:
            raise CheckFailed(f"is the index of run {index.run_id!r}, not {rid!r}")
        check_chain(index)
    except (CheckFailed, CorruptObjectError, FormatVersionError) as exc:
        where = f"{exc.key}: " if isinstance(exc, CheckFailed) and exc.key else ""
        problem = exc.problem if isinstance(exc, CheckFailed) else str(exc)
        return [*out, ExportProblem(base + "index.json", where + problem)]
    enc = doc.get("encryption") if isinstance(doc, dict) else None
    decrypted = isinstance(enc, dict) and enc.get("decrypted") is True
    sealed_fields: set[str] = set()
    opened = None
    if decrypted and keyring is not None:
        try:
            opened = open_index(index, keyring, base + "index.json")
        except EncryptionError as exc:
            out.append(ExportProblem(base + "index.json", str(exc)))
    elif decrypted:  # what was decrypted cannot be compared without the key
        sealed_fields = set(index.sealed)
    summary = run_document(index, (opened or index) if decrypted else None)
    if isinstance(doc, dict):
        for k, want in summary.items():
            if k not in sealed_fields and doc.get(k) != want:
                out.append(ExportProblem(base + "run.json", f"{k} disagrees with index.json"))
    for k in ("status", "last_seq", "records", "chain_head"):
        if entry.get(k) != summary[k]:
            out.append(ExportProblem(EXPORT_JSON, f"run {rid}: {k} disagrees with index.json"))
    records = src.read(base + "records.jsonl") if base + "records.jsonl" in src.names else None
    if records is None and index.keys and not decrypted:
        pass  # exported sealed: the records are only in the segments' ciphertext
    elif records is None:
        out.append(ExportProblem(base + "records.jsonl", "missing"))
    else:
        try:
            _check_records(records, index)
        except CheckFailed as bad:
            out.append(ExportProblem(base + "records.jsonl", bad.problem))
    parts: list[bytes] = []
    prev: str | None = None
    complete = True  # every segment's records were read (sealed ones need the key)
    for ref in index.segments:
        path = base + segment_file(ref)
        if path not in src.names:
            out.append(ExportProblem(path, "missing: run.json lists this segment"))
            return out
        try:
            got = check_segment(ref, src.read(path), prev, rid, keyring, index.keys)
        except CheckFailed as bad:
            out.append(ExportProblem(path, bad.problem))
            return out
        except EncryptionError as exc:
            out.append(ExportProblem(path, str(exc)))
            return out
        complete = complete and got is not None
        parts.append(got[0] if got is not None else b"")
        prev = ref.sha256
    if records is not None and complete and b"".join(parts) != records:
        out.append(
            ExportProblem(base + "records.jsonl", "differs from the records of the segments")
        )
    return out


def _check_records(raw: bytes, index: RunIndex) -> None:
    """Records parse, seqs increase, and each segment's range holds its ref's counts."""
    recs = parse_lines(raw, index.run_id)
    refs, i, last = index.segments, 0, 0
    counts = [[0, 0] for _ in refs]
    for n, rec in enumerate(recs, 1):
        if rec.seq <= last:
            raise CheckFailed(f"line {n}: seq {rec.seq} does not increase")
        last = rec.seq
        while i < len(refs) and rec.seq > refs[i].last_seq:
            i += 1
        if i == len(refs):
            raise CheckFailed(
                f"line {n}: seq {rec.seq} is beyond the index's last_seq {index.last_seq}"
            )
        counts[i][0 if isinstance(rec, Checkpoint) else 1] += 1
    for ref, (cps, evs) in zip(refs, counts, strict=True):
        if (cps, evs) != (ref.checkpoints, ref.events):
            raise CheckFailed(
                f"seq {ref.first_seq}-{ref.last_seq}: {cps} checkpoints and {evs} events, "
                f"index.json says {ref.checkpoints} and {ref.events}"
            )
