"""Keeping the cache's SQLite WAL bounded during endless append streams.

:class:`WalKeeper` is a base of :class:`~runarchive.cache.core.Cache`: the flusher's
PASSIVE checkpoints cannot start the WAL over while appends keep adding to it, so
past :data:`WAL_LIMIT_BYTES` a keeper thread checkpoints all of it and SQLite starts
it over (docs/design.md, "The local cache").
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from runarchive.errors import CacheError

log = logging.getLogger("runarchive.cache_wal")

# The WAL's bound (docs/design.md, "The local cache"). Past it, the WAL keeper thread
# checkpoints the whole WAL and has SQLite start it over; journal_size_limit then
# truncates the file back to this size. Each small append adds ~20 KB of WAL (one
# frame per page it touches: the record, two index leaves, the run row), so 16 MiB is
# ~800 appends, a reset every second or so in a tight loop. Past twice the bound the
# committing thread resets it itself (the keeper fell behind), so the file stays under
# ~2x the bound plus one transaction unless a reader pins the WAL.
WAL_LIMIT_BYTES = 16 * 1024 * 1024
# How long the keeper's RESTART checkpoint waits for readers to leave the WAL, with
# appends held back meanwhile; past it the keeper tries again later (backing off).
RESTART_WAIT_MS = 25
BUSY_TIMEOUT_MS = 30000  # every other wait for a lock
KEEPER_BACKOFF = (0.05, 5.0)  # seconds: first retry after a reader kept the WAL, cap


def _limit() -> int:
    # Read at each use, not bound at import: tests shrink the bound.
    return WAL_LIMIT_BYTES


class WalKeeper:
    """The WAL-bounding half of the cache (a base class; the cache sets the fields)."""

    _wal_path: Path
    _closed: bool
    _checkpoint_lock: threading.Lock
    _write_lock: threading.Lock
    _keeper_cond: threading.Condition
    _keeper: threading.Thread | None
    _keeper_due: bool
    _wal_stuck: bool

    if TYPE_CHECKING:

        def _conn(self) -> sqlite3.Connection: ...

    def checkpoint_wal(self) -> None:
        """Copy the WAL into the database file (PASSIVE: never blocks writers).

        Appending connections have automatic checkpoints turned off, so that no
        ``checkpoint()`` call pays for copying megabytes of earlier records; the
        flusher calls this after each flush instead. A PASSIVE checkpoint cannot
        start the WAL over while appends keep adding to it: :meth:`reset_wal` does.
        """
        with self._checkpoint_lock:
            self._conn().execute("PRAGMA wal_checkpoint(PASSIVE)")

    def reset_wal(self) -> bool:
        """Checkpoint the whole WAL so that the next commit starts it over (and
        truncates the file to ``WAL_LIMIT_BYTES``). ``False`` if a reader kept it.

        A PASSIVE checkpoint beside the appends copies the bulk; then, with the
        process's writers held on the write lock, a RESTART checkpoint copies the
        frames appended meanwhile and waits (``RESTART_WAIT_MS`` at most) for
        readers to leave the WAL. Appends wait only for that second step.
        """
        with self._checkpoint_lock:
            db = self._conn()
            db.execute("PRAGMA wal_checkpoint(PASSIVE)")
            with self._write_lock:
                db.execute(f"PRAGMA busy_timeout={RESTART_WAIT_MS}")
                try:
                    busy, _, _ = db.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
                finally:
                    db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        return not busy

    def _watch_wal(self) -> None:
        """After a commit: have the WAL started over if it grew past its bound.

        The file's size tells: SQLite truncates it to ``WAL_LIMIT_BYTES`` at the
        commit that starts the WAL over, so it is larger only while the WAL holds
        more than that. One ``stat`` per commit (~5 µs; a commit fsyncs). The keeper
        thread does the work; at twice the bound it has fallen behind (not scheduled
        for tens of ms on a loaded machine: measured 30 ms) and this thread does it.
        """
        try:
            size = os.stat(self._wal_path).st_size
        except FileNotFoundError:
            return  # no WAL: nothing to bound
        except OSError as exc:  # the record is committed: do not fail the append
            log.warning("cannot stat the cache's WAL %s: %s", self._wal_path, exc)
            return
        if size <= _limit():
            return
        if size > 2 * _limit() and not self._wal_stuck:
            self._try_reset_wal()
            return
        with self._keeper_cond:
            if self._closed:
                return
            self._keeper_due = True
            if self._keeper is None:
                self._keeper = threading.Thread(
                    target=self._keep_wal, name="runarchive-wal", daemon=True
                )
                self._keeper.start()
            self._keeper_cond.notify()

    def _try_reset_wal(self) -> str | None:
        """:meth:`reset_wal`; ``None`` if done, else why not (also logged at DEBUG)."""
        try:
            done = self.reset_wal()
            why = "a reader kept it (another process reading the cache?)"
        except (sqlite3.Error, CacheError) as exc:  # the data is safe in the WAL
            done, why = False, str(exc)
        self._wal_stuck = not done
        if done:
            return None
        log.debug("could not start the cache's WAL %s over: %s", self._wal_path, why)
        return why

    def _keep_wal(self) -> None:
        """The WAL keeper thread: reset the WAL each time :meth:`_watch_wal` asks."""
        failures = 0
        while True:
            with self._keeper_cond:
                self._keeper_cond.wait_for(lambda: self._keeper_due or self._closed)
                if self._closed:
                    return
                self._keeper_due = False
            why = self._try_reset_wal()
            if why is None:
                failures = 0
                continue
            failures += 1
            if failures == 5:  # once per streak: a short read here explains a few
                log.warning(
                    "could not start the cache's WAL %s over (%s); it grows until this "
                    "succeeds. Retrying with back-off.",
                    self._wal_path,
                    why,
                )
            first, cap = KEEPER_BACKOFF
            with self._keeper_cond:
                self._keeper_cond.wait_for(
                    lambda: self._closed, timeout=min(cap, first * 2 ** (failures - 1))
                )
