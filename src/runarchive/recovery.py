"""Getting acknowledged records back into the bucket when the normal path cannot:
``fork`` (records a fenced writer holds) and ``repair`` (objects the bucket lost).

Both run on the host whose cache holds the records; ``docs/design.md`` ("A fenced
writer", "Healing") says when each applies.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from runarchive.codec import parse_records
from runarchive.errors import RunNotFoundError, RunStateError
from runarchive.jsonvalue import loads
from runarchive.logs import log_run
from runarchive.model import Checkpoint, format_ts, utcnow, validate_run_id
from runarchive.policy import Policy

if TYPE_CHECKING:
    from runarchive.archive import Archive
    from runarchive.run import Run

log = logging.getLogger(__name__)


def fork_run(archive: Archive, run_id: str, to: str | None = None) -> Run:
    """Archive the records this host's copy of ``run_id`` holds and the bucket lacks
    (written after another host took the run over) as a new run ``to`` (default: a
    generated id), then forget the local copy. See :meth:`Archive.fork`."""
    validate_run_id(run_id)
    cache, engine = archive.cache, archive.engine
    row = cache.run(run_id)
    if row is None:
        raise RunNotFoundError(
            f"run {run_id!r} is not in this host's cache {cache.directory}: fork runs on "
            "the host that holds the stranded records (`runarchive status` there)"
        )
    if not row.fenced and (run_id in engine.live or engine.revalidate(run_id)):
        raise RunStateError(
            f"run {run_id!r} is still this host's: its records reach the bucket by the "
            "normal flush; nothing to fork"
        )
    row = cache.run(run_id) or row
    first, last = row.archived_seq + 1, row.last_seq
    stranded = cache.records(run_id, min_seq=first, max_seq=last)
    if not stranded:
        raise RunStateError(
            f"this host's copy of run {run_id!r} holds no record the bucket lacks; "
            f"archive.discard_local({run_id!r}) forgets it"
        )
    meta: dict[str, Any] = {
        **loads(row.metadata),
        "forked_from": {
            "run_id": run_id,
            "epoch": row.epoch,
            "first_seq": first,
            "last_seq": last,
            "host": archive.config.host_id,
            "at": format_ts(utcnow()),
        },
    }
    # keep_all: every stranded record was acknowledged, none may be dropped now.
    new = archive.start_run(row.agent, to, meta, policy=Policy(keep_all=True))
    for cached in stranded:
        rec = parse_records(cached.line, "local cache")[0]
        if isinstance(rec, Checkpoint):
            new.checkpoint(rec.name, rec.state, rec.metadata)
        else:
            new.event(rec.kind, rec.data, rec.lane)
    # The records are durable in the new run now: the copy may go before the flush,
    # so that a failed flush and a second fork never archive them twice.
    engine.forget(run_id)
    cache.delete_run(run_id)
    log_run(
        log,
        logging.WARNING,
        run_id,
        last,
        "forked %d stranded records (seqs %d-%d) into run %s",
        len(stranded),
        first,
        last,
        new.run_id,
    )
    new.complete({"forked_from": run_id, "records": len(stranded)})
    return new
