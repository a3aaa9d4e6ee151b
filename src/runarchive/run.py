"""The writer and reader of one run: :class:`Run`, handed out by ``Archive``.

A run writes and reads through the archive's
:class:`~runarchive.engine.writepath.WritePath`, never through the ``Archive`` itself.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import datetime
from types import TracebackType
from typing import Any, Literal, Self

from runarchive.cache.core import CachedRecord
from runarchive.engine.writepath import WritePath
from runarchive.errors import InvalidInputError, RecordTooLargeError, RunStateError
from runarchive.format.codec import parse_records
from runarchive.format.jsonvalue import check_json_value, dumps, loads
from runarchive.format.model import Checkpoint, Event, format_ts, utcnow, validate_name
from runarchive.logs import log_run

log = logging.getLogger(__name__)


def _parse(rec: CachedRecord) -> Checkpoint | Event:
    return parse_records(rec.line, "local cache")[0]


class Run:
    """The writer and reader of one run. Get one from :meth:`Archive.start_run`.

    Appends return only once the record is durable in the local cache (with
    ``durability="remote"``: in the bucket). One run's appends are serialised.
    """

    def __init__(self, path: WritePath, run_id: str) -> None:
        self._path = path
        self.run_id = run_id
        row = path.row(run_id)
        assert row is not None  # callers check
        self.agent = row.agent
        self.metadata: dict[str, Any] = loads(row.metadata)
        self._last_seq = row.last_seq
        self._status = row.status
        self._lock = threading.Lock()

    @property
    def status(self) -> str:
        """``running``, ``completed`` or ``failed``."""
        return self._status

    @property
    def last_seq(self) -> int:
        """Seq of the newest record (0 before the first)."""
        return self._last_seq

    def _append(self, rtype: str, name: str, body: dict[str, Any]) -> tuple[int, datetime]:
        with self._lock:
            self._path.check_writable(self.run_id)
            if self._status != "running":
                raise RunStateError(
                    f"run {self.run_id!r} is {self._status}; start a new run to record more"
                )
            seq = self._last_seq + 1
            ts = utcnow()
            ts_text = format_ts(ts)
            line = dumps({"run": self.run_id, "seq": seq, "ts": ts_text, "type": rtype, **body})
            limit = self._path.config.max_record_bytes
            if len(line) > limit:
                raise RecordTooLargeError(
                    f"this {rtype} of run {self.run_id!r} is {len(line):,} bytes of JSON, over "
                    f"max_record_bytes ({limit:,}); nothing was recorded. Store large blobs "
                    "elsewhere and checkpoint a reference, or raise RUNARCHIVE_MAX_RECORD_BYTES"
                )
            self._path.append(self.run_id, seq, ts_text, rtype, name, line)
            self._last_seq = seq
        self._path.appended(self.run_id, seq, rtype, name, len(line))
        if self._path.config.durability == "remote":
            self.flush()
        return seq, ts

    def checkpoint(
        self, name: str, state: Any, metadata: dict[str, Any] | None = None
    ) -> Checkpoint:
        """Record a named snapshot of the agent's state and return it.

        ``state`` must be JSON data (see :mod:`runarchive.format.jsonvalue`); anything else
        raises ``StateNotSerializableError`` naming the path, and nothing is written.
        """
        validate_name(name, "checkpoint name")
        data = check_json_value(state, "state")
        meta = check_json_value(metadata or {}, "metadata")
        if not isinstance(meta, dict):
            raise InvalidInputError("metadata must be a dict")
        seq, ts = self._append("checkpoint", name, {"name": name, "metadata": meta, "state": data})
        return Checkpoint.model_construct(
            run=self.run_id, seq=seq, ts=ts, type="checkpoint", name=name, metadata=meta, state=data
        )

    def event(self, kind: str, data: Any = None, lane: str = "main") -> Event:
        """Append an event to the run's log and return it. Events are never dropped."""
        validate_name(kind, "event kind")
        validate_name(lane, "lane")
        value = check_json_value(data, "data")
        seq, ts = self._append("event", kind, {"kind": kind, "lane": lane, "data": value})
        return Event.model_construct(
            run=self.run_id, seq=seq, ts=ts, type="event", kind=kind, lane=lane, data=value
        )

    def _end(self, status: str, result: Any, error: str | None) -> None:
        with self._lock:
            if self._status != "running":
                raise RunStateError(f"run {self.run_id!r} is already {self._status}")
            result_text = None if result is None else dumps(result).decode()
            self._path.end(self.run_id, status, format_ts(utcnow()), result_text, error)
            self._status = status
        log_run(
            log, logging.INFO, self.run_id, self._last_seq, "%s at seq %d", status, self._last_seq
        )
        self.flush()

    def complete(self, result: Any = None) -> None:
        """Mark the run completed (with an optional JSON ``result``) and flush it."""
        self._end("completed", check_json_value(result, "result"), None)

    def fail(self, error: BaseException | str) -> None:
        """Mark the run failed with ``error`` (an exception or a message) and flush it.

        A lone surrogate in the message (not encodable as UTF-8) is stored escaped
        (``\\ud800``): a failure is recorded even when its message is not valid text."""
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
        self._end("failed", None, text)

    def flush(self) -> None:
        """Ship this run's pending records to the bucket now; raise if that fails."""
        self._path.flush(self.run_id)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._status != "running":
            return
        if exc is None:
            self.complete()
        else:
            try:
                self.fail(exc)
            except Exception as flush_exc:  # the caller's exception wins; ours is a note
                exc.add_note(f"runarchive: marking run {self.run_id} failed raised {flush_exc!r}")

    # -- reads ---------------------------------------------------------------

    def latest(self, name: str | None = None) -> Checkpoint | None:
        """The newest checkpoint (of ``name``, if given), from the cache."""
        rows = self._path.cached(
            self.run_id, rtype="checkpoint", name=name, newest_first=True, limit=1
        )
        rec = _parse(rows[0]) if rows else None
        return rec if isinstance(rec, Checkpoint) else None

    def get(self, seq: int) -> Checkpoint | Event | None:
        """The record with this seq, from the cache or else the bucket; ``None`` if gone."""
        rows = self._path.cached(self.run_id, min_seq=seq, max_seq=seq)
        if rows:
            return _parse(rows[0])
        for rec in self._path.archived(self.run_id, seq, seq):
            return rec
        return None

    def records(
        self,
        since: int | None = None,
        until: int | None = None,
        *,
        type: Literal["checkpoint", "event"] | None = None,
        name: str | None = None,
    ) -> list[Checkpoint | Event]:
        """Records still held with ``since <= seq <= until``, oldest first.

        Read from the cache, and from the bucket for the part the cache evicted
        (1 index-cached plan + 1 GET per segment touched). ``name`` filters
        checkpoints by name and events by kind.
        """
        lo, hi = since or 1, until
        cached = self._path.cached(self.run_id, rtype=type, name=name, min_seq=lo, max_seq=hi)
        found: dict[int, Checkpoint | Event] = {r.seq: r for r in map(_parse, cached)}
        row = self._path.row(self.run_id)
        evicted = row.evicted_seq if row else 0
        if evicted >= lo:  # part of the range left the cache: read it from the bucket
            for r in self._path.archived(self.run_id, lo, min(evicted, hi or evicted)):
                if type is not None and r.type != type:
                    continue
                if name is not None and (r.name if isinstance(r, Checkpoint) else r.kind) != name:
                    continue
                found.setdefault(r.seq, r)
        return [found[s] for s in sorted(found)]

    def history(
        self,
        name: str | None = None,
        since: int | datetime | None = None,
        until: int | datetime | None = None,
    ) -> list[Checkpoint]:
        """Checkpoints still held (cache, then bucket for evicted ones), oldest first.

        ``since``/``until`` are inclusive bounds, as seqs (``int``) or times.
        Checkpoints dropped by the policy are returned while the cache still has them.
        """
        lo = since if isinstance(since, int) else None
        hi = until if isinstance(until, int) else None
        out = [
            r
            for r in self.records(lo, hi, type="checkpoint", name=name)
            if isinstance(r, Checkpoint)
        ]
        if isinstance(since, datetime):
            out = [r for r in out if r.ts >= since]
        if isinstance(until, datetime):
            out = [r for r in out if r.ts <= until]
        return out

    def events(self, since_seq: int = 0, lane: str | None = None) -> list[Event]:
        """The run's events with ``seq > since_seq`` (of one ``lane``, if given), oldest first.

        Events are never dropped by the policy, so this is the whole log.
        """
        return [
            r
            for r in self.records(since_seq + 1, type="event")
            if isinstance(r, Event) and (lane is None or r.lane == lane)
        ]

    def __iter__(self) -> Iterator[Checkpoint]:
        return iter(self.history())

    def rollback_to(self, seq: int) -> Any:
        """The state of checkpoint ``seq``, for the caller to resume from."""
        rec = self.get(seq)
        if not isinstance(rec, Checkpoint):
            what = "an event" if rec is not None else "not held (dropped by the policy or unknown)"
            raise InvalidInputError(f"seq {seq} of run {self.run_id!r} is {what}, not a checkpoint")
        return rec.state
