"""One host of a chaos history (tests/support/chaos.py): random operations on shared runs and
LangGraph threads, journaled; then, when the parent says so, a final flush and close.

Started by the parent through a forkserver that preloaded this module
(``host_main(cfg)``), or by hand to replay one host::

    PYTHONPATH=src:tests python tests/support/chaos_child.py HISTORY_DIR/host0.1.json

``cfg`` (JSON): host, incarnation, seed, ops, url, settings, env (credentials),
cache_dir, journal, log, done / close / finished (marker files), runs, threads, pause.

Operations (weights in ``OPS``): start a run with an id from the pool; append 1-4
checkpoints/events to a run this host's cache holds; put LangGraph checkpoints through
``ArchiveSaver``; read (``archive.restore``, ``run.records``, ``saver.get_tuple``,
``saver.list``); resume a run (``archive.resume``); flush (one run or all); close and
reopen the archive; idle. Every call's outcome is journaled right after it returns
(format in tests/support/chaos.py). After the last operation the host touches ``done`` and
waits for ``close``; then it flushes each run of its cache (``run.flush()``, so a run
fenced in the background raises its FencedError to this caller), closes the archive,
and touches ``finished``.
"""

from __future__ import annotations

import json
import os
import random
import re
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import create_checkpoint, empty_checkpoint

from runarchive import Archive, Policy
from runarchive.errors import FencedError, RunNotFoundError
from runarchive.langgraph import ArchiveSaver
from support.chaos import AGENT, Journal, classify, content_sha, s3_store, warm_boto3

OPS: dict[str, int] = {
    "append": 34,
    "lg_put": 18,
    "read": 14,
    "start": 9,
    "flush": 8,
    "resume": 7,
    "idle": 6,
    "reopen": 2,
}


