"""Chaos histories (issue 12): several host processes on a few shared runs and threads,
against a real S3 server behind a fault proxy, SIGKILLed and restarted at random;
then a checker that reads the bucket from a fresh host.

Importable (``tests/trust/test_chaos.py``, ``tests/support/chaos_child.py``) and runnable::

    PYTHONPATH=src python tests/support/chaos.py --histories 200 --seed 1  # own SeaweedFS
    PYTHONPATH=src python tests/support/chaos.py --seed 1234 --keep  # one history, keep files

A history is reproduced (as far as process timing allows) from its seed: the seed
picks the number of hosts, their operations, the fault rate and kinds, the fault
proxy's choices and the kill schedule.

**Journals.** Each host appends one line per event to its own file, with one
``os.write`` right after the call returns (so a SIGKILL never leaves a torn line
that matters):

* ``acked RUN SEQ SHA256``: ``run.checkpoint``/``run.event`` returned; the hash is
  of the record's content (:func:`content_sha`);
* ``acked_lg THREAD CHECKPOINT_ID RUN SEQ``: ``ArchiveSaver.put`` returned;
* ``error RUN OP TYPE expected|unexpected fence|-``: a call raised (``RUN`` is ``-``
  or ``*`` when not about one run; ``fence`` marks FencedError / IndexConflictError
  / ResumeConflictError, the errors that tell a caller its records may be stranded);
* informational lines (``op``, ``started``, ``resumed``, ``read_takeover``, ...).

**The invariant**, per acknowledged record: it is in the bucket with the same
content (a fresh host's ``restore``; for a saver checkpoint, its id is in the
thread's run), or that host's caller got a ``fence`` error for that run *and*
``runarchive status`` on that host lists it as stranded (the run is ``fenced`` and
``archived_seq < seq <= last_seq``; the checker also reads the record's line from
that host's cache and compares its content). Anything else is *lost*. Besides:
restore gives each seq once, from 1 without a gap, the index's segment ranges are
contiguous, ``verify`` (all runs) reports no error, and no host raised an exception
of an unexpected type or crashed.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import multiprocessing
import os
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import runarchive
from runarchive import Archive
from runarchive.cache.status import RunBacklog, read_status
from runarchive.config import parse_url
from runarchive.errors import (
    CacheError,
    CorruptObjectError,
    FencedError,
    IndexConflictError,
    InvalidInputError,
    ResumeConflictError,
    RunNotFoundError,
    RunStateError,
    StoreError,
)
from runarchive.format.model import Checkpoint, Event
from runarchive.store import S3Settings, S3Store

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:  # run as a script (make test-chaos): support.* is there
    sys.path.insert(0, str(TESTS))

from support.faultproxy import TRANSIENT, FaultProxy, what  # noqa: E402

SRC = Path(runarchive.__file__).resolve().parent.parent  # the runarchive this process runs

RUNS = ("r0", "r1", "r2")  # plain runs the hosts share
THREADS = ("t0", "t1")  # LangGraph threads the hosts share (runs lg-t0, lg-t1)
AGENT = "chaos"
NASTY = ("412", "unstored")  # injected on PUTs of segments, indexes, manifest shards only


def lg_run(thread: str) -> str:
    """The run id ArchiveSaver gives a thread (default prefix ``lg-``)."""
    return f"lg-{thread}"


# -- record content ----------------------------------------------------------------------


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def content_sha(rtype: str, name: str, payload: Any) -> str:
    """The hash journaled for an acknowledged record: type, name (checkpoint name or
    event kind) and payload (state or data). Seq and timestamp are not content."""
    return hashlib.sha256(canonical([rtype, name, payload])).hexdigest()


def record_sha(rec: Checkpoint | Event) -> str:
    if isinstance(rec, Checkpoint):
        return content_sha("checkpoint", rec.name, rec.state)
    return content_sha("event", rec.kind, rec.data)


def line_sha(line: bytes | str) -> str:
    """:func:`content_sha` of a record line (segment / cache format)."""
    doc = json.loads(line)
    if doc["type"] == "checkpoint":
        return content_sha("checkpoint", doc["name"], doc["state"])
    return content_sha("event", doc["kind"], doc["data"])


# -- the store ---------------------------------------------------------------------------

_sessions: dict[int, Any] = {}  # pid -> the boto3 Session of this process


def s3_store(url: str, settings: dict[str, Any]) -> S3Store:
    """The S3Store ``Archive.open(url, **settings)`` would make, with its client made the
    same way (same botocore Config) but from one boto3 Session per process.

    Each Archive.open otherwise makes a new Session, which parses botocore's S3 model
    again: ~0.5 s of CPU per open, and a history opens an archive a dozen times. A
    host process only ever creates clients from its main thread."""
    import boto3  # noqa: PLC0415
    import botocore.config  # noqa: PLC0415

    scheme, bucket, prefix = parse_url(url)
    assert scheme == "s3", url
    s = S3Settings(
        bucket=bucket,
        prefix=prefix,
        endpoint_url=settings.get("endpoint_url"),
        region=settings.get("region"),
        addressing_style=settings.get("addressing_style", "auto"),
        max_attempts=settings.get("max_attempts", 5),
        connect_timeout=settings.get("connect_timeout", 5.0),
        read_timeout=settings.get("read_timeout", 30.0),
    )
    config = botocore.config.Config(  # as S3Store._make_client
        retries={"mode": s.retry_mode, "max_attempts": s.max_attempts},
        s3={"addressing_style": s.addressing_style},
        connect_timeout=s.connect_timeout,
        read_timeout=s.read_timeout,
        max_pool_connections=s.max_pool_connections,
        request_checksum_calculation=s.request_checksum_calculation,
        response_checksum_validation=s.response_checksum_validation,
    )
    session = _sessions.get(os.getpid())
    if session is None:
        session = _sessions[os.getpid()] = boto3.session.Session()
    # Credentials as a new Session would find them now (the shared one caches its first).
    keys = {
        "aws_access_key_id": os.environ.get("AWS_ACCESS_KEY_ID"),
        "aws_secret_access_key": os.environ.get("AWS_SECRET_ACCESS_KEY"),
    }
    client = session.client(
        "s3", endpoint_url=s.endpoint_url, region_name=s.region, config=config, **keys
    )
    return S3Store(s, client=client)


def warm_boto3() -> None:
    """Parse botocore's S3 model once (the forkserver does, before it forks hosts)."""
    s3_store("s3://warm-up/x", {"region": "us-east-1"}).close()


