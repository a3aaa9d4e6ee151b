"""The manifest and run ownership across real processes, on a real S3 server (SeaweedFS).

Each child process (``manifest_child.py``) is one "host": its own cache directory and
``host_id``. The parent reads the bucket like a fresh host (``Reader``), kills children
with SIGKILL, and takes runs over with ``Archive.resume``.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from support import CHILDREN
from support.backends import abandon, s3_settings
from support.servers import S3Server

from runarchive import Archive, Reader, ResumeConflictError, Run, RunEntry, RunStateError
from runarchive.format.codec import index_key
from runarchive.format.model import Checkpoint, utcnow
from runarchive.store import GetResult

pytestmark = pytest.mark.real_server

CHILD = CHILDREN / "manifest_child.py"
LEASE = 3.0  # the minimum lease_seconds: renewed every second


class Child:
    """A child process whose stdout lines are read with select, as they come."""

    def __init__(self, name: str, proc: subprocess.Popen[bytes], stderr_path: Path) -> None:
        self.name, self.proc, self.stderr_path = name, proc, stderr_path
        self.lines: list[str] = []
        self._buf = b""
        self._cursor = 0  # lines before it were matched by wait_for already
        self._eof = False

    def _read(self, timeout: float) -> None:
        """Read what the child printed within ``timeout`` seconds (at most one chunk)."""
        assert self.proc.stdout is not None
        if self._eof:
            return
        fd = self.proc.stdout.fileno()
        ready, _, _ = select.select([fd], [], [], max(timeout, 0))
        if not ready:
            return
        chunk = os.read(fd, 65536)
        if not chunk:
            self._eof = True
            return
        self._buf += chunk
        *done, self._buf = self._buf.split(b"\n")
        self.lines.extend(line.decode() for line in done)

    def wait_for(self, match: Callable[[str], bool], timeout: float = 30.0) -> str:
        """The next line (after the previous match) for which ``match`` is true."""
        deadline = time.monotonic() + timeout
        while True:
            for i in range(self._cursor, len(self.lines)):
                if match(self.lines[i]):
                    self._cursor = i + 1
                    return self.lines[i]
            self._cursor = len(self.lines)
            left = deadline - time.monotonic()
            if left <= 0 or self._eof:
                state = "exited" if self._eof else f"printed no such line in {timeout} s"
                raise AssertionError(f"child {self.name} {state}; {self.diagnostics()}")
            self._read(left)

    def drain(self, timeout: float = 30.0) -> list[str]:
        """Every line up to EOF (the child exited or was killed)."""
        deadline = time.monotonic() + timeout
        while not self._eof and (left := deadline - time.monotonic()) > 0:
            self._read(left)
        return self.lines

    def kill(self) -> None:
        """SIGKILL, then collect what it printed before dying."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.drain()

    def send(self, line: str) -> None:
        """Write one line to the child's stdin."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def seqs(self, tag: str) -> list[int]:
        """The seqs of the lines ``<tag> <seq> ...``."""
        return [int(line.split()[1]) for line in self.lines if line.startswith(tag + " ")]

    def diagnostics(self) -> str:
        code = self.proc.poll()
        err = self.stderr_path.read_text(errors="replace")[-4000:]
        return f"exit code {code}; last lines {self.lines[-10:]}; stderr:\n{err}"


@dataclass
class Env:
    """One fresh bucket on the shared SeaweedFS, and the hosts (processes) writing it."""

    server: S3Server
    url: str
    tmp: Path
    child_env: dict[str, str]
    children: list[Child] = field(default_factory=list)
    archives: list[Archive] = field(default_factory=list)

    def settings(self, host: str, **extra: Any) -> dict[str, Any]:
        """Settings of host ``host``: its own cache directory, the real server, keep all."""
        return {
            **s3_settings(self.server),
            "cache_dir": str(self.tmp / f"cache-{host}"),
            "host_id": host,
            "lease_seconds": LEASE,
            "flush_age": 0.1,
            "policy": {"keep_all": True},
            **extra,
        }

    def spawn(self, host: str, mode: str, **spec: Any) -> Child:
        """Start a child process acting as ``host``."""
        doc = {"mode": mode, "url": self.url, "settings": self.settings(host), **spec}
        stderr_path = self.tmp / f"{host}-{len(self.children)}.err"
        with stderr_path.open("wb") as err:
            proc = subprocess.Popen(
                [sys.executable, str(CHILD), json.dumps(doc)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                env=self.child_env,
            )
        child = Child(host, proc, stderr_path)
        self.children.append(child)
        return child

    def open(self, host: str, **extra: Any) -> Archive:
        """An archive in this process acting as ``host`` (closed at the end of the test)."""
        archive = Archive.open(self.url, **self.settings(host, **extra))
        self.archives.append(archive)
        return archive

    def reader(self) -> Reader:
        """A fresh host with no cache: reads the bucket only."""
        settings: dict[str, Any] = s3_settings(self.server)
        return Reader.open(self.url, **settings)


@pytest.fixture
def env(seaweed: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweed.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweed.secret_key)
    child_env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": seaweed.access_key,
        "AWS_SECRET_ACCESS_KEY": seaweed.secret_key,
    }
    e = Env(seaweed, seaweed.url(seaweed.make_bucket("manifest"), "agents"), tmp_path, child_env)
    yield e
    for child in e.children:
        if child.proc.poll() is None:
            child.proc.kill()  # by its own pid: only processes this test started
            child.proc.wait(timeout=30)
        for pipe in (child.proc.stdin, child.proc.stdout):
            if pipe is not None:
                pipe.close()
    for archive in e.archives:
        archive.close()


def _by_id(entries: list[RunEntry]) -> dict[str, RunEntry]:
    ids = [e.run_id for e in entries]
    assert len(ids) == len(set(ids)), "a run is listed twice"
    return {e.run_id: e for e in entries}


def _active_runs(reader: Reader) -> dict[str, dict[str, Any]]:
    """Every entry of the 8 ``manifest/active`` shards, as stored."""
    return reader.manifest.read_all(("active",))


def _wait_interrupted(reader: Reader, run_id: str, timeout: float) -> RunEntry | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [e for e in reader.interrupted() if e.run_id == run_id]
        if found:
            return found[0]
        time.sleep(0.2)
    return None


def _checkpoints(run: Run, host: str, count: int) -> list[int]:
    return [
        run.checkpoint("step", {"writer": host, "n": run.last_seq + 1}).seq for _ in range(count)
    ]


def _assert_restored(reader: Reader, run_id: str, owners: list[tuple[int, str]]) -> list[int]:
    """A fresh-host restore holds seqs 1..N without gap or duplicate, every record a
    checkpoint ``{"writer", "n": seq}``; ``owners`` = (last seq, writer) in order."""
    restored = reader.restore(run_id)
    seqs = [r.seq for r in restored.records]
    assert seqs == list(range(1, len(seqs) + 1)), f"gap or duplicate: {seqs}"
    lo = 0
    for hi, host in owners:
        for rec in restored.records[lo:hi]:
            assert isinstance(rec, Checkpoint)
            assert rec.state == {"writer": host, "n": rec.seq}, rec
        lo = hi
    assert lo == len(seqs), f"restore ends at {len(seqs)}, expected {lo}"
    return seqs


def _assert_finished_cleanly(reader: Reader, run_id: str, host: str, epoch: int) -> RunEntry:
    """The manifest lists the run completed by ``host`` at ``epoch``, and nothing is
    left running or interrupted."""
    entries = _by_id(reader.list_runs(limit=None))
    entry = entries[run_id]
    assert (entry.status, entry.owner_host, entry.epoch) == ("completed", host, epoch), entry
    assert entry.lease_expires_at is None
    index = reader.index(run_id)
    assert (index.status, index.owner_host, index.epoch) == ("completed", host, epoch)
    assert entry.last_seq == index.last_seq
    assert reader.interrupted() == []
    assert _active_runs(reader) == {}
    return entry


# -- 1. many hosts, many runs -----------------------------------------------------------


PROCS = 8
RUNS_PER_PROC = 50


def test_eight_processes_fifty_runs_no_lost_manifest_update(env: Env) -> None:
    started = time.monotonic()
    children = [env.spawn(f"host-{p}", "many", proc=p, runs=RUNS_PER_PROC) for p in range(PROCS)]
    expected: dict[str, tuple[str, str, int, str]] = {}  # run -> agent, status, records, host
    for p, child in enumerate(children):
        child.wait_for(lambda line: line == "DONE", timeout=120)
        assert child.proc.wait(timeout=30) == 0, child.diagnostics()
        for line in child.lines:
            if line.startswith("RUN "):
                _, run_id, status, records = line.split()
                expected[run_id] = (f"agent-{p}", status, int(records), f"host-{p}")
    elapsed = time.monotonic() - started
    assert len(expected) == PROCS * RUNS_PER_PROC
    assert sum(1 for v in expected.values() if v[1] == "failed") == PROCS * RUNS_PER_PROC // 5

    reader = env.reader()
    listed = _by_id(reader.list_runs(limit=None))
    assert set(listed) == set(expected), (
        f"missing {sorted(set(expected) - set(listed))[:5]}..., "
        f"unexpected {sorted(set(listed) - set(expected))[:5]}"
    )
    wrong = {
        run_id: entry
        for run_id, entry in listed.items()
        if (entry.agent, entry.status, entry.last_seq, entry.owner_host) != expected[run_id]
        or entry.epoch != 1
        or entry.lease_expires_at is not None
        or entry.ended_at is None
    }
    assert not wrong, f"{len(wrong)} entries disagree, e.g. {next(iter(wrong.values()))}"
    assert len(reader.list_runs(status="failed", limit=None)) == PROCS * RUNS_PER_PROC // 5
    assert len(reader.list_runs(agent="agent-3", limit=None)) == RUNS_PER_PROC
    # A run left in manifest/active although finished was put back there by a lease
    # renewal racing complete(): see test_lease_renewal_racing_complete_...
    stale = _active_runs(reader)
    assert stale == {}, f"{len(stale)} finished runs left in manifest/active: {stale}"
    assert reader.interrupted() == []
    print(f"{PROCS} processes x {RUNS_PER_PROC} runs in {elapsed:.1f} s")


# -- 2. a killed writer: interrupted after its lease, resumed elsewhere -----------------


def test_killed_writer_is_found_after_its_lease_and_resumed_elsewhere(env: Env) -> None:
    run_id = "killed-run"
    a = env.spawn("host-a", "writer", run_id=run_id, interval=0.02, flush_every=5)
    a.wait_for(lambda line: line.startswith("READY"))
    a.wait_for(lambda line: line.startswith("FLUSHED") and int(line.split()[1]) >= 15)
    a.wait_for(lambda line: line.startswith("ACK"))  # some acked, not yet flushed
    a.wait_for(lambda line: line.startswith("ACK"))
    a.kill()
    killed_at = utcnow()
    acked, flushed = a.seqs("ACK"), max(a.seqs("FLUSHED"))
    assert acked == list(range(1, len(acked) + 1))

    reader = env.reader()
    entry = _by_id(reader.list_runs(limit=None))[run_id]
    assert (entry.status, entry.owner_host, entry.epoch) == ("running", "host-a", 1)
    assert entry.lease_expires_at is not None
    assert entry.lease_expires_at > killed_at, "the lease was not renewed while A wrote"
    assert run_id not in {e.run_id for e in reader.interrupted()}, "listed while leased"

    found = _wait_interrupted(reader, run_id, timeout=LEASE + 7)
    assert found is not None, f"not interrupted 10 s after the kill; entry was {entry}"
    assert utcnow() > entry.lease_expires_at
    assert found.owner_host == "host-a"

    archived = reader.index(run_id).last_seq
    assert archived >= flushed  # every ACK that a FLUSHED covered is in the bucket
    b = env.open("host-b")
    run = b.resume(run_id)
    assert run.last_seq == archived
    more = _checkpoints(run, "host-b", 12)
    assert more == list(range(archived + 1, archived + 13)), "seqs must continue at once"
    run.complete({"resumed": True})

    fresh = env.reader()
    seqs = _assert_restored(fresh, run_id, [(archived, "host-a"), (archived + 12, "host-b")])
    assert {s for s in acked if s <= flushed} <= set(seqs)
    done = _assert_finished_cleanly(fresh, run_id, "host-b", 2)
    assert done.last_seq == archived + 12


# -- 3. a zombie writer is fenced -------------------------------------------------------


def test_zombie_writer_is_fenced(env: Env) -> None:
    run_id = "zombie-run"
    a = env.spawn("host-a", "writer", run_id=run_id, interval=0.05, flush_every=1)
    a.wait_for(lambda line: line.startswith("FLUSHED") and int(line.split()[1]) >= 5, 60)

    b = env.open("host-b")
    conflicts = 0
    for _ in range(50):  # A flushes every record: its index may move under a resume
        try:
            run = b.resume(run_id)
            break
        except ResumeConflictError:
            conflicts += 1
            time.sleep(0.02)
    else:
        pytest.fail("resume conflicted 50 times in a row")
    taken = run.last_seq
    assert a.proc.poll() is None, "A must still be alive at the takeover"
    _checkpoints(run, "host-b", 3)

    fenced = a.wait_for(lambda line: line.startswith("FENCED"), timeout=15)
    assert a.proc.wait(timeout=30) == 0, a.diagnostics()
    a.drain()
    assert "fenced" in a.stderr_path.read_text(), a.diagnostics()
    flushed = a.seqs("FLUSHED")
    assert max(flushed) <= taken, f"A flushed {max(flushed)} after the takeover at {taken}"
    _checkpoints(run, "host-b", 3)
    run.complete()

    reader = env.reader()
    # Up to the takeover: A's records; after it: only B's (none of A's later ACKs).
    seqs = _assert_restored(reader, run_id, [(taken, "host-a"), (taken + 6, "host-b")])
    assert set(flushed) <= set(seqs)
    _assert_finished_cleanly(reader, run_id, "host-b", 2)
    late = [s for s in a.seqs("ACK") if s > taken]
    print(f"takeover at seq {taken} after {conflicts} conflicts; A acked {late} after it; {fenced}")


# -- 4. two hosts resume at the same moment ---------------------------------------------


def _gate_index_read(archive: Archive, run_id: str, barrier: threading.Barrier) -> None:
    """Make ``archive``'s first read of the run index wait for the other host's, so both
    resumes read the same index version before either writes it back: the race is
    certain, not a matter of thread scheduling."""
    store = archive.store
    inner = store.get
    key = index_key(run_id)
    gated = [False]

    def get(k: str) -> GetResult:
        got = inner(k)
        if k == key and not gated[0]:
            gated[0] = True
            barrier.wait()
        return got

    store.get = get  # type: ignore[method-assign, assignment]


def test_two_hosts_resume_at_once_exactly_one_wins(env: Env) -> None:
    run_id = "contested-run"
    first = env.open("host-a")
    run = first.start_run(agent="contested", run_id=run_id)
    _checkpoints(run, "host-a", 7)
    run.flush()
    abandon(first)  # like a killed process: no final flush, lease no longer renewed
    reader = env.reader()
    assert _wait_interrupted(reader, run_id, timeout=LEASE + 7) is not None

    hosts = {"host-b": env.open("host-b"), "host-c": env.open("host-c")}
    read_barrier = threading.Barrier(len(hosts), timeout=30)
    start_barrier = threading.Barrier(len(hosts), timeout=30)
    for archive in hosts.values():
        _gate_index_read(archive, run_id, read_barrier)
    outcome: dict[str, Run | BaseException] = {}

    def resume(host: str) -> None:
        start_barrier.wait()
        try:
            outcome[host] = hosts[host].resume(run_id)
        except BaseException as exc:
            outcome[host] = exc

    threads = [threading.Thread(target=resume, args=(h,)) for h in hosts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    winners = {h: o for h, o in outcome.items() if isinstance(o, Run)}
    losers = {h: o for h, o in outcome.items() if not isinstance(o, Run)}
    assert len(winners) == 1, outcome
    assert len(losers) == 1, outcome
    (winner, won), (loser, lost) = next(iter(winners.items())), next(iter(losers.items()))
    assert isinstance(lost, ResumeConflictError), repr(lost)
    assert run_id in str(lost)
    assert hosts[loser].cache.run(run_id) is None, "the loser kept a copy of the run"

    assert won.last_seq == 7
    assert _checkpoints(won, winner, 4) == [8, 9, 10, 11]
    won.complete()
    with pytest.raises(RunStateError, match="completed"):
        hosts[loser].resume(run_id)  # too late now: the run is finished

    fresh = env.reader()
    _assert_restored(fresh, run_id, [(7, "host-a"), (11, winner)])
    _assert_finished_cleanly(fresh, run_id, winner, 2)


# -- 5. an idle zombie keeps renewing its lease -----------------------------------------


def test_idle_zombie_lease_renewal_does_not_resurrect_a_finished_run(env: Env) -> None:
    """A writer that is alive but idle (waiting on a slow tool call) keeps renewing its
    lease every lease_seconds/3. Once another host took the run over and finished it,
    those renewals must not put it back into ``manifest/active``, and the idle writer's
    next append must be refused."""
    run_id = "idle-zombie-run"
    a = env.spawn("host-a", "idle", run_id=run_id, records=3)
    a.wait_for(lambda line: line.startswith("FLUSHED"), timeout=60)

    b = env.open("host-b")
    run = b.resume(run_id)
    _checkpoints(run, "host-b", 2)
    run.complete()
    reader = env.reader()
    assert _active_runs(reader) == {}

    deadline = time.monotonic() + 2 * LEASE / 3 + 1  # two renewals of A at least
    while time.monotonic() < deadline:
        active = _active_runs(reader)
        assert run_id not in active, (
            "a lease renewal of the fenced, idle owner put the finished run back into "
            f"manifest/active: {active.get(run_id)}; list_runs(status='running') and, once "
            "that lease lapses, interrupted() list a completed run"
        )
        time.sleep(0.2)
    assert a.proc.poll() is None

    a.send("append")  # the slow tool call returns: A tries to record its result
    fenced = a.wait_for(lambda line: line.startswith(("FENCED", "FLUSHED")), timeout=15)
    assert fenced.startswith("FENCED"), f"A's append after the takeover was archived: {fenced}"
    assert a.proc.wait(timeout=30) == 0, a.diagnostics()
    assert reader.interrupted() == []
    assert reader.list_runs(status="running") == []
    _assert_restored(reader, run_id, [(3, "host-a"), (5, "host-b")])
    _assert_finished_cleanly(reader, run_id, "host-b", 2)
    print(f"idle zombie: {fenced}")


# -- 6. a lease renewal racing the run's own completion -------------------------------


def test_lease_renewal_racing_complete_does_not_resurrect_the_run(env: Env) -> None:
    """The flusher thread renews leases from a snapshot of the cache's running runs; if
    the run completes (and moves to ``manifest/done``) before that renewal's CAS write
    lands (a wide window when the shard is contended: up to 50 attempts with pauses),
    the renewal must not write the run back into ``manifest/active``, nor fence it.

    Deterministic version of a race test 1 can hit: the renewal is called here
    directly and the run completes between its snapshot and its write."""
    archive = env.open("host-a", lease_seconds=60)  # no background renewal meanwhile
    run = archive.start_run(agent="racer", run_id="renew-race-run")
    _checkpoints(run, "host-a", 2)
    run.flush()  # listed in manifest/active with a lease
    manifest = archive.engine.manifest
    inner = manifest.renew

    def renew(entries: Iterable[RunEntry]) -> set[str]:
        snapshot = list(entries)  # the renewal read the cache: the run was running...
        run.complete()  # ...and it completed before the renewal's write
        return inner(snapshot)

    manifest.renew = renew  # type: ignore[method-assign]
    archive.engine.renew_leases()
    reader = env.reader()
    active = _active_runs(reader)
    assert run.run_id not in active, (
        "the lease renewal put the completed run back into manifest/active: "
        f"{active.get(run.run_id)}; list_runs(status='running') lists it, and interrupted() "
        "will once that lease lapses"
    )
    row = archive.cache.run(run.run_id)
    assert row is not None
    assert not row.fenced, "a run that completed here was marked fenced"
    _assert_finished_cleanly(reader, run.run_id, "host-a", 1)
