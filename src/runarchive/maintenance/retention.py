"""Retention locks: legal holds on a run and the deletability check.

What is locked (see docs/design.md, "Retention locks"):

* **Retention** (``object_lock_mode`` + ``object_lock_days``) is applied by the store
  to every segment as it is written (segments are the only ``immutable`` puts). The
  run index and the manifest shards are rewritten by compare-and-swap and never
  carry one.
* **Legal hold** (:func:`hold_run` / :func:`release_run`) is set on the segment
  objects present in the bucket when it runs. Segments flushed later are not held:
  call it again after more flushes (it is idempotent). ``Archive.hold`` flushes the
  run's pending records first, so everything this host acknowledged is covered.
* **Deleting** (:func:`check_deletable`) is refused, before anything is deleted, if
  any object of the run is under a legal hold or an unexpired retention; with
  ``bypass_governance`` a ``GOVERNANCE`` retention is no obstacle, a ``COMPLIANCE``
  one or a legal hold still is.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from runarchive.errors import (
    ObjectLockedError,
    ObjectLockUnsupportedError,
    RunNotFoundError,
)
from runarchive.format.codec import index_key, run_prefix
from runarchive.format.model import validate_run_id
from runarchive.logs import log_run
from runarchive.store import Store

log = logging.getLogger("runarchive.retention")


def segment_prefix(run_id: str) -> str:
    """The key prefix of a run's segment objects: ``runs/<id>/seg/``."""
    return f"{run_prefix(run_id)}seg/"


def _segment_keys(store: Store, run_id: str) -> list[str]:
    """The run's segment keys (LIST: 1 request per 1,000 keys). ``RunNotFoundError``
    if the run has neither segments nor an index in the store."""
    keys = [m.key for m in store.list(segment_prefix(run_id))]
    if not keys and store.head(index_key(run_id)) is None:
        raise RunNotFoundError(f"no run {run_id!r} in {store.description}")
    return keys


def _set_hold(store: Store, run_id: str, on: bool, workers: int) -> int:
    validate_run_id(run_id)
    if not store.capabilities.object_lock:
        raise ObjectLockUnsupportedError(
            f"cannot {'hold' if on else 'release'} run {run_id!r}: {store.description} "
            "cannot place legal holds; use an S3 bucket created with Object Lock enabled"
        )
    keys = _segment_keys(store, run_id)
    if not keys:
        return 0
    if not store.object_lock_enabled():
        raise ObjectLockUnsupportedError(
            f"cannot {'hold' if on else 'release'} run {run_id!r}: {store.description} "
            "does not have Object Lock enabled (it can only be turned on for a bucket "
            "created with --object-lock-enabled-for-bucket)"
        )
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(keys)))) as pool:
        # list() re-raises the first failure; the call is idempotent, so re-running
        # it after an error finishes the job.
        list(pool.map(lambda key: store.set_legal_hold(key, on), keys))
    log_run(
        log,
        logging.INFO,
        run_id,
        None,
        "legal hold %s on %d segments",
        "ON" if on else "OFF",
        len(keys),
    )
    return len(keys)


def hold_run(store: Store, run_id: str, *, workers: int = 8) -> int:
    """Place a legal hold on every segment object of ``run_id`` now in the store.

    Returns how many objects are held. Segments written later are not held: call
    it again after more flushes. Raises ``ObjectLockUnsupportedError`` on a store or
    bucket that cannot lock, ``RunNotFoundError`` for an unknown run. Cost: 1 LIST
    per 1,000 segments, 1 GetObjectLockConfiguration, 1 PutObjectLegalHold per
    segment (``workers`` in parallel); 1 HEAD more if the run has no segment.
    """
    return _set_hold(store, run_id, True, workers)


def release_run(store: Store, run_id: str, *, workers: int = 8) -> int:
    """Remove the legal hold from every segment object of ``run_id``; returns how
    many. Retention (``object_lock_mode``) is not affected. Cost: as :func:`hold_run`.
    """
    return _set_hold(store, run_id, False, workers)


def check_deletable(
    store: Store, run_id: str, keys: Iterable[str], *, bypass_governance: bool = False
) -> None:
    """Raise ``ObjectLockedError`` naming the first of ``keys`` that a lock protects.

    A legal hold and a ``COMPLIANCE`` retention always protect; a ``GOVERNANCE`` one
    unless ``bypass_governance``. Stores that cannot lock are not asked. Cost on S3:
    1 HEAD per key.
    """
    if not store.capabilities.object_lock:
        return
    for key in keys:
        reason = store.lock_reason(key, bypass_governance=bypass_governance)
        if reason is None:
            continue
        if "GOVERNANCE" in reason:
            advice = "delete_run(run_id, bypass_governance=True) removes a GOVERNANCE lock."
        elif reason == "a legal hold":
            advice = "release(run_id) removes the hold first."
        else:
            advice = "A COMPLIANCE retention cannot be removed; wait until it ends."
        raise ObjectLockedError(
            f"run {run_id!r} cannot be deleted: {key!r} is under {reason}. Nothing was "
            f"deleted. {advice}",
            key=key,
        )