# -- errors ------------------------------------------------------------------------------

FENCE = (FencedError, IndexConflictError, ResumeConflictError)
# Reads of a run or thread nobody has flushed yet; a handle on a run this host's cache
# dropped (a stale copy of a run another host owns, with nothing of its own, is discarded).
NOT_FOUND_OK = {"restore", "resume", "records", "get_tuple", "list", "handle"}


def classify(op: str, exc: BaseException) -> tuple[bool, bool]:
    """(expected, fence) for an exception a host's call raised.

    Expected: FencedError, ResumeConflictError, IndexConflictError, RunStateError,
    StoreError subclasses; RunExistsError (any op; today start_run raises a plain
    InvalidInputError "already exists", accepted from start and put); RunNotFoundError
    from reads and resume; CacheError "fenced copy" (resume of a run this host was
    fenced from). Anything else is a failure of the history.
    """
    fence = isinstance(exc, FENCE)
    names = {c.__name__ for c in type(exc).__mro__}
    if fence or isinstance(exc, (RunStateError, StoreError)) or "RunExistsError" in names:
        return True, fence
    if isinstance(exc, RunNotFoundError):
        return op in NOT_FOUND_OK, False
    if isinstance(exc, InvalidInputError) and "already exists" in str(exc):
        return op in {"start", "lg_put"}, False
    if isinstance(exc, CacheError) and "fenced copy" in str(exc):
        return True, False
    if isinstance(exc, CorruptObjectError) and "missing" in str(exc):
        # A segment PUT answered 200 and never stored ("unstored") leaves an index naming
        # a missing object until its writer's read-back re-uploads it: reads (and
        # resume, which reads before it takes) fail meanwhile. The final check proves
        # the bucket whole afterwards.
        return True, False
    return False, False


