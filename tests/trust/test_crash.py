"""Crash test: SIGKILL a writer at random moments; nothing acknowledged is ever lost."""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import CHILDREN
from support.backends import Backend

from runarchive import Reader
from runarchive.cache.core import Cache

CHILD = CHILDREN / "crash_child.py"
# 12 kills: in runs of 22, 16-17 landed inside a flush (mid-PUT or between segment and
# index), so 12 still put several there; fault-point kills are tests/trust/test_crash_points.py.
# CRASH_KILLS=200 for a longer run.
KILLS = int(os.environ.get("CRASH_KILLS", "12"))


def _run_child(
    backend: Backend, cache_dir: Path, run_id: str, mode: str, env: dict[str, str]
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(CHILD), backend.url, str(cache_dir), run_id, mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _read_until_acked_then(proc: subprocess.Popen[str], seconds: float) -> list[str]:
    """Complete lines the child printed: until its first ACK (at most 30 s), then for
    ``seconds`` more."""
    assert proc.stdout is not None
    lines: list[str] = []
    buf, deadline = "", time.monotonic() + 30
    fd = proc.stdout.fileno()
    acked = False
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        chunk = os.read(fd, 65536).decode()
        if not chunk:
            break
        buf += chunk
        *done, buf = buf.split("\n")
        lines.extend(done)
        if not acked and any(line.startswith("ACK ") for line in done):
            acked = True
            deadline = time.monotonic() + seconds
    return lines


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["file", "seaweedfs"], indirect=True)
def test_sigkill_at_random_moments_loses_nothing_acknowledged(backend: Backend) -> None:
    rng = random.Random(20261125)
    env = {**os.environ, **{k: str(v) for k, v in _s3_env(backend).items()}}
    cache_dir = backend.tmp / "crash-cache"
    run_id = "crash-run"
    acked: list[int] = []
    kills_in_flush = 0
    for _ in range(KILLS):
        proc = _run_child(backend, cache_dir, run_id, "write", env)
        # Wait until it has acknowledged something, then kill it at a random moment.
        lines = _read_until_acked_then(proc, 0.05 + rng.random() * 0.5)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.stderr is not None
        stderr = proc.stderr.read()
        acks = [int(line.split()[1]) for line in lines if line.startswith("ACK ")]
        assert acks, f"child acknowledged nothing before the kill; stderr:\n{stderr}"
        acked.extend(acks)
        open_puts = {line.split()[1] for line in lines if line.startswith("PUT-BEGIN")}
        open_puts -= {line.split()[1] for line in lines if line.startswith("PUT-END")}
        segs = [ln for ln in lines if ln.startswith("PUT-END") and "/seg/" in ln]
        last = [ln for ln in lines if ln.startswith("PUT-")][-1:]
        if open_puts or (last and last[0] in segs):
            kills_in_flush += 1  # killed mid-PUT or between segment and index write

    assert acked == sorted(acked)
    assert len(set(acked)) == len(acked)  # each seq acknowledged once, across restarts
    assert kills_in_flush >= 1, "no kill landed inside a flush; widen the window"

    # After the kills, every acknowledged record is in the cache or already archived...
    cache = Cache(cache_dir, backend.url)
    try:
        held = {r.seq for r in cache.records(run_id)}
        row = cache.run(run_id)
    finally:
        cache.close()
    assert row is not None
    assert set(acked) <= held | set(range(1, row.archived_seq + 1))
    assert row.last_seq >= max(acked)

    # ...and reaches the bucket once a writer drains the cache.
    drain = _run_child(backend, cache_dir, run_id, "drain", env)
    out, err = drain.communicate(timeout=120)
    assert drain.returncode == 0, err
    assert "DRAINED" in out

    reader = Reader.open(backend.url, **backend.settings)
    restored = reader.restore(run_id)  # a fresh host: reads the bucket only
    seqs = [r.seq for r in restored.records]
    assert seqs == list(range(1, len(seqs) + 1))  # no gap, no duplicate
    assert set(acked) <= set(seqs)
    assert all(r.state["n"] == r.seq for r in restored.checkpoints)
    print(
        f"{KILLS} kills, {kills_in_flush} inside a flush, {len(acked)} acked, "
        f"{len(seqs)} restored in {len(restored.index.segments)} segments"
    )


def _s3_env(backend: Backend) -> dict[str, object]:
    if backend.name != "seaweedfs":
        return {}
    return {
        "AWS_ENDPOINT_URL_S3": backend.settings["endpoint_url"],
        "AWS_ACCESS_KEY_ID": os.environ["AWS_ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": os.environ["AWS_SECRET_ACCESS_KEY"],
    }