class Host:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.id = cfg["host"]
        self.inc = cfg["incarnation"]
        self.rng = random.Random(cfg["seed"])
        self.journal = Journal(cfg["journal"])
        self.runs: list[str] = list(cfg["runs"])
        self.threads: list[str] = list(cfg["threads"])
        self.archive: Archive | None = None
        self.saver: ArchiveSaver | None = None
        self.known: set[str] = set()  # plain runs of the pool this host's cache holds
        self.fenced: set[str] = set()
        self.parent_cid: dict[str, str] = {}
        self.step = 0

    # -- journal -----------------------------------------------------------------------

    def say(self, *tokens: object) -> None:
        self.journal.write(*tokens)

    def call(self, run: str, op: str, fn: Callable[[], Any]) -> tuple[bool, Any]:
        """Run ``fn``; journal an error line if it raises. (ok, result)."""
        try:
            return True, fn()
        except Exception as exc:
            expected, fence = classify(op, exc)
            self.say(
                "error",
                run,
                op,
                type(exc).__name__,
                "expected" if expected else "unexpected",
                "fence" if fence else "-",
            )
            if not expected:
                print(f"host{self.id}.{self.inc} {op} {run}: unexpected", file=sys.stderr)
                traceback.print_exc()
            if isinstance(exc, FencedError) and run in self.runs:
                self.fenced.add(run)
            if isinstance(exc, RunNotFoundError) and op in ("handle", "records"):
                self.known.discard(run)  # no longer in this host's cache
            return False, exc

    # -- archive life cycle ------------------------------------------------------------

    def open(self) -> None:
        cfg = self.cfg
        s3 = cfg["url"].startswith("s3://")
        for _ in range(50):
            ok, got = self.call(
                "-",
                "open",
                lambda: Archive.open(
                    cfg["url"],
                    cache_dir=cfg["cache_dir"],
                    store=s3_store(cfg["url"], cfg["settings"]) if s3 else None,
                    policy=Policy(keep_all=True),
                    **cfg["settings"],
                ),
            )
            if ok:
                self.archive = got
                break
            if not classify("open", got)[0]:
                raise got
            time.sleep(0.1)
        else:
            raise RuntimeError("could not open the archive 50 times")
        self.saver = ArchiveSaver(self.archive)
        rows = self.archive.status().runs
        self.known = {r.run_id for r in rows if r.run_id in self.runs}
        self.fenced = {r.run_id for r in rows if r.run_id in self.runs and r.fenced}
        self.say("opened", self.inc, " ".join(sorted(self.known)) or "-")

    @property
    def a(self) -> Archive:
        assert self.archive is not None
        return self.archive

    @property
    def s(self) -> ArchiveSaver:
        assert self.saver is not None
        return self.saver

    # -- operations --------------------------------------------------------------------

    def op_start(self) -> None:
        fresh = [r for r in self.runs if r not in self.known]
        run = self.rng.choice(fresh or self.runs)
        ok, _ = self.call(run, "start", lambda: self.a.start_run(AGENT, run_id=run))
        if ok:
            self.known.add(run)
            self.say("started", run)

    def op_append(self) -> None:
        live = sorted(self.known - self.fenced)
        if not live or (self.fenced and self.rng.random() < 0.05):
            live = sorted(self.known)  # now and then, a fenced run: FencedError
        if not live:
            self.op_start()
            return
        run_id = self.rng.choice(live)
        ok, run = self.call(run_id, "handle", lambda: self.a.run(run_id))
        if not ok:
            return
        for _ in range(self.rng.randint(1, 4)):
            self.step += 1
            pad = "x" * self.rng.randint(0, 300)
            if self.rng.random() < 0.65:
                name = self.rng.choice(("plan", "act"))
                state = {"host": self.id, "inc": self.inc, "step": self.step, "pad": pad}
                ok, rec = self.call(run_id, "append", lambda n=name, s=state: run.checkpoint(n, s))
                sha = content_sha("checkpoint", name, state)
            else:
                kind = self.rng.choice(("tool", "note"))
                data = {"host": self.id, "inc": self.inc, "step": self.step, "n": [1, pad]}
                ok, rec = self.call(run_id, "append", lambda k=kind, d=data: run.event(k, d))
                sha = content_sha("event", kind, data)
            if not ok:
                return
            self.say("acked", run_id, rec.seq, sha)

    def op_lg_put(self) -> None:
        thread = self.rng.choice(self.threads)
        run_id = self.s.run_id_for(thread)
        self.step += 1
        base = empty_checkpoint()
        base["channel_values"] = {"host": self.id, "step": self.step}
        base["channel_versions"] = {"step": self.step}
        cp = create_checkpoint(base, None, self.step)
        conf: dict[str, Any] = {"thread_id": thread, "checkpoint_ns": ""}
        if thread in self.parent_cid:
            conf["checkpoint_id"] = self.parent_cid[thread]
        meta: Any = {"source": "loop", "step": self.step, "parents": {}, "host": self.id}
        ok, _ = self.call(
            run_id,
            "lg_put",
            lambda: self.s.put({"configurable": conf}, cp, meta, {"step": self.step}),
        )
        if not ok:
            return
        # This host appends from one thread: the run's last seq is the put's record.
        try:
            seq = self.a.run(run_id).last_seq
        except Exception:  # the saver's own index of the thread (internal) says it too
            seq = self.s._threads[thread].checkpoints[""][cp["id"]].seq
        self.say("acked_lg", thread, cp["id"], run_id, seq)
        self.parent_cid[thread] = cp["id"]

    def op_read(self) -> None:
        what = self.rng.choice(("restore", "records", "get_tuple", "list"))
        if what == "restore":
            run = self.rng.choice(self.runs)
            ok, got = self.call(run, "restore", lambda: self.a.restore(run, progress=False))
            if ok:
                self.say("read", "restore", run, len(got.records))
        elif what == "records":
            run = self.rng.choice(sorted(self.known) or self.runs)
            ok, got = self.call(run, "records", lambda: self.a.run(run).records())
            if ok:
                self.say("read", "records", run, len(got))
        else:
            thread = self.rng.choice(self.threads)
            run_id = self.s.run_id_for(thread)
            had = self.a.cache.run(run_id) is not None
            config: Any = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
            if what == "get_tuple":
                ok, got = self.call(run_id, "get_tuple", lambda: self.s.get_tuple(config))
                n = int(got is not None) if ok else 0
            else:
                ok, got = self.call(run_id, "list", lambda: list(self.s.list(config, limit=3)))
                n = len(got) if ok else 0
            if ok:
                self.say("read", what, thread, n)
            if not had and self.a.cache.run(run_id) is not None:
                self.say("read_takeover", thread)

    def op_resume(self) -> None:
        others = [r for r in self.runs if r not in self.known]
        run = self.rng.choice(others or self.runs)
        ok, got = self.call(run, "resume", lambda: self.a.resume(run))
        if ok:
            self.known.add(run)
            self.say("resumed", run, got.last_seq)

    def op_flush(self) -> None:
        if self.known and self.rng.random() < 0.7:
            run = self.rng.choice(sorted(self.known))
            ok, _ = self.call(run, "flush", lambda: self.a.run(run).flush())
        else:
            ok, _ = self.call("*", "flush", self.a.flush)
        if ok:
            self.say("flushed")

    def op_idle(self) -> None:
        time.sleep(self.rng.uniform(0.02, 0.12))

    def op_reopen(self) -> None:
        t0 = time.monotonic()
        self.call("*", "close", self.a.close)
        t1 = time.monotonic()
        self.open()
        self.say("reopened", f"close={t1 - t0:.3f}", f"open={time.monotonic() - t1:.3f}")

    # -- main --------------------------------------------------------------------------

    def run(self) -> None:
        self.say("start", self.inc, os.getpid())
        self.open()
        names, weights = list(OPS), list(OPS.values())
        began = time.monotonic()
        for i in range(self.cfg["ops"]):
            op = "start" if i == 0 and self.inc == 1 else self.rng.choices(names, weights)[0]
            self.say("op", i, op, f"{time.monotonic() - began:.3f}")
            getattr(self, f"op_{op}")()
            time.sleep(self.rng.uniform(0, self.cfg["pause"]))
        Path(self.cfg["done"]).touch()
        self.say("done")
        close = Path(self.cfg["close"])
        deadline = time.monotonic() + 600
        while not close.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        # Every run of the cache, one by one: an error names its run.
        for row in self.a.status().runs:
            self.call(row.run_id, "final_flush", lambda r=row.run_id: self.a.run(r).flush())
        # A fence found in the background (a flush, a read-back, a lease renewal) after
        # the last append reaches the caller through archive.flush_errors.
        for run, failure in sorted(self.a.flush_errors.items()):
            if isinstance(failure.error, FencedError):
                self.say("error", run, "flush_errors", "FencedError", "expected", "fence")
        ok, err = self.call("*", "final_close", self.a.close)
        if not ok:
            # close() raises the first failing run's error (the others only as notes,
            # not attributed here): its message names the run it was about.
            for run in sorted(set(re.findall(r"^run '([^']+)'", str(err)))):
                expected, fence = classify("final_close", err)
                self.say(
                    "error",
                    run,
                    "final_close",
                    type(err).__name__,
                    "expected" if expected else "unexpected",
                    "fence" if fence else "-",
                )
        self.say("closed", "final")
        Path(self.cfg["finished"]).touch()


warm_boto3()  # at import: in the forkserver, once for every host it forks


def noop() -> None:
    """Started once to bring the forkserver up before the first history."""


def host_main(cfg: dict[str, Any]) -> None:
    """Entry point of a forked host: logs to ``cfg['log']``, credentials from ``cfg``."""
    fd = os.open(cfg["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.environ.update(cfg["env"])
    Host(cfg).run()
    sys.stdout.flush()
    sys.stderr.flush()


if __name__ == "__main__":
    host_main(json.loads(Path(sys.argv[1]).read_text()))
