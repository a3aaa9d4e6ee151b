"""``verify_export``: re-check an export bundle in a ``.tar``, a directory or a bucket
(``docs/export.md``). The bundle format and the checks it shares with export are in
:mod:`runarchive.compliance.bundle`.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import orjson

from runarchive.compliance.bundle import (
    _MANIFEST_LINE,
    BUNDLE_FORMAT,
    EXPORT_JSON,
    MANIFEST,
    CheckFailed,
    ExportProblem,
    _short,
    chain_prev,
    check_chain,
    check_segment,
    parse_lines,
    run_document,
    segment_file,
)
from runarchive.crypto.keyring import Keyring
from runarchive.crypto.sealing import open_index
from runarchive.errors import (
    CorruptObjectError,
    EncryptionError,
    FormatVersionError,
    InvalidInputError,
    KeyUnavailableError,
)
from runarchive.format.indexpages import check_page_ref, decode_page
from runarchive.format.model import Checkpoint, RunIndex, SegmentRef, parse_index, validate_run_id
from runarchive.store import Store
from runarchive.store.url import store_for_url

if TYPE_CHECKING:
    from runarchive.config import ArchiveConfig


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
        return _StoreSource(store_for_url(bundle, config, create=False), owned=True)
    path = Path(os.fspath(bundle))
    if path.is_dir():
        return _DirSource(path)
    if not path.is_file():
        raise InvalidInputError(f"{path} does not exist; give a bundle .tar, directory or URL")
    try:
        return _TarSource(path)
    except tarfile.TarError as exc:
        raise InvalidInputError(f"{path} is not a tar file ({exc})") from None


def _with_pages(src: _Source, base: str, head: RunIndex) -> RunIndex:
    """The head's refs with its pages' (format 4) spliced in, read from the bundle."""
    if not head.pages:
        return head
    refs: list[SegmentRef] = []
    for page in head.pages:
        name = base + "pages/" + check_page_ref(page, head.run_id)
        if name not in src.names:
            raise CheckFailed(f"names page {page.key!r}, which the bundle lacks")
        refs.extend(decode_page(src.read(name), page, head.run_id))
    return head.model_copy(update={"segments": (*refs, *head.segments), "pages": ()})


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
        index = _with_pages(src, base, index)
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
        except KeyUnavailableError:
            sealed_fields = set(index.sealed)  # as without a keyring, below
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
    before: SegmentRef | None = None
    complete = True  # every segment's records were read (sealed ones need the key)
    for ref in index.segments:
        path = base + segment_file(ref)
        if path not in src.names:
            out.append(ExportProblem(path, "missing: run.json lists this segment"))
            return out
        body = src.read(path)
        prev = chain_prev(ref, before)
        try:
            try:
                got = check_segment(ref, body, prev, rid, keyring, index.keys)
            except KeyUnavailableError:
                # A key this host lacks is not a flaw of the bundle: check what can be
                # checked without it (stored SHA-256, header, chain).
                got = check_segment(ref, body, prev, rid, None, index.keys)
        except CheckFailed as bad:
            out.append(ExportProblem(path, bad.problem))
            return out
        except EncryptionError as exc:
            out.append(ExportProblem(path, str(exc)))
            return out
        complete = complete and got is not None
        parts.append(got[0] if got is not None else b"")
        before = ref
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
