"""Compliance export: a self-contained bundle of archived runs that anyone can check.

A bundle (``docs/export.md``, ``bundle_format`` 1) is a plain ``.tar``, a directory,
or objects under a prefix of another bucket, holding per run the decompressed
records (``records.jsonl``), the index as stored, a summary (``run.json``) and the
raw segment objects, plus ``export.json``, a ``README`` and ``MANIFEST.sha256``.
An auditor checks it with ``sha256sum -c``, ``tar``, ``jq`` and ``zstd``.

Before anything is written, every segment is fetched and verified: its SHA-256
against the index, its header against its ref, and the hash chain (each link to the
previous segment, the last one to ``chain_head``). Ids and keys that come from object
bodies (an index's ``run_id`` and segment keys, manifest entries) are checked against
the run asked for before any path is built from them. A corrupt run is refused with
``CorruptObjectError`` naming the key. The bundle is staged in a temporary
directory and published at the end (rename, create-only link, or uploads with the
manifest last), so a failed export leaves nothing at ``dest``.
The format is in :mod:`runarchive.compliance.bundle`, :func:`verify_export` in
:mod:`runarchive.compliance.bundle_verify`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tarfile
import tempfile
import uuid
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlparse, urlunparse

import orjson

from runarchive._version import __version__
from runarchive.compliance.bundle import (
    BUNDLE_FORMAT,
    EXPORT_JSON,
    MANIFEST,
    README,
    REPORT,
    CheckFailed,
    ExportProblem,
    chain_prev,
    check_chain,
    check_segment,
    manifest_text,
    readme_text,
    run_document,
    segment_file,
)
from runarchive.compliance.bundle_verify import verify_export
from runarchive.crypto.keyring import Keyring
from runarchive.crypto.sealing import open_index
from runarchive.engine.restore import Progress, ProgressArg, check_index_run, progress_for
from runarchive.errors import (
    CorruptObjectError,
    InvalidInputError,
    NamedObjectMissingError,
    ObjectNotFoundError,
    PreconditionFailedError,
    RunArchiveError,
    RunNotFoundError,
    StoreError,
)
from runarchive.format.codec import index_key
from runarchive.format.indexpages import check_page_ref, load_index
from runarchive.format.model import (
    RunIndex,
    RunStatus,
    SegmentRef,
    format_ts,
    parse_index,
    utcnow,
    validate_run_id,
)
from runarchive.store import Store, check_key
from runarchive.store.url import store_for_url

if TYPE_CHECKING:
    from runarchive.config import ArchiveConfig
    from runarchive.engine.manifest.core import Manifest

__all__ = ["ExportProblem", "ExportResult", "ExportedRun", "export_runs", "verify_export"]

_COMPRESSED = (".tar.gz", ".tgz", ".tar.zst", ".tar.xz", ".tar.bz2", ".zip")
_JSON = orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE

# (export.json, the staging directory) -> report.html's text (runarchive.viewer.report)
ReportWriter = Callable[[dict[str, Any], Path], str]


@dataclass(frozen=True)
class ExportedRun:
    """One run in a bundle."""

    run_id: str
    status: str
    records: int
    segments: int
    chain_head: str | None


@dataclass(frozen=True)
class ExportResult:
    """What :meth:`Reader.export` wrote: where, which runs, how many files and bytes."""

    dest: str
    kind: Literal["tar", "directory", "store"]
    runs: tuple[ExportedRun, ...]
    files: int  # files in the bundle, MANIFEST.sha256 included
    bytes: int  # size of the .tar, or the sum of the files' sizes

    def to_json(self) -> dict[str, Any]:
        """The ``runarchive export --json`` document."""
        return {
            "dest": self.dest,
            "kind": self.kind,
            "files": self.files,
            "bytes": self.bytes,
            "runs": [vars(r) for r in self.runs],
        }


# -- export -----------------------------------------------------------------------


@dataclass
class _Staged:
    """Files written under a staging directory, with their SHA-256 and size."""

    root: Path
    sums: dict[str, str] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)

    def write(self, rel: str, chunks: Iterable[bytes]) -> None:
        # The last line of defence: ids and keys from the bucket were checked before,
        # but no path may leave the staging directory whatever a body says.
        path = self.root / check_key(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        digest, size = hashlib.sha256(), 0
        with open(path, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
                digest.update(chunk)
                size += len(chunk)
            f.flush()
            os.fsync(f.fileno())
        self.sums[rel], self.sizes[rel] = digest.hexdigest(), size

    def discard(self, prefix: str) -> None:
        """Forget and delete the staged files under ``prefix`` (a run staged again)."""
        for rel in [r for r in self.sums if r.startswith(prefix)]:
            (self.root / rel).unlink(missing_ok=True)
            del self.sums[rel], self.sizes[rel]

    def order(self) -> list[str]:
        """README, export.json, MANIFEST.sha256 (and report.html) first, then the runs'
        files by path."""
        head = [README, EXPORT_JSON, MANIFEST, REPORT]
        return [h for h in head if h in self.sums] + sorted(r for r in self.sums if r not in head)


@dataclass
class _Target:
    kind: Literal["tar", "directory", "store"]
    path: Path | None = None
    store: Store | None = None
    owned: bool = False  # we opened the store: close it

    @property
    def description(self) -> str:
        return self.store.description if self.store is not None else str(self.path)


def _target(dest: str | os.PathLike[str] | Store, config: ArchiveConfig | None) -> _Target:
    """Where the bundle goes; refuses a destination that is not free (no request for a
    path; 1 LIST for a store)."""
    if isinstance(dest, Store):
        target = _Target("store", store=dest)
    elif isinstance(dest, str) and dest.startswith(("s3://", "file://")):
        target = _Target("store", store=store_for_url(dest, config), owned=True)
    else:
        path = Path(os.fspath(dest)).absolute()
        if path.name.lower().endswith(_COMPRESSED):
            raise InvalidInputError(
                f"{path.name}: a bundle is a plain .tar or a directory; write BUNDLE.tar and "
                "compress it afterwards if you need to"
            )
        if not path.parent.is_dir():
            raise InvalidInputError(f"directory {path.parent} does not exist; create it first")
        kind: Literal["tar", "directory"] = "tar" if path.suffix == ".tar" else "directory"
        if kind == "tar" and (path.name == ".tar" or path.exists()):
            raise InvalidInputError(f"{path} exists or has no name; choose a new .tar path")
        if kind == "directory" and path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise InvalidInputError(f"{path} exists and is not an empty directory")
        return _Target(kind, path=path)
    assert target.store is not None
    try:
        taken = next(iter(target.store.list("")), None)
    except BaseException:
        if target.owned:
            target.store.close()
        raise
    if taken is not None:
        if target.owned:
            target.store.close()
        raise InvalidInputError(
            f"{target.store.description} already holds objects ({taken.key!r}); export to "
            "an empty prefix, e.g. s3://bucket/exports/<date>"
        )
    return target


def select_runs(
    manifest: Manifest,
    run_ids: Sequence[str] | str | None,
    *,
    agent: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    status: RunStatus | None = None,
) -> list[str]:
    """The runs to export: ``run_ids`` as given (duplicates dropped), or the manifest's
    runs matching the filter, oldest first. Cost: none for ids; 16 GETs for a filter
    (8 with ``status``)."""
    has_filter = any(v is not None for v in (agent, since, until, status))
    if run_ids is not None:
        if isinstance(run_ids, str):
            run_ids = [run_ids]
        if has_filter:
            raise InvalidInputError(
                "give run ids or a filter (agent, since, until, status), not both"
            )
        ids = list(dict.fromkeys(validate_run_id(r) for r in run_ids))
        if ids:
            return ids
    if not has_filter:
        raise InvalidInputError(
            "nothing to export: give run ids or a filter (agent, since, until, status); "
            "for every run use since=1970-01-01T00:00:00Z"
        )
    if status not in (None, "running", "completed", "failed"):
        raise InvalidInputError(f"status must be running, completed or failed, not {status!r}")
    entries = manifest.entries(
        status=status, agent=agent, since=since, until=until, decrypt_remote=False
    )
    if not entries:
        raise RunNotFoundError(
            f"no run of {manifest.store.description} matches the filter; check it with "
            "`runarchive runs` and the same options"
        )
    for e in entries:
        try:
            validate_run_id(e.run_id)
        except InvalidInputError:
            raise CorruptObjectError(
                manifest.locate(e.run_id) or "manifest/",
                f"it lists the run id {e.run_id[:200]!r}, which is not a valid run id: the "
                "manifest was altered. Export by run id, or repair the shard",
            ) from None
    return [e.run_id for e in sorted(entries, key=lambda e: (e.created_at, e.run_id))]


def _read_index(store: Store, run_id: str) -> tuple[bytes, RunIndex]:
    key = index_key(run_id)
    for again in (False, True):
        try:
            body = store.get(key).body
        except ObjectNotFoundError:
            raise RunNotFoundError(
                f"no run {run_id!r} in {store.description} (no {key!r})"
            ) from None
        try:
            index = load_index(store, body, key)
            break
        except NamedObjectMissingError:
            if again:  # a page retired and deleted since the head was read: once more
                raise
    check_index_run(index, run_id)  # before index.run_id names any file
    try:
        check_chain(index)
    except CheckFailed as bad:
        raise CorruptObjectError(bad.key or key, bad.problem) from None
    return body, index


def _fetch(store: Store, refs: Sequence[SegmentRef], workers: int) -> Generator[bytes, None, None]:
    """Segment bodies in order, at most ``2 * workers`` fetched ahead."""

    def get(ref: SegmentRef) -> bytes:
        try:
            return store.get(ref.key).body
        except ObjectNotFoundError:
            raise NamedObjectMissingError(
                ref.key, "missing: the run index lists it but the bucket does not have it"
            ) from None

    pool = ThreadPoolExecutor(max_workers=max(1, min(workers, len(refs))))
    try:
        pending: deque[Future[bytes]] = deque()
        todo = iter(refs)
        for ref in todo:
            pending.append(pool.submit(get, ref))
            if len(pending) >= 2 * workers:
                break
        while pending:
            body = pending.popleft().result()
            nxt = next(todo, None)
            if nxt is not None:
                pending.append(pool.submit(get, nxt))
            yield body
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _stage_run(
    store: Store,
    raw_index: bytes,
    index: RunIndex,
    staged: _Staged,
    workers: int,
    bar: Progress,
    keyring: Keyring | None,
) -> dict[str, Any]:
    """Fetch, verify and stage one run; return its ``run.json`` document. With a
    ``keyring`` an encrypted run is decrypted into ``records.jsonl`` and ``run.json``;
    without one it is staged sealed, with no ``records.jsonl``."""
    base = f"runs/{index.run_id}/"
    staged.write(base + "index.json", [raw_index])
    # A paged index (format 4) travels with its pages, as stored: the bundle's
    # index.json is the head, byte for byte.
    for page in parse_index(raw_index, base + "index.json").pages:
        name = check_page_ref(page, index.run_id)
        try:
            page_body = store.get(page.key).body
        except ObjectNotFoundError:  # retired and deleted since: the caller re-reads
            raise NamedObjectMissingError(
                page.key, "the run index names this page and it is missing from the bucket"
            ) from None
        staged.write(base + "pages/" + name, [page_body])
    opened = open_index(index, keyring, base + "index.json") if keyring and index.keys else None
    sealed_only = bool(index.keys) and keyring is None

    def records() -> Iterator[bytes]:
        before: SegmentRef | None = None
        with contextlib.closing(_fetch(store, index.segments, workers)) as bodies:
            for ref, body in zip(index.segments, bodies, strict=True):
                prev = chain_prev(ref, before)
                try:
                    got = check_segment(ref, body, prev, index.run_id, keyring, index.keys)
                except CheckFailed as bad:
                    raise CorruptObjectError(ref.key, bad.problem) from None
                staged.write(base + segment_file(ref), [body])
                before = ref
                bar.step()
                yield got[0] if got is not None else b""

    if sealed_only:
        for _ in records():  # segments checked (without the key) and staged
            pass
    else:
        staged.write(base + "records.jsonl", records())
    return run_document(index, opened)


def _public(url: str) -> str:
    """``url`` without credentials, query or fragment."""
    p = urlparse(url)
    netloc = p.netloc.rsplit("@", 1)[-1]
    return urlunparse((p.scheme, netloc, p.path, "", "", ""))


def _version() -> str:
    return __version__


def _stage_again_if_merged(
    store: Store,
    raw: bytes,
    index: RunIndex,
    staged: _Staged,
    workers: int,
    bar: Progress,
    keyring: Keyring | None,
) -> dict[str, Any]:
    """:func:`_stage_run`; a segment merged and deleted since the index was read (live
    compaction, format.md §12.4) makes it re-read the index and stage the run again,
    once (still named by the new index: ``NamedObjectMissingError``)."""
    try:
        return _stage_run(store, raw, index, staged, workers, bar, keyring)
    except NamedObjectMissingError as exc:
        staged.discard(f"runs/{index.run_id}/")
        raw2, newer = _read_index(store, index.run_id)
        if exc.key in {s.key for s in newer.segments}:
            raise
    return _stage_run(store, raw2, newer, staged, workers, bar, keyring)


def export_runs(
    store: Store,
    manifest: Manifest,
    config: ArchiveConfig,
    keyring: Keyring,
    run_ids: Sequence[str] | str | None = None,
    *,
    agent: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    status: RunStatus | None = None,
    dest: str | os.PathLike[str] | Store,
    progress: ProgressArg = None,
    decrypt: bool = False,
    report: ReportWriter | None = None,
) -> ExportResult:
    """Write a bundle of the chosen runs of ``store`` (listed by ``manifest``) at
    ``dest``; see :meth:`Reader.export`. ``config`` gives the source URL, the workers
    and the settings of a destination URL; ``keyring`` opens runs when ``decrypt``.
    ``report`` writes ``report.html`` from ``export.json`` and the staged files (the
    viewer's, passed in by the facade: this layer does not import the viewer)."""
    opener = keyring if decrypt else None
    ids = select_runs(manifest, run_ids, agent=agent, since=since, until=until, status=status)
    target = _target(dest, config)
    workers = config.restore_workers
    try:
        with ThreadPoolExecutor(max_workers=min(workers, len(ids))) as pool:
            indexes = list(pool.map(lambda r: _read_index(store, r), ids))
        total = sum(len(i.segments) for _, i in indexes)
        bar = progress_for(total, f"exporting {len(ids)} run(s)", progress)
        parent = target.path.parent if target.path is not None else None
        staging = Path(tempfile.mkdtemp(prefix=".runarchive-export-", dir=parent))
        try:
            staged = _Staged(staging)
            docs = []
            for raw, index in indexes:
                doc = _stage_again_if_merged(store, raw, index, staged, workers, bar, opener)
                staged.write(f"runs/{index.run_id}/run.json", [orjson.dumps(doc, option=_JSON)])
                docs.append(doc)
            created = utcnow()
            export_doc = {
                "bundle_format": BUNDLE_FORMAT,
                "created_at": format_ts(created),
                "source": _public(config.resolved_url),
                "runarchive_version": _version(),
                "filter": {
                    "run_ids": None if run_ids is None else ids,
                    "agent": agent,
                    "since": None if since is None else format_ts(since),
                    "until": None if until is None else format_ts(until),
                    "status": status,
                },
                "runs": [
                    {k: d[k] for k in ("run_id", "agent", "status", "last_seq", "records")}
                    | {"segments": len(d["segments"]), "chain_head": d["chain_head"]}
                    | ({"sealed": not d["encryption"]["decrypted"]} if "encryption" in d else {})
                    for d in docs
                ],
            }
            if report is not None:
                staged.write(REPORT, [report(export_doc, staging).encode()])
            staged.write(README, [readme_text(export_doc).encode()])
            staged.write(EXPORT_JSON, [orjson.dumps(export_doc, option=_JSON)])
            staged.write(MANIFEST, [manifest_text(staged.sums).encode()])
            size = _publish(target, staged, int(created.timestamp()), workers, progress)
        except OSError as exc:
            raise StoreError(
                f"cannot write the bundle for {target.description}: {exc}. Check the path, "
                "its permissions and free space; nothing was left at the destination."
            ) from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    finally:
        if target.owned and target.store is not None:
            target.store.close()
    runs = tuple(
        ExportedRun(d["run_id"], d["status"], d["records"], len(d["segments"]), d["chain_head"])
        for d in docs
    )
    return ExportResult(target.description, target.kind, runs, len(staged.sums), size)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish(
    target: _Target, staged: _Staged, mtime: int, workers: int, progress: ProgressArg
) -> int:
    """Move the staged bundle to its destination; return its size in bytes."""
    if target.kind == "directory":
        assert target.path is not None
        staged.root.chmod(0o755)  # mkdtemp made it private
        try:
            os.rename(staged.root, target.path)  # replaces an empty directory only
        except OSError as exc:
            raise InvalidInputError(f"{target.path} appeared while exporting ({exc})") from None
        _fsync_dir(target.path.parent)
        return sum(staged.sizes.values())
    if target.kind == "tar":
        assert target.path is not None
        part = target.path.parent / f".{target.path.name}.{uuid.uuid4().hex[:8]}.part"
        top = target.path.name[: -len(".tar")]
        try:
            with tarfile.open(part, "w", format=tarfile.PAX_FORMAT) as tar:
                dirs = {top} | {
                    f"{top}/{d}" for r in staged.sums for d in map(str, PurePosixPath(r).parents)
                } - {f"{top}/."}
                for name in sorted(dirs):
                    info = tarfile.TarInfo(name)
                    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, mtime
                    tar.addfile(info)
                for rel in staged.order():
                    info = tarfile.TarInfo(f"{top}/{rel}")
                    info.size, info.mode, info.mtime = staged.sizes[rel], 0o644, mtime
                    with open(staged.root / rel, "rb") as f:
                        tar.addfile(info, f)
            with open(part, "rb+") as f:
                os.fsync(f.fileno())
            try:
                os.link(part, target.path)  # create-only
            except FileExistsError:
                raise InvalidInputError(f"{target.path} appeared while exporting") from None
        finally:
            part.unlink(missing_ok=True)
        _fsync_dir(target.path.parent)
        return target.path.stat().st_size
    return _upload(target, staged, workers, progress)


def _upload(target: _Target, staged: _Staged, workers: int, progress: ProgressArg) -> int:
    """Upload the bundle create-only and immutable, MANIFEST.sha256 last; on failure,
    delete what was uploaded. Cost: 1 PUT per file (+ 1 DELETE each on failure)."""
    store = target.store
    assert store is not None
    names = [r for r in staged.order() if r != MANIFEST]
    bar = progress_for(len(names) + 1, f"uploading to {store.description}", progress)
    done: list[str] = []

    def put(rel: str) -> None:
        store.put(rel, (staged.root / rel).read_bytes(), mode="create", immutable=True)
        done.append(rel)
        bar.step()

    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(put, names))
        put(MANIFEST)
    except BaseException as exc:
        left = []
        for rel in done:
            try:
                store.delete(rel)
            except RunArchiveError:
                left.append(rel)
        if left:
            exc.add_note(
                f"{len(left)} uploaded objects could not be deleted (e.g. {left[0]!r}, under "
                "an object lock?); the partial bundle has no MANIFEST.sha256"
            )
        if isinstance(exc, PreconditionFailedError):
            raise InvalidInputError(
                f"{store.description} got an object of the bundle from someone else while "
                f"exporting ({exc.key!r}); export to an empty prefix"
            ) from exc
        raise
    return sum(staged.sizes.values())
