"""Read-only access to an archive's bucket: :class:`Reader` (no cache, no lock).

What ``runarchive show``, ``restore``, ``verify`` and ``export`` use, so they work
beside a running writer and on a fresh host. :class:`~runarchive.archive.Archive`
extends it with this host's cache and everything that writes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Self

from runarchive import telemetry
from runarchive.compliance.export import ExportResult, export_runs
from runarchive.compliance.stats import Stats, archive_stats, run_stats
from runarchive.compliance.verify import VerifyReport, verify_runs
from runarchive.config import ArchiveConfig, load_config
from runarchive.crypto.keyring import keyring_for
from runarchive.crypto.providers import KeyProvider
from runarchive.crypto.required import check_required
from runarchive.crypto.sealing import open_index
from runarchive.engine.manifest.core import Manifest, RunEntry, RunList
from runarchive.engine.restore import (
    ProgressArg,
    ProgressCallback,
    RecordStream,
    RestoredRun,
    RestorePlan,
    check_index_run,
    execute_restore,
    plan_restore,
)
from runarchive.errors import (
    InvalidInputError,
    NamedObjectMissingError,
    ObjectNotFoundError,
    RunNotFoundError,
)
from runarchive.format.codec import index_key
from runarchive.format.indexpages import load_index
from runarchive.format.model import Checkpoint, Event, RunIndex, RunStatus, validate_run_id
from runarchive.store import CountingStore, Store
from runarchive.store.url import make_store
from runarchive.viewer.report import report_html

_TYPES = frozenset({"checkpoint", "event"})


class Reader:
    """Read-only access to an archive's bucket: no cache, no lock, no writes.

    What ``runarchive show`` and ``restore`` use, so they work beside a running
    writer and on a fresh host.
    """

    def __init__(
        self, config: ArchiveConfig, store: Store, key_provider: KeyProvider | None = None
    ) -> None:
        self.config = config
        self.url = config.resolved_url
        self.store = store if isinstance(store, CountingStore) else CountingStore(store)
        telemetry.attach(config.telemetry, self.store)  # no-op unless runarchive[otel]
        self.keyring = keyring_for(config, key_provider)
        self._manifest: Manifest | None = None

    @classmethod
    def open(
        cls,
        url: str | None = None,
        *,
        config: ArchiveConfig | None = None,
        store: Store | None = None,
        key_provider: KeyProvider | None = None,
        **settings: Any,
    ) -> Self:
        """Open ``url`` (or the configured / embedded default archive) for reading.

        ``key_provider`` adds a key source for encrypted runs (``docs/encryption.md``).
        No request is made until the first read. Nothing is created: a ``file://``
        archive that does not exist raises ``BucketNotFoundError`` (its first writer,
        ``Archive.open``, creates it).
        """
        cfg = config or load_config(url=url, **settings)
        return cls(cfg, store or make_store(cfg, create=False), key_provider)

    def index(self, run_id: str, *, decrypt: bool = True) -> RunIndex:
        """A run's index (one GET); ``CorruptObjectError`` if it names another run. An
        encrypted run's sealed metadata, result and error are decrypted into place
        (``KeyUnavailableError`` naming the key if it is not configured);
        ``decrypt=False`` returns the index as stored."""
        validate_run_id(run_id)
        key = index_key(run_id)
        for again in (False, True):
            try:
                got = self.store.get(key)
            except ObjectNotFoundError:
                raise RunNotFoundError(
                    f"no run {run_id!r} in {self.store.description} (no {key!r}). If it "
                    "was started moments ago, its first flush may not have happened yet."
                ) from None
            try:
                index = load_index(self.store, got.body, key)
                break
            except NamedObjectMissingError:
                # A page the head named was retired and deleted since it was read (live
                # compaction): read the head once more (format.md §12.4).
                if again:
                    raise
        check_index_run(index, run_id)
        check_required(index, self.config.encryption_required)
        return open_index(index, self.keyring, key) if decrypt else index

    def restore(
        self,
        run_id: str,
        *,
        seq: int | None = None,
        at: datetime | None = None,
        progress: ProgressArg = None,
    ) -> RestoredRun:
        """Read a run back from the bucket alone: metadata, archived checkpoints, all events.

        ``seq`` / ``at`` restore a point in time (records with ``seq <= seq`` /
        ``ts <= at``). Works on a host with an empty cache. Segments are fetched in
        parallel and checked against their SHA-256; a missing or corrupt one raises
        ``CorruptObjectError`` naming it. A segment a concurrent compaction replaced and
        ``gc`` deleted is not missing: the index is read again and the restore goes on
        with it (``index`` is then the one read last). Cost: 1 GET for the index + 1 per
        segment. Memory: every record (≈ 0.7 KB for a small event), plus a few
        compressed segments; :meth:`iter_records` holds about one segment's records.
        """
        index = self.index(run_id)
        latest = [index]

        def reread() -> RestorePlan:
            latest[0] = self.index(run_id)
            return plan_restore(latest[0], seq=seq, at=at, run_id=run_id)

        records = execute_restore(
            plan_restore(index, seq=seq, at=at, run_id=run_id),
            self.store,
            workers=self.config.restore_workers,
            progress=progress,
            keyring=self.keyring,
            reread=reread,
        )
        return RestoredRun(latest[0], tuple(records))

    def iter_records(
        self,
        run_id: str,
        *,
        seq: int | None = None,
        at: datetime | None = None,
        types: Iterable[str] | None = None,
        prefetch: int = 2,
    ) -> Iterator[Checkpoint | Event]:
        """A run's archived records in seq order, streamed: what :meth:`restore` returns
        in ``records``, holding about one segment's records at a time.

        ``seq`` / ``at`` as for :meth:`restore`; ``types`` keeps only ``"checkpoint"``
        or ``"event"`` records. The index is read (and the arguments checked) when this
        is called; segments are fetched as the iterator is consumed, ``prefetch`` ahead.
        No record of a segment is yielded before the whole segment passed every check of
        :meth:`restore` (SHA-256, size, header, run, range, count; AES-GCM when sealed):
        a corrupt segment raises ``CorruptObjectError`` naming it instead, after the
        records of the segments before it. A segment a concurrent compaction merged and
        ``gc`` deleted makes the iterator read the index again and go on from where it
        was. Memory: ``prefetch`` + 1 compressed segments, and the records of one segment
        of up to 4 MiB uncompressed (a larger one is parsed twice instead: checked, then
        yielded); see :mod:`runarchive.engine.stream`. Cost: as :meth:`restore`.
        """
        wanted = None if types is None else frozenset(types)
        if wanted is not None and not wanted <= _TYPES:
            raise InvalidInputError(
                f"types must be among {sorted(_TYPES)}, not {sorted(wanted - _TYPES)}"
            )
        index = self.index(run_id)

        def reread() -> RestorePlan:
            return plan_restore(self.index(run_id), seq=seq, at=at, run_id=run_id)

        stream = RecordStream(
            plan_restore(index, seq=seq, at=at, run_id=run_id),
            self.store,
            keyring=self.keyring,
            prefetch=prefetch,
            reread=reread,
            types=wanted,
        )
        return iter(stream)

    @property
    def manifest(self) -> Manifest:
        """The run manifest of this archive (read and CAS-updated lazily)."""
        if self._manifest is None:
            self._manifest = Manifest(self.store, self.keyring)
        return self._manifest

    def list_runs(
        self,
        *,
        status: RunStatus | None = None,
        agent: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = 1000,
        page: str | None = None,
        decrypt_metadata: bool = False,
    ) -> RunList:
        """Runs from the manifest, filtered on status, agent and creation time
        (inclusive), at most ``limit`` per page, newest created first within a page.
        Never lists the bucket's runs.

        Paged: the result's ``next_page`` (``None`` on the last page) is the ``page``
        of the next call, with the same filters. Across pages come running runs, then
        finished runs newest end first; a run finishing meanwhile is listed once
        (docs/format.md §10.4). Cost bounded by the page: 1 LIST of the writers'
        objects, 1 LIST per day of finished runs visited, 1 GET per object read (≤ 256
        finished runs each), whatever the size of the archive. ``limit=None`` reads
        the whole manifest in one call (no ``next_page``).

        Encrypted runs' metadata is opened with local keys; under a KMS key it stays
        sealed (``metadata == {}``, ``sealed_metadata`` set) unless
        ``decrypt_metadata=True``: one KMS ``Decrypt`` per run not yet seen by this
        process. A run whose key is missing is listed sealed, never an error."""
        if limit is None:
            if page is not None:
                raise InvalidInputError("page needs a limit: pages are limit runs long")
            return RunList(
                self.manifest.entries(
                    status=status,
                    agent=agent,
                    since=since,
                    until=until,
                    decrypt_remote=decrypt_metadata,
                )
            )
        return self.manifest.page(
            status=status,
            agent=agent,
            since=since,
            until=until,
            limit=limit,
            page=page,
            decrypt_remote=decrypt_metadata,
        )

    def interrupted(self, stale_after: timedelta | float = 0.0) -> list[RunEntry]:
        """Running runs whose owner stopped renewing its lease more than ``stale_after``
        ago (process killed, host gone): candidates for :meth:`Archive.resume`.
        Completed and failed runs never are. Cost: 1 LIST per 1,000 writer processes
        and 1 GET per process that stopped renewing (docs/format.md §10.3)."""
        if not isinstance(stale_after, timedelta):
            stale_after = timedelta(seconds=stale_after)
        return self.manifest.interrupted(stale_after)

    def verify(
        self, run_id: str | Iterable[str] | None = None, *, progress: ProgressArg = None
    ) -> VerifyReport:
        """Read back and check one run, several, or (``None``) every run of the archive.

        Checks each segment's zstd frame, SHA-256, header and records against the
        index; the hash chain and its head; seq continuity; objects the index does not
        list; and the index against the manifest. Returns every problem found, each
        naming its object; ``report.ok`` is False if any is an error. Writes nothing.
        Cost: 1 LIST (per run when ids are given), 1 GET per index and per segment,
        and 2-16 GETs of the manifest.
        """
        if run_id is None:
            ids = None
            entries = {e.run_id: e for e in self.manifest.entries(limit=None)}
        else:
            ids = [run_id] if isinstance(run_id, str) else list(run_id)
            for rid in ids:
                validate_run_id(rid)
            entries = self.manifest.lookup(ids)
        return verify_runs(
            self.store,
            ids,
            entries,
            workers=self.config.restore_workers,
            progress=progress,
            keyring=self.keyring,
            encryption_required=self.config.encryption_required,
        )

    def close(self) -> None:
        """Release connections."""
        self.store.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def export(
        self,
        run_ids: list[str] | tuple[str, ...] | str | None = None,
        *,
        agent: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        status: RunStatus | None = None,
        dest: str | Path | Store,
        progress: ProgressArg = None,
        decrypt: bool = False,
    ) -> ExportResult:
        """Write a self-contained, checkable bundle of runs (``docs/export.md``).

        The runs are ``run_ids``, or those of the manifest matching ``agent``,
        ``since``/``until`` (creation time, inclusive) and ``status`` (not both; no
        default). ``dest`` is a ``.tar`` path (plain tar, one top-level directory named
        after the file), another path (a new or empty directory), an ``s3://`` or
        ``file://`` URL or a ``Store`` (an empty prefix: files are uploaded create-only
        and ``immutable``, so a locked bucket retains them; a URL is opened with this
        reader's settings). Every segment is verified first (SHA-256, header, hash chain
        up to ``chain_head``); a corrupt run raises ``CorruptObjectError`` naming the key
        and nothing is left at ``dest``. ``progress=None`` shows a bar on a terminal; a
        callback is told ``(done, total)`` instead.
        Only the bucket is read: on a writer, ``flush()`` first to include records
        still in this host's cache. Encrypted runs are exported sealed (ciphertext
        segments, the index with its wrapped data keys, no ``records.jsonl``) unless
        ``decrypt=True``, which needs their keys and writes plaintext records.
        ``report.html`` shows the exported runs in a browser, offline.

        Cost: 16 GETs for a filter (8 with ``status``), 1 GET per run index and per
        segment (``restore_workers`` in parallel), 1 LIST + 1 PUT per bundle file to a
        store. Disk: the bundle is staged beside ``dest`` (in the temp dir for a store);
        a ``.tar`` needs twice its size while it is built.
        """
        return export_runs(
            self.store,
            self.manifest,
            self.config,
            self.keyring,
            run_ids,
            agent=agent,
            since=since,
            until=until,
            status=status,
            dest=dest,
            progress=progress,
            decrypt=decrypt,
            report=report_html,
        )

    def stats(
        self,
        run_id: str | None = None,
        *,
        objects: bool = False,
        progress: ProgressCallback | None = None,
    ) -> Stats:
        """Storage and request figures of one run (from its index: 1 GET) or of the
        whole archive (from the manifest: 16 GETs; ``objects=True`` adds a LIST of
        ``runs/``, 1 request per 1,000 objects), with an estimated monthly cost at the
        ``price_*`` settings (``runarchive stats``; see :mod:`runarchive.compliance.stats`).
        ``progress`` is told ``(objects counted, total)`` while ``objects`` lists."""
        before, bytes_before = dict(self.store.counts), self.store.bytes_in
        if run_id is None:
            result = archive_stats(
                self.config, self.manifest, self.store, objects=objects, progress=progress
            )
        else:
            index = self.index(run_id, decrypt=False)  # figures need no key
            result = run_stats(self.config, run_id, index, self.store.bytes_in - bytes_before)
        result.stats_requests = {
            k: v - before.get(k, 0) for k, v in self.store.counts.items() if v > before.get(k, 0)
        }
        return result