# -- journals ----------------------------------------------------------------------------


class Journal:
    """A host's journal: one line per ``write``, one ``os.write`` each, append mode."""

    def __init__(self, path: str | Path) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write(self, *tokens: object) -> None:
        os.write(self.fd, (" ".join(str(t) for t in tokens) + "\n").encode())

    def close(self) -> None:
        os.close(self.fd)


@dataclass(frozen=True)
class Ack:
    host: int
    run: str
    seq: int
    sha: str


@dataclass(frozen=True)
class LgAck:
    host: int
    thread: str
    cid: str
    run: str
    seq: int


@dataclass(frozen=True)
class ErrorLine:
    host: int
    run: str
    op: str
    type: str
    expected: bool
    fence: bool


@dataclass
class HostJournal:
    host: int
    acks: list[Ack] = field(default_factory=list)
    lg_acks: list[LgAck] = field(default_factory=list)
    errors: list[ErrorLine] = field(default_factory=list)
    info: Counter[str] = field(default_factory=Counter)

    @property
    def fence_runs(self) -> set[str]:
        """Runs for which this host's caller got a fence/conflict error."""
        return {e.run for e in self.errors if e.fence}


def parse_journal(host: int, path: Path) -> HostJournal:
    out = HostJournal(host)
    if not path.exists():
        return out
    for raw in path.read_text().splitlines():
        parts = raw.split()
        if not parts:
            continue
        kind = parts[0]
        if kind == "acked" and len(parts) == 4:
            out.acks.append(Ack(host, parts[1], int(parts[2]), parts[3]))
        elif kind == "acked_lg" and len(parts) == 5:
            out.lg_acks.append(LgAck(host, parts[1], parts[2], parts[3], int(parts[4])))
        elif kind == "error" and len(parts) == 6:
            out.errors.append(
                ErrorLine(
                    host, parts[1], parts[2], parts[3], parts[4] == "expected", parts[5] == "fence"
                )
            )
        elif kind in ("acked", "acked_lg", "error"):
            out.info["torn line"] += 1  # only the last line of a killed host may be torn
        else:
            out.info[kind] += 1
    return out


# -- the checker -------------------------------------------------------------------------


@dataclass
class HostFiles:
    """Where one host keeps its cache, journal and log (across its incarnations)."""

    index: int
    cache_dir: Path
    journal: Path
    log: Path


@dataclass
class Outcome:
    """What one history did and what the checker found."""

    seed: int | None = None
    hosts: int = 0
    kills: int = 0
    acked: int = 0
    in_bucket: int = 0
    stranded: int = 0
    lost: int = 0
    takeovers_by_read: int = 0
    errors: Counter[str] = field(default_factory=Counter)  # expected ones, by type
    unexpected: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    faults: Counter[str] = field(default_factory=Counter)
    requests: int = 0  # through the proxy
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)  # seconds per phase
    workdir: Path | None = None

    @property
    def ok(self) -> bool:
        return not self.violations

    def kinds(self) -> list[str]:
        """The kinds of violation found (the text before the first ':')."""
        return sorted({v.split(":", 1)[0] for v in self.violations})

    def summary(self) -> str:
        faults = ",".join(f"{k}={n}" for k, n in sorted(self.faults.items())) or "none"
        return (
            f"seed={self.seed} hosts={self.hosts} kills={self.kills} acked={self.acked} "
            f"in_bucket={self.in_bucket} stranded={self.stranded} lost={self.lost} "
            f"read_takeovers={self.takeovers_by_read} requests={self.requests} "
            f"faults[{faults}] {self.seconds:.1f}s "
            + "("
            + " ".join(f"{k} {v:.1f}" for k, v in self.phases.items())
            + ")"
        )

    def report(self, limit: int = 25) -> str:
        lines = [self.summary()]
        if self.workdir is not None:
            lines.append(f"files: {self.workdir}")
        lines += [f"  {v}" for v in self.violations[:limit]]
        if len(self.violations) > limit:
            lines.append(f"  ... and {len(self.violations) - limit} more")
        return "\n".join(lines)


