"""Key rotation: re-wrap a run's data keys with the current key-encryption key.

Only the run index (and the run's manifest entry) is rewritten: segment bodies
stay as they are, immutable and possibly locked. Each segment's own header still
carries the data key wrapped by the key that was current when it was written, so
keep an old key until ``rekey --all`` has run if that copy matters to you; to
re-encrypt the bodies themselves under a fresh data key, compact the run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from runarchive.crypto.keyring import Keyring
from runarchive.crypto.sealing import sealed_metadata
from runarchive.engine.manifest.core import Manifest
from runarchive.errors import (
    IndexConflictError,
    ObjectNotFoundError,
    PreconditionFailedError,
    RunNotFoundError,
)
from runarchive.format.codec import index_key
from runarchive.format.model import RunIndex, parse_index, utcnow
from runarchive.logs import log_run
from runarchive.store import IfMatch, Store

log = logging.getLogger("runarchive.rekey")
MAX_ATTEMPTS = 10


@dataclass(frozen=True)
class RekeyResult:
    """What :func:`rekey_run` did to one run."""

    run_id: str
    keys: int  # data keys the run has
    rewrapped: int  # of them re-wrapped now (0: already under the current key, or plaintext)
    from_keks: tuple[str, ...]  # the key ids they were wrapped by


def rekey_run(store: Store, manifest: Manifest, keyring: Keyring, run_id: str) -> RekeyResult:
    """Re-wrap every data key of ``run_id`` not under the current KEK.

    CAS on the index (re-read and re-applied if a writer flushed meanwhile), then
    the manifest entry's copy of the metadata key. Cost: 1 GET + 1 PUT of the
    index, 1 provider call per data key re-wrapped (KMS ``ReEncrypt``), 1-2
    manifest requests; nothing for a run already under the current key.
    """
    key = index_key(run_id)
    for _ in range(MAX_ATTEMPTS):
        try:
            got = store.get(key)
        except ObjectNotFoundError:
            raise RunNotFoundError(f"no run {run_id!r} in {store.description}") from None
        index = parse_index(got.body, key)
        moved = {k.id: new for k in index.keys if (new := keyring.rewrap(run_id, k)) is not None}
        if not moved:
            return RekeyResult(run_id, len(index.keys), 0, ())
        new_index = index.model_copy(
            update={
                "keys": tuple(moved.get(k.id, k) for k in index.keys),
                "updated_at": utcnow(),
            }
        )
        try:
            store.put(key, new_index.model_dump_json().encode(), mode=IfMatch(got.etag))
        except PreconditionFailedError:
            log_run(log, logging.INFO, run_id, None, "index changed during rekey, re-reading")
            continue
        _patch_manifest(manifest, new_index)
        froms = tuple(sorted({k.kek for k in index.keys if k.id in moved}))
        log_run(
            log,
            logging.INFO,
            run_id,
            index.last_seq,
            "%d data key(s) re-wrapped from %s to %s",
            len(moved),
            ", ".join(froms),
            keyring.current,
        )
        return RekeyResult(run_id, len(index.keys), len(moved), froms)
    raise IndexConflictError(
        f"run {run_id!r}: its index kept changing under {MAX_ATTEMPTS} rekey attempts; try again"
    )


def _patch_manifest(manifest: Manifest, index: RunIndex) -> None:
    sealed = sealed_metadata(index)
    if sealed is None:
        return
    manifest.patch_done(
        index.run_id,
        {"metadata_key": sealed.key.model_dump(mode="json")},
        kind="active" if index.status == "running" else "done",
    )
