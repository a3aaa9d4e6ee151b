"""The public entry point: :class:`Archive`, one bucket and this host's cache in front of it.

::

    from runarchive import Archive

    with Archive.open("s3://my-bucket/agents") as archive:
        with archive.start_run(agent="planner") as run:
            run.checkpoint("plan", {"messages": [...]})
            run.event("tool_call", {"tool": "search"})
        restored = archive.restore(run.run_id)       # works on any host
"""

from __future__ import annotations

import atexit
import logging
import threading
import weakref
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Self

from runarchive.cache.core import Cache
from runarchive.cache.status import CacheStatus, read_status
from runarchive.config import ArchiveConfig, load_config
from runarchive.crypto.providers import KeyProvider
from runarchive.engine.flush import FlushEngine, HealReport
from runarchive.engine.flusher import Flusher, FlushError
from runarchive.engine.takeover import fork_run, resume_run
from runarchive.engine.writepath import WritePath
from runarchive.errors import (
    ConfigError,
    InvalidInputError,
    RunNotFoundError,
    RunStateError,
)
from runarchive.format.codec import run_prefix
from runarchive.format.jsonvalue import check_json_value
from runarchive.format.model import (
    validate_name,
    validate_run_id,
)
from runarchive.logs import log_run
from runarchive.maintenance.compact import CompactionResult, compact_runs
from runarchive.maintenance.gc import GcReport, run_gc
from runarchive.maintenance.rekey import RekeyResult, rekey_run
from runarchive.maintenance.retention import (
    check_deletable,
    hold_run,
    release_run,
)
from runarchive.policy import Policy
from runarchive.reader import Reader
from runarchive.run import Run
from runarchive.store import (
    Store,
    probe_conditional_writes,
)
from runarchive.store.url import check_store_settings, make_store

log = logging.getLogger(__name__)
_open_archives: weakref.WeakSet[Archive] = weakref.WeakSet()


@atexit.register
def _close_at_exit() -> None:
    for archive in list(_open_archives):
        try:
            archive.close()
        except Exception:  # data stays in the cache; the next open flushes it
            log.exception("flushing %s at interpreter exit failed", archive.url)