def _cache_line(cache_dir: Path, run: str, seq: int) -> bytes | None:
    """The record line a host's cache holds for (run, seq), read-only."""
    path = cache_dir / "cache.sqlite3"
    if not path.is_file():
        return None
    conn = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, timeout=10.0)
    try:
        row = conn.execute(
            "SELECT line FROM records WHERE run_id = ? AND seq = ?", (run, seq)
        ).fetchone()
    finally:
        conn.close()
    return bytes(row[0]) if row else None


def _statuses(host: HostFiles) -> dict[str, RunBacklog]:
    """``runarchive status --json`` of the host's cache, by run (what Archive.status()
    and the CLI read: :func:`runarchive.cache.status.read_status`)."""
    try:
        return {r.run_id: r for r in read_status(host.cache_dir).runs}
    except CacheError:
        return {}  # the host never opened its cache


def check_history(
    url: str,
    settings: dict[str, Any],
    hosts: list[HostFiles],
    scratch: Path,
    *,
    outcome: Outcome | None = None,
) -> Outcome:
    """Check the invariant (module docstring) for the hosts' journals against the bucket
    at ``url``, read by a fresh Archive on a new cache dir under ``scratch``.
    ``settings`` reach the bucket directly (no fault proxy)."""
    out = outcome or Outcome()
    journals = [parse_journal(h.index, h.journal) for h in hosts]
    statuses = {h.index: _statuses(h) for h in hosts}
    files = {h.index: h for h in hosts}
    for j in journals:
        out.takeovers_by_read += j.info["read_takeover"]
        for e in j.errors:
            if e.expected:
                out.errors[e.type] += 1
            else:
                text = f"host{j.host} {e.op} {e.run}: {e.type}"
                out.unexpected.append(text)
                out.violations.append(f"unexpected-error: {text}")
    runs = set(RUNS) | {lg_run(t) for t in THREADS}
    runs |= {a.run for j in journals for a in j.acks} | {a.run for j in journals for a in j.lg_acks}
    bucket: dict[str, dict[int, Checkpoint | Event] | None] = {}
    unreadable: set[str] = set()  # restore raised: a segment is missing or corrupt
    cache_dir = scratch / "checker-cache"
    shutil.rmtree(cache_dir, ignore_errors=True)
    store = s3_store(url, settings) if url.startswith("s3://") else None
    with Archive.open(url, cache_dir=cache_dir, store=store, **settings) as fresh:
        for run in sorted(runs):
            try:
                restored = fresh.restore(run, progress=False)
            except RunNotFoundError:
                bucket[run] = None
                continue
            except CorruptObjectError as exc:
                out.violations.append(f"restore-fails: {run}: {exc.key}: {exc.detail}")
                bucket[run] = None
                unreadable.add(run)
                continue
            seqs = [r.seq for r in restored.records]
            dup = sorted(s for s, n in Counter(seqs).items() if n > 1)
            if dup:
                out.violations.append(f"duplicate-seq: {run}: seqs {dup[:10]} restored twice")
            if sorted(set(seqs)) != list(range(1, len(set(seqs)) + 1)):
                out.violations.append(f"seq-gap: {run}: restored seqs are not 1..n: {seqs[:40]}")
            expected_first = 1
            for ref in restored.index.segments:
                if ref.first_seq != expected_first:
                    out.violations.append(
                        f"segment-ranges: {run}: {ref.key} starts at {ref.first_seq}, "
                        f"expected {expected_first}"
                    )
                expected_first = ref.last_seq + 1
            bucket[run] = {r.seq: r for r in restored.records}
        report = fresh.verify(progress=False)  # `runarchive verify --all`
        for p in report.problems:
            if p.severity == "error":
                out.violations.append(f"verify: {p}")

    def stranded(host: int, run: str, seq: int, journal: HostJournal) -> tuple[str, str] | None:
        """None if (run, seq) is stranded on ``host`` per the invariant, else (code, why)."""
        told = sorted({e.type for e in journal.errors if e.run == run and e.fence})
        st = statuses[host].get(run)
        seen = (
            "not in the host's status"
            if st is None
            else f"host status fenced={st.fenced} archived_seq={st.archived_seq} "
            f"last_seq={st.last_seq}"
        )
        if not told:
            others = sorted({e.type for e in journal.errors if e.run == run})
            return (
                "silent",
                f"no fence/conflict error raised to the host (others: {others}); {seen}",
            )
        if st is None or not st.fenced:
            return "told-not-fenced", f"the host got {told} but its status is not fenced; {seen}"
        if not st.archived_seq < seq <= st.last_seq:
            return "fenced-out-of-range", f"the host got {told}; {seen}"
        return None

    def lose(code: str, where: str, text: str) -> None:
        out.lost += 1
        out.violations.append(f"lost/{code}/{where}: {text}")

    for j in journals:
        for ack in j.acks:
            out.acked += 1
            held = bucket.get(ack.run)
            rec = held.get(ack.seq) if held else None
            if rec is not None and record_sha(rec) == ack.sha:
                out.in_bucket += 1
                continue
            where = (
                "unreadable-run"
                if ack.run in unreadable
                else "no-run"
                if held is None
                else "no-seq"
                if rec is None
                else "other-content"
            )
            verdict = stranded(j.host, ack.run, ack.seq, j)
            if verdict is None:
                line = _cache_line(files[j.host].cache_dir, ack.run, ack.seq)
                if line is not None and line_sha(line) == ack.sha:
                    out.stranded += 1
                    continue
                verdict = (
                    "cache-differs",
                    "stranded per status; the host's cache holds other content",
                )
            lose(verdict[0], where, f"host{j.host} {ack.run} seq {ack.seq}: {verdict[1]}")
        for lg in j.lg_acks:
            out.acked += 1
            held = bucket.get(lg.run)
            if any(
                isinstance(r, Checkpoint) and r.state.get("checkpoint_id") == lg.cid
                for r in (held or {}).values()
            ):
                out.in_bucket += 1
                continue
            where = (
                "unreadable-run"
                if lg.run in unreadable
                else "no-run"
                if held is None
                else "no-checkpoint"
            )
            verdict = stranded(j.host, lg.run, lg.seq, j)
            if verdict is None:
                line = _cache_line(files[j.host].cache_dir, lg.run, lg.seq)
                if line is not None and json.loads(line)["state"].get("checkpoint_id") == lg.cid:
                    out.stranded += 1
                    continue
                verdict = (
                    "cache-differs",
                    "stranded per status; the host's cache holds another one",
                )
            lose(
                verdict[0],
                where,
                f"host{j.host} thread {lg.thread} checkpoint {lg.cid} (seq {lg.seq} of {lg.run}): "
                f"{verdict[1]}",
            )
    return out


