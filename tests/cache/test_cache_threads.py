"""The local cache and the threads that use it."""

from __future__ import annotations

import gc
import os
import threading
from pathlib import Path

from runarchive import Archive, Policy


def test_threads_that_end_do_not_leave_a_connection_behind(tmp_path: Path) -> None:
    # Found by a 180 s soak: every thread that appended kept its SQLite connection
    # (2 file descriptors, ~130 KB) until the archive closed: 300 short-lived threads,
    # +602 fds. A long-lived agent whose framework starts threads per step ran out.
    url = (tmp_path / "bucket").as_uri()
    with Archive.open(url, cache_dir=tmp_path / "c", policy=Policy(keep_all=True)) as archive:
        run = archive.start_run(agent="threads")
        run.checkpoint("s", {"i": 0})
        fds_before = len(os.listdir("/proc/self/fd"))
        for i in range(100):
            t = threading.Thread(target=run.checkpoint, args=("s", {"i": i}))
            t.start()
            t.join()
        gc.collect()
        assert len(os.listdir("/proc/self/fd")) - fds_before <= 6  # the flusher's, a WAL
        assert len(archive.cache._conns) <= 3  # main and flusher threads
        assert run.last_seq == 101
        archive.flush()
        assert len(archive.restore(run.run_id).records) == 101