class Archive(Reader):
    """A bucket (or directory) of archived runs, and this host's cache in front of it.

    Thread-safe. Open it once per process and cache directory; close it (or use
    ``with``) to flush what is pending. An archive left open is flushed at
    interpreter exit.
    """

    def __init__(
        self, config: ArchiveConfig, store: Store, key_provider: KeyProvider | None = None
    ) -> None:
        super().__init__(config, store, key_provider)
        if config.encryption_required and not self.keyring.writes:
            self.store.close()
            raise ConfigError(
                "setting 'encryption_required' (RUNARCHIVE_ENCRYPTION_REQUIRED) is set but "
                "this archive has no key to encrypt with: set 'encryption' "
                "(RUNARCHIVE_ENCRYPTION) and its key"
            )
        try:
            self.cache = Cache(config.cache_dir, self.url)
        except Exception:
            self.store.close()
            raise
        self.engine = FlushEngine(self.cache, self.store, config, self.keyring)
        self._manifest = self.engine.manifest
        self.flusher = Flusher(self.engine, config)
        # What a Run writes and reads through:
        self._path = WritePath(
            config, self.store, self.keyring, self.cache, self.engine, self.flusher
        )
        # Weak: a process that writes many runs keeps only the handles its code holds.
        self._runs: weakref.WeakValueDictionary[str, Run] = weakref.WeakValueDictionary()
        self._lock = threading.Lock()
        self.flusher.start(
            {r: row.last_seq for r in self.cache.runs_needing_flush() if (row := self.cache.run(r))}
        )
        _open_archives.add(self)
        log.info("opened %s with the cache %s", self.store.description, self.cache.directory)

    @classmethod
    def open(
        cls,
        url: str | None = None,
        *,
        cache_dir: str | Path | None = None,
        config: ArchiveConfig | None = None,
        store: Store | None = None,
        key_provider: KeyProvider | None = None,
        **settings: Any,
    ) -> Self:
        """Open the archive at ``url`` (``s3://bucket/prefix`` or ``file:///dir``).

        With no ``url`` and no ``RUNARCHIVE_URL``, the embedded default
        ``./.runarchive/archive`` is used. Other settings (see :class:`ArchiveConfig`)
        come as keyword arguments or ``RUNARCHIVE_*`` variables. ``store`` replaces
        the backend the URL names (tests, custom backends). ``key_provider`` (a
        :class:`~runarchive.crypto.providers.KeyProvider`) encrypts new data and reads encrypted
        runs, beside the ``encryption*`` settings (``docs/encryption.md``).

        At open, the archive checks once that the bucket enforces conditional writes
        (5 requests) and refuses it otherwise; bad settings raise ``ConfigError``. With
        ``object_lock_mode`` set it also checks that the bucket has Object Lock enabled
        (1 request) and refuses a ``file://`` archive; ``sse`` is refused on ``file://``.
        """
        if config is not None and (url or cache_dir or settings):
            raise ConfigError("pass either config= or individual settings, not both")
        cfg = config or load_config(url=url, cache_dir=cache_dir, **settings)
        backend = store or make_store(cfg)
        try:
            check_store_settings(cfg, backend)
            if cfg.check_conditional_writes:
                probe_conditional_writes(backend)
        except Exception:
            backend.close()
            raise
        try:
            return cls(cfg, backend, key_provider)
        except ConfigError:  # a bad key file or key spec: found before the cache opens
            backend.close()
            raise

    # -- runs ------------------------------------------------------------------

    def start_run(
        self,
        agent: str,
        run_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        *,
        policy: Policy | None = None,
    ) -> Run:
        """Start a new run and return its writer. ``run_id`` defaults to a time-sortable id.

        A given ``run_id`` is claimed in the bucket before this returns (1 create-only
        PUT of its index): if it exists there or in the cache, or another host claims it
        first, ``RunExistsError`` is raised and nothing is recorded. Generated ids are
        unique and need no request. ``policy`` gives this run
        its own compression policy (e.g. ``Policy(keep_all=True)``), recorded in its
        index so a host that resumes the run applies it too; the default is the
        archive's configured policy.
        """
        self._check_open()
        validate_name(agent, "agent")
        meta = check_json_value(metadata or {}, "metadata")
        if not isinstance(meta, dict):
            raise InvalidInputError("metadata must be a dict")
        if policy is not None and not isinstance(policy, Policy):
            raise InvalidInputError(f"policy must be a Policy, not {type(policy).__name__}")
        run_id = self._path.create(agent, run_id, meta, policy)
        log_run(log, logging.INFO, run_id, 0, "started")
        return self._handle(run_id)

    def run(self, run_id: str) -> Run:
        """The writer of a run this host's cache holds (e.g. after a restart).

        The first call in a process checks with the bucket that this host still owns
        the run (1 conditional GET; none for runs this process started or resumed).
        If another host took it over, raises ``FencedError``: read the run with
        :meth:`restore`, take it back with :meth:`resume`; records this host had not
        archived stay listed by :meth:`status` (:meth:`fork` archives them).
        """
        self._check_open()
        validate_run_id(run_id)
        self._path.check_owned(run_id)
        return self._handle(run_id)

    def fork(self, run_id: str, *, to: str | None = None) -> Run:
        """Archive what this host holds of a run another host took over: the records
        its copy has and the bucket lacks (acknowledged here after the takeover, listed
        by :meth:`status` as the fenced run's unflushed records) become a new run ``to``
        (default: a generated id) whose ``metadata["forked_from"]`` names the original
        run and the seq range, under ``Policy(keep_all=True)``. The local copy of the
        original is then forgotten. Returns the new run, completed and flushed (if the
        flush fails it raises, and the records wait in the cache under the new run).
        Cost: the new run's claim (if ``to`` is given), its flush and manifest entry."""
        self._check_open()

        def start(agent: str, to: str | None, meta: dict[str, Any], policy: Policy) -> Run:
            return self.start_run(agent, to, meta, policy=policy)

        return fork_run(self._path, run_id, to, start)

    def repair(self, run_id: str) -> HealReport:
        """Make the bucket hold every record of ``run_id`` this host archived: write the
        run's index again if the bucket lost it or holds an older one (an index PUT
        answered 200 and never stored), and re-upload from this host's cache every
        segment the index names that the bucket lacks. Raises ``MissingRecordsError``
        naming the seqs when the cache no longer holds them, ``RunNotFoundError`` when
        the cache does not hold the run. Flushes normally heal on their own; this is the
        on-demand form (``runarchive repair``). Cost: 1 GET, 1 LIST per 1,000 segments,
        the PUTs of what is missing."""
        self._check_open()
        validate_run_id(run_id)
        report = self.engine.repair(run_id)
        self._path.request(run_id)
        return report

    def discard_local(self, run_id: str) -> None:
        """Forget this host's cached copy of a run another host owns now (never its
        objects in the bucket). Refused while the copy holds records the bucket lacks:
        :meth:`fork` them first."""
        self._check_open()
        row = self.cache.run(run_id)
        if row is None:
            return
        if row.last_seq > row.archived_seq:
            raise RunStateError(
                f"this host's copy of run {run_id!r} holds {row.last_seq - row.archived_seq} "
                f"records the bucket lacks; archive.fork({run_id!r}) first"
            )
        self._forget_local(run_id)

    def _forget_local(self, run_id: str) -> None:
        self.engine.forget(run_id)
        with self._lock:
            self._runs.pop(run_id, None)
        self.cache.delete_run(run_id)

    def _handle(self, run_id: str) -> Run:
        self.engine.live.add(run_id)
        with self._lock:
            handle = self._runs.get(run_id)
            if handle is None:
                handle = self._runs[run_id] = Run(self._path, run_id)
            return handle

    def resume(self, run_id: str, *, expected_epoch: int | None = None) -> Run:
        """Take over a running run from the bucket and return its writer.

        Bumps the run's epoch in its index by compare-and-swap (so a previous owner
        that is still alive is fenced: its next flush raises ``FencedError``),
        restores the run's archived records into this host's cache, lists this host
        as the owner in the manifest, and returns a writer that continues at the
        next seq. If another host resumes it at the same moment, exactly one wins;
        the other gets ``ResumeConflictError``. A run this host's cache already
        holds is simply returned (no takeover needed).

        ``expected_epoch`` (e.g. the ``epoch`` of an :meth:`interrupted` entry) makes
        the takeover conditional: if another host took the run over since, it raises
        ``ResumeConflictError`` instead of taking it from that host in turn. Hosts
        that all recover from ``interrupted()`` should pass it.
        """
        self._check_open()
        return resume_run(
            self._path, run_id, expected_epoch, handle=self._handle, discard=self.discard_local
        )

    def delete_run(self, run_id: str, *, bypass_governance: bool = False) -> int:
        """Delete a run's objects, its manifest entry and its local cache copy.

        If any object is under a legal hold or an unexpired retention, raises
        ``ObjectLockedError`` naming it before deleting anything (on a versioned,
        locked bucket the DELETEs would otherwise "succeed" as delete markers and keep
        the data). ``bypass_governance=True`` (default ``False``) deletes a run under a
        ``GOVERNANCE`` retention, and removes every version of its objects for good;
        a legal hold or a ``COMPLIANCE`` retention still refuses. Segments go first
        and the index last, so a failure leaves the run readable as far as it got.
        Returns the number of objects deleted. Cost: 1 LIST, 1 HEAD per object on
        S3 (the lock check), 1 DELETE per object (with ``bypass_governance``: 1
        ListObjectVersions + 1 DeleteObjects per object), the manifest update.
        """
        self._check_open()
        validate_run_id(run_id)
        keys = [m.key for m in self.store.list(run_prefix(run_id))]
        if not keys and self.cache.run(run_id) is None:
            raise RunNotFoundError(f"no run {run_id!r} in {self.store.description}")
        # Checked before deleting anything: a versioned, locked bucket would accept
        # plain DELETEs (as delete markers) and keep the data, silently.
        check_deletable(self.store, run_id, keys, bypass_governance=bypass_governance)
        where = self.manifest.whereabouts(run_id)  # the index says where its entry is
        for key in sorted(keys, key=lambda k: k.endswith("index.json")):
            self.store.delete(key, bypass_governance=bypass_governance)
        self.manifest.forget(run_id, where=where)
        self._forget_local(run_id)
        log_run(log, logging.INFO, run_id, None, "deleted (%d objects)", len(keys))
        return len(keys)

    def compact(
        self,
        run_id: str | None = None,
        *,
        dry_run: bool = False,
        reencrypt: bool = False,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[CompactionResult]:
        """Compact one ended run, or (``None``) every completed or failed run.

        Re-applies the run's policy over its whole archived history and rewrites it
        into few segments (a new hash chain), swapping the index by compare-and-swap.
        The replaced segments are only listed as retired: ``gc`` deletes them once the
        grace period has passed, so a concurrent restore or export never misses one.
        ``dry_run`` reads and plans, writes nothing. Running runs are refused (one
        given) or skipped (all); so are encrypted runs when this archive has no key
        to encrypt with (``result.skipped`` says why). With encryption on, a run with
        data not under the current key is re-encrypted; ``reencrypt=True`` re-encrypts
        every run compacted under a new data key (the step after ``rekey`` that
        retires the data keys an old key-encryption key wrapped). Cost per run: 1 GET
        for the index, 1 GET per segment, 1 PUT per new segment, 1 PUT for the index,
        1-2 for the manifest entry. ``progress`` is told ``(done, total)``: segments read
        of the one run, or runs done of every run.
        """
        self._check_open()
        return compact_runs(
            self.store,
            self.manifest,
            self.keyring,
            self.config,
            run_id,
            index_of=lambda rid: self.index(rid, decrypt=False),
            dry_run=dry_run,
            reencrypt=reencrypt,
            progress=progress,
        )

    def rekey(
        self, run_id: str | None = None, *, progress: Callable[[int, int], None] | None = None
    ) -> list[RekeyResult]:
        """Re-wrap the data keys of one run, or (``None``) of every run, with the current
        key-encryption key (``docs/encryption.md``, Key rotation). Segment bodies are
        not rewritten; :meth:`compact` re-encrypts an ended run's bodies. Plaintext
        runs are left as they are. Cost per run: 1 GET + 1 PUT of the index when a key
        moves (1 GET otherwise), 1 provider call per key moved, 1-2 manifest requests;
        16 manifest GETs to list every run. ``progress`` is told ``(runs done, runs)``."""
        self._check_open()
        if not self.keyring.writes:
            raise ConfigError(
                "rekey needs a current key: set encryption (RUNARCHIVE_ENCRYPTION) and the "
                "new key (first in encryption_keys, current in the key file, or "
                "encryption_kms_key_id); keep the old keys configured for reading"
            )
        if run_id is None:
            ids = [e.run_id for e in self.manifest.entries(limit=None)]
        else:
            ids = [validate_run_id(run_id)]
        results = []
        for rid in ids:
            results.append(rekey_run(self.store, self.manifest, self.keyring, rid))
            if progress is not None:
                progress(len(results), len(ids))
        return results

    def gc(
        self,
        *,
        dry_run: bool = False,
        grace: timedelta | float | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> GcReport:
        """Delete what no index needs once the grace period has passed: segments a
        compaction retired, orphan segments of crashed flushes, objects of runs whose
        first flush never finished, old probe objects — and, with ``retention_days``,
        runs that ended longer ago than that (a locked run is kept and reported).

        ``grace`` defaults to ``gc_grace_seconds`` (1 hour). ``dry_run`` only plans.
        Cost: 1 LIST of the archive, 1 GET per run index, 1 DELETE per object.
        ``progress`` is told ``(done, total)`` (indexes read, objects deleted).
        """
        self._check_open()
        if grace is None:
            grace = self.config.gc_grace_seconds
        if not isinstance(grace, timedelta):
            grace = timedelta(seconds=grace)
        return run_gc(
            self.store,
            grace=grace,
            retention_days=self.config.retention_days,
            delete_run=self.delete_run,
            dry_run=dry_run,
            progress=progress,
        )

    # -- flushing and life cycle -------------------------------------------------

    def flush(self) -> None:
        """Flush every run with pending records now, in this thread; raise on failure."""
        self._path.flush_all()

    @property
    def flush_errors(self) -> dict[str, FlushError]:
        """The last background flush failure of each run that is still failing."""
        return dict(self.flusher.errors)

    def status(self) -> CacheStatus:
        """This host's backlog: per run, what the bucket does not have yet, and the last
        flush error. One read-only query on the cache, no request to the bucket."""
        self._check_open()
        live = {
            run_id: (f"{type(e.error).__name__}: {e.error}", datetime.fromtimestamp(e.at, UTC))
            for run_id, e in self.flusher.errors.items()
        }
        return read_status(
            self.cache.directory,
            max_unflushed_bytes=self.config.cache_max_unflushed_bytes,
            errors=live,
        )

    def close(self) -> None:
        """Stop the background flusher, flush what is pending, read back what this
        host archived since its last read-back (``read_back``: 1 conditional GET + 1
        LIST per such run, healing a lost write from the cache), release the cache.

        If the bucket cannot be reached the error is raised, and the records stay
        safe in the cache for the next ``open``.
        """
        if self._path.closed:
            return
        _open_archives.discard(self)
        try:
            errors = self._path.close()
        finally:
            self.cache.close()
            self.store.close()
        log.info("closed %s (%d runs failed to flush)", self.store.description, len(errors))
        if errors:
            first = errors[0]
            for other in errors[1:]:
                first.add_note(f"also: {other}")
            first.add_note(
                f"unflushed records stay in {self.cache.directory}; the next open flushes them"
            )
            raise first

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._path.closed

    @property
    def appended_records(self) -> int:
        """Records this process appended through this archive (for reports)."""
        return self._path.appended_records

    @property
    def appended_bytes(self) -> int:
        """Bytes of JSON record lines this process appended through this archive."""
        return self._path.appended_bytes

    def _check_open(self) -> None:
        self._path.check_open()

    # -- legal holds (docs/design.md, "Retention locks") -------------------------

    def hold(self, run_id: str) -> int:
        """Place a legal hold on every segment object of ``run_id``; returns how many.

        This host's pending records of the run are flushed first, so every record it
        acknowledged is covered; segments flushed *after* this call are not held (call
        ``hold`` again: it is idempotent). A held run cannot be deleted until
        :meth:`release`. Needs an S3 bucket with Object Lock enabled (no
        ``object_lock_mode`` needed); elsewhere ``ObjectLockUnsupportedError``. Cost:
        the flush, 1 LIST per 1,000 segments, 1 GetObjectLockConfiguration, 1
        PutObjectLegalHold per segment (``restore_workers`` in parallel).
        """
        self._check_open()
        validate_run_id(run_id)
        if run_id in self.cache.runs_needing_flush():
            self._path.flush(run_id)
        return hold_run(self.store, run_id, workers=self.config.restore_workers)

    def release(self, run_id: str) -> int:
        """Remove the legal hold from every segment object of ``run_id``; returns how
        many. Retention set by ``object_lock_mode`` is unaffected. Cost: as
        :meth:`hold`, without the flush."""
        self._check_open()
        return release_run(self.store, run_id, workers=self.config.restore_workers)