# -- the fault proxy ---------------------------------------------------------------------


class ChaosProxy(FaultProxy):
    """The fault proxy, reseedable per history, plus a second, independent rate of
    ``412`` and ``unstored`` faults on PUTs of segments, run indexes and manifest shards
    only (never on the open-time probe, never as the answer to a GET). A SIGKILLed
    host's reset connections are not logged."""

    def __init__(self, upstream: str, **kwargs: Any) -> None:
        super().__init__(upstream, **kwargs)
        self._server.handle_error = lambda request, address: None  # type: ignore[method-assign]
        self.nasty_rate = 0.0

    def reseed(self, seed: int, nasty_rate: float = 0.0) -> None:
        with self._lock:
            self._rng.seed(seed)
            self.counts.clear()
            self.hits.clear()
            self.nasty_rate = nasty_rate

    def choose(self, method: str, path: str) -> str | None:
        if method == "PUT" and what(path) in ("segment", "index", "manifest"):
            with self._lock:
                if self.nasty_rate and self._rng.random() < self.nasty_rate:
                    kind = self._rng.choice(NASTY)
                    self.requests += 1
                    self.counts[kind] += 1
                    self.hits[(kind, f"{method} {what(path)}")] += 1
                    return kind
        return super().choose(method, path)


# -- running a history -------------------------------------------------------------------


