"""Taking a run over, both ways: ``resume`` takes a run over from the bucket (another
host's, or one whose owner died), ``fork`` archives what this host still holds of a
run another host took over from it (records a fenced writer acknowledged).

Both work on the archive's :class:`~runarchive.engine.writepath.WritePath`; the
writers they return come from the callables the ``Archive`` passes (its run
handles), so this module knows no facade. ``docs/design.md`` ("A fenced writer")
says when each applies; ``repair`` (objects the bucket lost) is the flush engine's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from pydantic import ValidationError

from runarchive.cache.core import RunRow
from runarchive.crypto.required import check_required
from runarchive.crypto.sealing import open_index
from runarchive.engine.ownership import extends, owner_of
from runarchive.engine.restore import execute_restore, plan_restore
from runarchive.engine.writepath import WritePath
from runarchive.errors import (
    EncryptionError,
    FencedError,
    FormatVersionError,
    ObjectNotFoundError,
    PreconditionFailedError,
    ResumeConflictError,
    RunNotFoundError,
    RunStateError,
)
from runarchive.format.codec import index_key, parse_records
from runarchive.format.indexpages import expand
from runarchive.format.jsonvalue import dumps, loads
from runarchive.format.model import (
    Checkpoint,
    EpochStart,
    Event,
    RunIndex,
    format_ts,
    new_writer_id,
    parse_index,
    utcnow,
    validate_run_id,
)
from runarchive.logs import log_run
from runarchive.policy import Policy
from runarchive.store import IfMatch

log = logging.getLogger("runarchive.recovery")  # the name docs/observability.md documents


class Writer(Protocol):
    """What :func:`fork_run` writes the stranded records through (a ``Run``)."""

    @property
    def run_id(self) -> str: ...
    def checkpoint(self, name: str, state: Any, metadata: dict[str, Any] | None = None) -> Any: ...
    def event(self, kind: str, data: Any = None, lane: str = "main") -> Any: ...
    def complete(self, result: Any = None) -> None: ...


W = TypeVar("W", bound=Writer)
H = TypeVar("H")


def fork_run(
    path: WritePath,
    run_id: str,
    to: str | None,
    start: Callable[[str, str | None, dict[str, Any], Policy], W],
) -> W:
    """Archive the records this host's copy of ``run_id`` holds and the bucket lacks
    (written after another host took the run over) as a new run ``to`` (default: a
    generated id) that ``start(agent, to, metadata, policy)`` begins, then forget the
    local copy. See :meth:`Archive.fork`."""
    validate_run_id(run_id)
    cache, engine = path.cache, path.engine
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
            "host": path.config.host_id,
            "at": format_ts(utcnow()),
        },
    }
    # keep_all: every stranded record was acknowledged, none may be dropped now.
    new = start(row.agent, to, meta, Policy(keep_all=True))
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


def _read_all(path: WritePath, index: RunIndex, since: int | None) -> list[Checkpoint | Event]:
    """The run's records the index names (from seq ``since`` on, if given)."""
    return execute_restore(
        plan_restore(index, min_seq=since, run_id=index.run_id),
        path.store,
        workers=path.config.restore_workers,
        keyring=path.keyring,
    )


