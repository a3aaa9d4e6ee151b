"""The background flusher: one thread that decides *when* runs flush (triggers, retries
with jittered back-off), renews the leases of this host's runs and keeps the cache's
WAL short. *What* one flush does to the bucket is
:class:`~runarchive.engine.flush.FlushEngine`'s."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from runarchive import telemetry
from runarchive.config import ArchiveConfig
from runarchive.engine.flush import FlushEngine
from runarchive.errors import FencedError
from runarchive.format.model import format_ts, utcnow
from runarchive.logs import log_run
from runarchive.policy import KeptBytes

log = logging.getLogger("runarchive.flusher")

BACKOFF_FIRST = 0.5  # seconds, the ceiling after the first failure; it doubles per failure
BACKOFF_MAX = 30.0


def backoff(failures: int, uniform: Callable[[], float]) -> float:
    """Seconds to wait before retrying after ``failures`` failures in a row.

    "Equal jitter" (AWS Architecture Blog, "Exponential Backoff And Jitter"): the
    ceiling ``min(30, 0.5 * 2 ** (failures - 1))`` is half waited, half drawn from
    ``uniform()`` (a float in [0, 1)). The fixed half keeps a failing bucket from
    being hammered; the random half spreads a fleet that failed at the same instant
    (an outage) so its retries do not arrive in lockstep when the bucket comes back.
    """
    # The exponent is capped: 2 ** 1024 does not fit a float (a long outage would
    # otherwise kill the thread with an OverflowError).
    ceiling = min(BACKOFF_MAX, BACKOFF_FIRST * 2.0 ** min(max(failures, 1) - 1, 32))
    return ceiling / 2 + ceiling / 2 * uniform()


@dataclass
class _Pending:
    count: int  # records with seq > the last flushed seq (seqs are gapless)
    kept: KeptBytes
    since: float  # monotonic time of the oldest pending record
    last_seq: int = 0  # newest seq noted
    failures: int = 0
    retry_at: float = 0.0
    requested: bool = False


@dataclass
class FlushError:
    """The last failure of a background flush of one run."""

    run_id: str
    error: Exception
    at: float = field(default_factory=time.time)


class Flusher:
    """Background thread that flushes runs when a trigger fires.

    Triggers, per run: ``flush_records`` pending records, ``flush_bytes`` of would-be
    segment, ``flush_age`` seconds since the oldest pending record. Failures back off
    exponentially with jitter (:func:`backoff`: a ceiling of 0.5 s doubling up to
    30 s, waited between half and all of it) and are kept in :attr:`errors`.
    ``uniform`` (floats in [0, 1)) is the jitter's random source; tests inject one.
    """

    def __init__(
        self,
        engine: FlushEngine,
        config: ArchiveConfig,
        *,
        uniform: Callable[[], float] | None = None,
    ) -> None:
        self.engine, self.config = engine, config
        # Its own generator, seeded from os.urandom: hosts (and processes) differ.
        self._uniform = uniform if uniform is not None else random.Random().random
        self.errors: dict[str, FlushError] = {}
        self._cond = threading.Condition()
        self._pending: dict[str, _Pending] = {}
        self._stop = False
        self._appended = False  # appends since the last WAL checkpoint
        self._thread = threading.Thread(target=self._loop, name="runarchive-flusher", daemon=True)
        self.on_error: Callable[[FlushError], None] | None = None

    def start(self, recovered: dict[str, int]) -> None:
        """Start the thread; ``recovered`` runs (run id -> last seq), pending from an
        earlier process, are due now."""
        with self._cond:
            for run_id, last_seq in recovered.items():
                state = self._fresh(run_id)
                state.requested = True
                state.last_seq = last_seq
        telemetry.watch(self, self.config.telemetry)
        self._thread.start()

    def _fresh(self, run_id: str) -> _Pending:
        state = self._pending.get(run_id)
        if state is None:
            state = self._pending[run_id] = _Pending(
                0, KeptBytes(self.engine.policy(run_id)), time.monotonic()
            )
        return state

    def note_append(self, run_id: str, seq: int, rtype: str, name: str, size: int) -> None:
        """Called after each durable append; wakes the thread when a trigger fires."""
        with self._cond:
            self._appended = True
            state = self._pending.get(run_id)
            if state is None or state.count == 0:
                state = self._fresh(run_id)
                state.since = time.monotonic()
            state.count += 1
            state.last_seq = seq
            if rtype == "checkpoint":
                state.kept.add_checkpoint(seq, name, size)
            else:
                state.kept.add_event(size)
            if (
                state.count >= self.config.flush_records
                or state.kept.total >= self.config.flush_bytes
            ):
                self._cond.notify()

    def request(self, run_id: str) -> None:
        """Ask for a flush of ``run_id`` soon (status change, close)."""
        with self._cond:
            self._fresh(run_id).requested = True
            self._cond.notify()

    def _due(self, now: float) -> tuple[list[str], float]:
        due, wait = [], self.config.flush_age
        for run_id, st in self._pending.items():
            if st.count == 0 and not st.requested:
                continue
            if st.retry_at > now:
                wait = min(wait, st.retry_at - now)
                continue
            age_left = st.since + self.config.flush_age - now
            if (
                st.requested
                or st.count >= self.config.flush_records
                or st.kept.total >= self.config.flush_bytes
                or age_left <= 0
            ):
                due.append(run_id)
            else:
                wait = min(wait, age_left)
        return due, max(wait, 0.01)

    def _loop(self) -> None:
        renew_every = self.config.lease_seconds / 3
        next_renew = time.monotonic() + renew_every
        verify_every = self.config.read_back_seconds
        next_verify = time.monotonic() + verify_every
        while True:
            with self._cond:
                if self._stop:
                    return
                due, wait = self._due(time.monotonic())
                if not due:
                    until = min(next_renew, next_verify) - time.monotonic()
                    self._cond.wait(max(0.01, min(wait, until)))
                for run_id in due:
                    self._pending[run_id].requested = False
                checkpoint, self._appended = self._appended, False
            for run_id in due:
                self._flush(run_id)
            if checkpoint:
                # Here, not in appends: at most every flush_age seconds, even while
                # flushes fail, so the WAL stays bounded during an outage too.
                self._checkpoint_wal()
            if time.monotonic() >= next_renew:
                next_renew = time.monotonic() + renew_every
                self._renew()
            if self.config.read_back and time.monotonic() >= next_verify:
                next_verify = time.monotonic() + verify_every
                self._verify()
            self._note_stranded()

    def _note_stranded(self) -> None:
        """Runs fenced in the background with records the bucket lacks stay listed in
        :attr:`errors` (``archive.flush_errors``) until forked or forgotten."""
        if not self.engine.fenced:
            return
        for run_id, exc in self.engine.stranded_errors().items():
            if not isinstance(getattr(self.errors.get(run_id), "error", None), FencedError):
                self.errors[run_id] = FlushError(run_id, exc)

    def _verify(self) -> None:
        """Read back this process's runs that archived records since their last
        read-back (a PUT answered 200 and never stored is healed while the cache still
        holds its records)."""
        for run_id in list(self.engine.live):
            try:
                self.engine.verify_stored(run_id)
            except Exception as exc:  # kept like a flush failure; the next tick retries
                self.errors[run_id] = FlushError(run_id, exc)
                log_run(log, logging.WARNING, run_id, None, "read-back failed (%s)", exc)

    def _renew(self) -> None:
        try:
            self.engine.renew_leases()
        except Exception as exc:  # the lease is renewed again a third of it later
            log.warning("renewing leases in the manifest failed: %s", exc)

    def _checkpoint_wal(self) -> None:
        try:
            self.engine.cache.checkpoint_wal()
        except Exception as exc:  # the WAL keeps the data; the next wake tries again
            log.warning("WAL checkpoint of the cache failed: %s", exc)

    def _flush(self, run_id: str) -> None:
        try:
            upto = self.engine.flush_run(run_id)
        except Exception as exc:  # kept, logged and retried: the records stay in the cache
            with self._cond:
                st = self._fresh(run_id)
                st.requested = True  # retry after the back-off even with nothing pending
                st.failures += 1
                st.retry_at = time.monotonic() + backoff(st.failures, self._uniform)
            err = FlushError(run_id, exc)
            self.errors[run_id] = err
            try:  # for `runarchive status` in another process; cleared by the next flush
                self.engine.cache.note_flush_error(
                    run_id, f"{type(exc).__name__}: {exc}", format_ts(utcnow())
                )
            except Exception as note_exc:  # the cache may be full or closing: only a note
                log_run(
                    log, logging.DEBUG, run_id, None, "keeping the flush error failed: %s", note_exc
                )
            log_run(log, logging.WARNING, run_id, None, "flush failed (%s); will retry", exc)
            if self.on_error is not None:
                self.on_error(err)
            return
        self.flushed(run_id, upto)

    def flushed(self, run_id: str, upto: int) -> None:
        """Record that ``run_id`` is archived through seq ``upto`` (no I/O: seqs are
        gapless, so what is pending is exactly the seqs noted after ``upto``)."""
        with self._cond:
            self.errors.pop(run_id, None)
            st = self._pending.get(run_id)
            if st is None:
                return
            st.failures, st.retry_at = 0, 0.0
            st.count = max(0, st.last_seq - upto)
            # The few records appended during the flush are not re-measured: the
            # byte estimate restarts from zero, the count and age triggers still hold.
            st.kept.reset()
            st.since = time.monotonic()
            if st.count == 0 and not st.requested:
                del self._pending[run_id]

    def backlog(self) -> tuple[int, int | None, float | None] | None:
        """Pending records, unflushed bytes (the cache's running count, ``None`` until
        known) and the age in seconds of the oldest pending record (``None``: nothing
        pending), from memory only: the telemetry gauges read it. ``None`` once stopped."""
        with self._cond:
            if self._stop:
                return None
            now, live = time.monotonic(), [s for s in self._pending.values() if s.count]
            records = sum(s.count for s in live)
            age = max((now - s.since for s in live), default=None)
        return records, self.engine.cache.unflushed_bytes_known, age

    def stop(self) -> None:
        """Stop the thread (after its current flush)."""
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join()