@dataclass
class ChaosEnv:
    """What histories share: the S3 server, the proxy, a forkserver, a work directory."""

    endpoint_url: str  # the server, direct
    access_key: str
    secret_key: str
    region: str
    proxy: ChaosProxy
    root: Path
    ctx: Any  # multiprocessing context
    make_bucket: Any  # () -> bucket name
    keep: bool = False  # keep each history's files even when it passes


def forkserver_context() -> Any:
    """A forkserver that has imported the host code (runarchive, boto3, LangGraph): a
    host starts in milliseconds instead of ~2 s of imports."""
    for path in (str(TESTS), str(SRC)):
        if path not in sys.path:
            sys.path.insert(0, path)
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["support.chaos_child"])
    from support import chaos_child  # noqa: PLC0415 - LangGraph: only where hosts are started

    # The forkserver is a new interpreter: it finds runarchive and chaos_child through
    # PYTHONPATH (3.11 does not hand it the parent's sys.path before the preload).
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(SRC), *([saved] if saved else [])])
    try:
        warm = ctx.Process(target=chaos_child.noop)  # starts the forkserver (~2 s of imports)
        warm.start()
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved
    warm.join(60)
    return ctx


def host_settings(env: ChaosEnv, host: int) -> dict[str, Any]:
    """A host's archive settings (JSON): through the proxy, short timeouts, tight flushes."""
    return {
        "endpoint_url": env.proxy.endpoint_url,
        "region": env.region,
        "addressing_style": "path",
        "read_timeout": 0.5,
        "connect_timeout": 0.5,
        "max_attempts": 3,
        "flush_records": 8,
        "flush_age": 0.2,
        # Small levels: live compaction merges, sweeps and rewrites pages within the
        # few dozen flushes a history makes, under the kills and the proxy's faults.
        "compaction_fanout": 3,
        "lease_seconds": 3,
        "restore_workers": 2,
        "host_id": f"host{host}",
    }


def direct_settings(env: ChaosEnv) -> dict[str, Any]:
    return {"endpoint_url": env.endpoint_url, "region": env.region, "addressing_style": "path"}


@contextlib.contextmanager
def credentials(env: ChaosEnv) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ["AWS_ACCESS_KEY_ID"] = env.access_key
    os.environ["AWS_SECRET_ACCESS_KEY"] = env.secret_key
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class _Host:
    def __init__(self, env: ChaosEnv, files: HostFiles, url: str, seed_rng: random.Random) -> None:
        self.env, self.files, self.url, self.rng = env, files, url, seed_rng
        self.incarnation = 0
        self.proc: Any = None
        self.dir = files.journal.parent

    def marker(self, what: str) -> Path:
        return self.dir / f"host{self.files.index}.{self.incarnation}.{what}"

    @property
    def close_marker(self) -> Path:
        return self.dir / f"host{self.files.index}.close"

    def start(self, ops: int) -> None:
        self.incarnation += 1
        cfg = {
            "host": self.files.index,
            "incarnation": self.incarnation,
            "seed": self.rng.getrandbits(32),
            "ops": ops,
            "url": self.url,
            "settings": host_settings(self.env, self.files.index),
            "env": {
                "AWS_ACCESS_KEY_ID": self.env.access_key,
                "AWS_SECRET_ACCESS_KEY": self.env.secret_key,
                "PYTHONPATH": os.pathsep.join([str(SRC), str(TESTS)]),
            },
            "cache_dir": str(self.files.cache_dir),
            "journal": str(self.files.journal),
            "log": str(self.files.log),
            "done": str(self.marker("done")),
            "close": str(self.close_marker),
            "finished": str(self.marker("finished")),
            "runs": list(RUNS),
            "threads": list(THREADS),
            "pause": 0.01,
        }
        (self.dir / f"host{self.files.index}.{self.incarnation}.json").write_text(json.dumps(cfg))
        from support import chaos_child  # noqa: PLC0415 - the forkserver preloads it; the parent only names it

        self.proc = self.env.ctx.Process(
            target=chaos_child.host_main, args=(cfg,), name=f"chaos-host{self.files.index}"
        )
        self.proc.start()

    def kill(self) -> None:
        if self.proc is not None and self.proc.exitcode is None:
            self.proc.kill()  # SIGKILL, by pid, this process only
            self.proc.join(10)

    @property
    def done(self) -> bool:
        return self.marker("done").exists() or (
            self.proc is not None and self.proc.exitcode is not None
        )