def resume_run(
    path: WritePath,
    run_id: str,
    expected_epoch: int | None,
    *,
    handle: Callable[[str], H],
    discard: Callable[[str], None],
) -> H:
    """Take over a running run from the bucket and return ``handle(run_id)``, its
    writer; ``discard`` forgets a stale local copy first. See :meth:`Archive.resume`."""
    validate_run_id(run_id)
    cache, engine, store = path.cache, path.engine, path.store
    mine = cache.run(run_id)
    if mine is not None and (run_id in engine.live or engine.revalidate(run_id)):
        return handle(run_id)
    mine = cache.run(run_id)
    if mine is not None and mine.last_seq > mine.archived_seq:
        raise FencedError(
            f"this host's copy of run {run_id!r} holds {mine.last_seq - mine.archived_seq} "
            "records written after another host took it over, which the bucket lacks: "
            f"archive.fork({run_id!r}) (`runarchive fork {run_id} --to NEW_ID`) archives "
            "them as a new run; then resume again"
        )
    if mine is not None:  # a stale copy with nothing of its own: the bucket's wins
        discard(run_id)
    key = index_key(run_id)
    try:
        got = store.get(key)
    except ObjectNotFoundError:
        raise RunNotFoundError(f"no run {run_id!r} in {store.description}") from None
    head = parse_index(got.body, key)
    index = expand(store, head)
    check_required(index, path.config.encryption_required)
    if index.status != "running":
        raise RunStateError(f"run {run_id!r} is {index.status}; only running runs resume")
    # Before any write: without its key an encrypted run must not be taken over.
    metadata = open_index(index, path.keyring, key).metadata
    if index.keys and not path.keyring.writes:
        raise EncryptionError(
            f"run {run_id!r} is encrypted; this archive would write its next records "
            "in plaintext: set encryption (RUNARCHIVE_ENCRYPTION) and its key to resume it"
        )
    try:
        policy = None if index.policy is None else Policy.model_validate(index.policy)
    except ValidationError as exc:
        raise FormatVersionError(
            f"run {run_id!r} has a compression policy this version cannot apply "
            f"({exc.error_count()} problems); resume it with a newer runarchive"
        ) from None
    if expected_epoch is not None and index.epoch != expected_epoch:
        raise ResumeConflictError(
            f"run {run_id!r} is at epoch {index.epoch}, not {expected_epoch}: "
            f"{index.owner_host or 'another host'} took it over already"
        )
    writer = new_writer_id()
    # Read before taking: a run whose segments cannot be read (one is missing while
    # its writer has not healed it yet) must not lose its owner to a host that cannot
    # continue it. The If-Match proves these records are still the whole run; an owner
    # that flushed meanwhile costs only its new segments and another try.
    records = _read_all(path, index, None)
    for _ in range(10):
        taken = head.model_copy(
            update={
                "epoch_starts": {
                    **head.epoch_starts,
                    str(index.epoch + 1): EpochStart(seq=index.last_seq, writer=index.writer),
                },
                "epoch": index.epoch + 1,
                "writer": writer,
                "owner_host": path.config.host_id,
                "owner_pid": engine.pid,
                "updated_at": utcnow(),
            }
        )
        body = taken.model_dump_json()
        try:
            etag = store.put(key, body.encode(), mode=IfMatch(got.etag))
            break
        except PreconditionFailedError:
            try:
                got = store.get(key)
            except ObjectNotFoundError:
                raise RunNotFoundError(f"run {run_id!r} was deleted while resuming it") from None
            head = parse_index(got.body, key)
            newer = expand(store, head)
            if (
                newer.epoch != index.epoch
                or newer.writer != index.writer
                or newer.status != "running"
                or not extends(newer, index)
            ):
                raise ResumeConflictError(
                    f"run {run_id!r} changed while resuming it ({owner_of(newer)} now, "
                    f"status {newer.status}); check archive.interrupted() and try again"
                ) from None
            records += _read_all(path, newer, index.last_seq + 1)
            index = newer
    else:
        raise ResumeConflictError(
            f"run {run_id!r}: its owner kept flushing through 10 takeover attempts; "
            "try again, or stop its owner first"
        )
    checkpoints = [r.seq for r in records if isinstance(r, Checkpoint)]
    row = RunRow(
        run_id=run_id,
        agent=index.agent,
        metadata=dumps(metadata).decode(),
        status="running",
        created_at=format_ts(index.created_at),
        updated_at=format_ts(utcnow()),
        ended_at=None,
        result=None,
        error=None,
        last_seq=index.last_seq,
        first_checkpoint_seq=checkpoints[0] if checkpoints else None,
        archived_seq=index.last_seq,
        index_etag=etag,
        index_json=body,
        status_archived=1,
        evicted_seq=0,
        epoch=taken.epoch,
        fenced=0,
        manifest_state=0,
        policy=None if policy is None else policy.model_dump_json(),
        writer=writer,
    )
    cache.import_run(
        row,
        [
            (
                r.seq,
                format_ts(r.ts),
                r.type,
                r.name if isinstance(r, Checkpoint) else r.kind,
                dumps(r.model_dump(mode="json")),
            )
            for r in records
        ],
    )
    engine.mark_synced(run_id)
    log_run(
        log,
        logging.INFO,
        run_id,
        index.last_seq,
        "resumed here at epoch %d, from seq %d",
        taken.epoch,
        index.last_seq,
    )
    ours = handle(run_id)
    # The manifest entry moves from the previous owner's object to this process's.
    engine.manifest.moved(run_id, index.owner_host, index.owner_pid)
    # Nothing is pending: this flush only lists this host as the owner.
    path.flusher.flushed(run_id, engine.flush_run(run_id))
    return ours