def run_history(
    env: ChaosEnv,
    seed: int,
    *,
    hosts: int | None = None,
    nasty: bool | None = None,
    kills: int | None = None,
) -> Outcome:
    """Run one history from ``seed`` and check it. ``hosts``, ``nasty`` (412/unstored
    faults) and ``kills`` override the seed's choice."""
    began = time.monotonic()
    rng = random.Random(seed)
    n_hosts = hosts if hosts is not None else rng.randint(2, 4)
    rate = rng.choice((0.02, 0.03, 0.05))
    with_nasty = nasty if nasty is not None else rng.random() < 0.5
    n_kills = kills if kills is not None else rng.choice((0, 1, 1, 2))
    workdir = env.root / f"h{seed}"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    out = Outcome(seed=seed, hosts=n_hosts, workdir=workdir)
    bucket = env.make_bucket()
    url = f"s3://{bucket}/agents"
    files = [
        HostFiles(i, workdir / f"cache{i}", workdir / f"host{i}.journal", workdir / f"host{i}.log")
        for i in range(n_hosts)
    ]
    env.proxy.reseed(seed, nasty_rate=0.04 if with_nasty else 0.0)
    requests_before = env.proxy.requests
    env.proxy.set_rate(rate, TRANSIENT)
    procs = [_Host(env, f, url, random.Random(rng.getrandbits(32))) for f in files]
    kill_plan = sorted((rng.uniform(0.3, 2.5), rng.randrange(n_hosts)) for _ in range(n_kills))
    try:
        with credentials(env):
            for h in procs:
                h.start(rng.randint(20, 36))
            t0 = time.monotonic()
            deadline = t0 + 90
            while time.monotonic() < deadline:
                if kill_plan and time.monotonic() - t0 >= kill_plan[0][0]:
                    _, victim = kill_plan.pop(0)
                    h = procs[victim]
                    if h.proc.exitcode is None:
                        h.kill()
                        out.kills += 1
                        h.start(rng.randint(8, 20))
                if not kill_plan and all(h.done for h in procs):
                    break
                time.sleep(0.01)
            else:
                out.violations.append("hung: hosts still busy after 90 s")
            out.phases["ops"] = time.monotonic() - t0
            out.faults.update(env.proxy.counts)
            out.requests = env.proxy.requests - requests_before
            env.proxy.set_rate(0.0)
            env.proxy.nasty_rate = 0.0
            for h in procs:
                h.close_marker.touch()
            for h in procs:
                h.proc.join(60)
                if h.proc.exitcode is None:
                    out.violations.append(f"hung: host{h.files.index} did not close in 60 s")
                    h.kill()
                elif h.proc.exitcode != 0 or not h.marker("finished").exists():
                    tail = "\n    ".join(h.files.log.read_text().splitlines()[-15:])
                    code = h.proc.exitcode
                    out.violations.append(
                        f"host-crashed: host{h.files.index} exit {code}; log tail:\n    {tail}"
                    )
            t1 = time.monotonic()
            out.phases["close"] = t1 - t0 - out.phases["ops"]
            check_history(url, direct_settings(env), files, workdir, outcome=out)
            out.phases["check"] = time.monotonic() - t1
    finally:
        env.proxy.set_rate(0.0)
        env.proxy.nasty_rate = 0.0
        for h in procs:
            h.kill()
    out.seconds = time.monotonic() - began
    if out.ok and not env.keep:
        shutil.rmtree(workdir, ignore_errors=True)
        out.workdir = None
    return out


# -- totals ------------------------------------------------------------------------------


@dataclass
class Totals:
    histories: int = 0
    failed: int = 0
    acked: int = 0
    in_bucket: int = 0
    stranded: int = 0
    lost: int = 0
    kills: int = 0
    takeovers_by_read: int = 0
    seconds: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    violations: Counter[str] = field(default_factory=Counter)  # kind -> histories
    failing_seeds: dict[str, list[int]] = field(default_factory=dict)  # kind -> seeds

    def add(self, o: Outcome) -> None:
        self.histories += 1
        self.failed += not o.ok
        self.acked += o.acked
        self.in_bucket += o.in_bucket
        self.stranded += o.stranded
        self.lost += o.lost
        self.kills += o.kills
        self.takeovers_by_read += o.takeovers_by_read
        self.seconds += o.seconds
        self.errors.update(o.errors)
        self.faults.update(o.faults)
        for kind in o.kinds():
            self.violations[kind] += 1
            self.failing_seeds.setdefault(kind, []).append(o.seed or 0)

    def table(self) -> str:
        rows = [
            ("histories run", self.histories),
            ("histories failing", self.failed),
            ("records acked", self.acked),
            ("  in the bucket", self.in_bucket),
            ("  reported stranded", self.stranded),
            ("  lost", self.lost),
            ("SIGKILLs", self.kills),
            ("threads taken over by a read", self.takeovers_by_read),
            ("seconds", f"{self.seconds:.1f}"),
        ]
        width = max(len(k) for k, _ in rows)
        lines = ["chaos histories:"] + [f"  {k:<{width}}  {v}" for k, v in rows]
        if self.errors:
            lines.append(
                "  expected errors: " + ", ".join(f"{k} {n}" for k, n in self.errors.most_common())
            )
        if self.faults:
            lines.append(
                "  faults injected: "
                + ", ".join(f"{k} {n}" for k, n in sorted(self.faults.items()))
            )
        for kind, n in self.violations.most_common():
            seeds = self.failing_seeds[kind]
            shown = " ".join(map(str, seeds[:12])) + (" ..." if len(seeds) > 12 else "")
            lines.append(f"  violation {kind}: {n} histories, seeds {shown}")
        return "\n".join(lines)


# -- command line ------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--histories", type=int, default=int(os.environ.get("CHAOS_HISTORIES", "200"))
    )
    parser.add_argument("--seed", type=int, default=int(os.environ.get("CHAOS_SEED", "1")))
    parser.add_argument(
        "--keep",
        action="store_true",
        default=bool(os.environ.get("CHAOS_KEEP")),
        help="keep every history's files (CHAOS_KEEP=1)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="print every history")
    args = parser.parse_args(argv)
    from support.servers import SeaweedFS  # noqa: PLC0415 - boto3; not needed by the children

    ctx = forkserver_context()
    root = Path(tempfile.mkdtemp(prefix="chaos-"))
    totals = Totals()
    with (
        SeaweedFS(root / "seaweed") as server,
        ChaosProxy(server.endpoint_url, hold_seconds=0.8) as proxy,
    ):
        env = ChaosEnv(
            server.endpoint_url,
            server.access_key,
            server.secret_key,
            server.region,
            proxy,
            root / "histories",
            ctx,
            lambda: server.make_bucket("chaos"),
            keep=args.keep,
        )
        for i in range(args.histories):
            outcome = run_history(env, args.seed + i)
            totals.add(outcome)
            if args.verbose or not outcome.ok:
                print(outcome.report(limit=8), flush=True)
    print(totals.table())
    if totals.failed == 0 and not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    else:
        print(f"files of failing histories: {root / 'histories'}")
    return 1 if totals.failed else 0


if __name__ == "__main__":
    sys.path[:0] = [str(TESTS), str(SRC)]
    raise SystemExit(main())
