"""Multi-node SeaweedFS: two agent processes, two S3 gateways, one volume server killed.

Opt-in (``make test-cluster``; not part of ``make test``). The cluster is the one
``infra/local/seaweedfs-cluster-start.sh`` starts (1 master with replication 001, 2
volume servers, 1 filer, 2 S3 gateways), on free ports in a temporary directory.

1. Two child processes (``cluster_child.py``), each its own host and cache, write runs
   through *different* gateways and print every record they acknowledge.
2. Volume server 1 is SIGKILLed mid-run. With two volume servers and replication 001,
   SeaweedFS keeps serving reads from the copy but writes wait for a second server:
   the children keep acknowledging (records stay in their caches, the flusher retries),
   and a run archived before the kill is restorable through the other gateway.
3. A replacement volume server (3) joins (the start script with ``VOLUMES="2 3"``);
   volume server 1 and its data never come back. The backlog drains.
4. The children end their last run and close. Through *each* gateway, from a fresh
   reader: every acknowledged record is restored with its content, the manifest lists
   every run with its final status, nothing is interrupted, and ``verify`` (the CLI,
   with the environment the start script printed) reports no error.
"""

from __future__ import annotations

import json
import os
import random
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from support.servers import find_weed

from runarchive import Reader

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
START = ROOT / "infra" / "local" / "seaweedfs-cluster-start.sh"
STOP = ROOT / "infra" / "local" / "seaweedfs-cluster-stop.sh"
CHILD = Path(__file__).with_name("cluster_child.py")
GRPC = 10000
RUN_RECORDS = 40  # records per run
INTERVAL = 0.03  # seconds between records: ~30 records/s per child
BEFORE_KILL = 8.0  # seconds of normal writing
OUTAGE = 12.0  # seconds with one of the two volume servers dead
AFTER = 6.0  # seconds of writing once the replacement has joined


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _port_base() -> int:
    """A base port with base..base+6 and their gRPC twins (+10000) free, below the
    ephemeral range (outgoing connections never take them)."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(11000, 22000)
        if all(_free(p) and _free(p + GRPC) for p in range(base, base + 7)):
            return base
    raise RuntimeError("no free port range for the cluster")


@dataclass
class Cluster:
    data_dir: Path
    env: dict[str, str]  # what the start script printed (DATA_DIR/env)
    gateways: tuple[str, str]
    script_env: dict[str, str]

    def script(self, path: Path, **extra: str) -> tuple[float, str]:
        began = time.monotonic()
        out = subprocess.run(
            ["bash", str(path), str(self.data_dir)],
            env={**self.script_env, **extra},
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert out.returncode == 0, f"{path.name} failed:\n{out.stdout}\n{out.stderr}"
        return time.monotonic() - began, out.stdout

    def pid(self, name: str) -> int:
        return int((self.data_dir / "pids" / f"{name}.pid").read_text())

    def settings(self, gateway: str) -> dict[str, Any]:
        return {
            "endpoint_url": gateway,
            "region": "us-east-1",
            "addressing_style": "path",
            # a write waiting for a dead replica must not hold a flush for minutes
            "max_attempts": 2,
            "connect_timeout": 2.0,
            "read_timeout": 4.0,
        }

    def reader(self, gateway: str) -> Reader:
        return Reader.open(self.env["RUNARCHIVE_URL"], **self.settings(gateway))


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    data_dir = tmp_path / "cluster"
    script_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RUNARCHIVE_"))},
        "WEED": str(find_weed()),
        "PORT_BASE": str(_port_base()),
        "STOP_TIMEOUT": "5",
    }
    c = Cluster(data_dir, {}, ("", ""), script_env)
    try:
        seconds, out = c.script(START)
        print(f"\ncluster ready in {seconds:.1f} s")
        for line in (data_dir / "env").read_text().splitlines():
            key, _, value = line.removeprefix("export ").partition("=")
            c.env[key] = value
        base = int(script_env["PORT_BASE"])  # S3 gateways at base + 2 and base + 3
        c.gateways = (f"http://127.0.0.1:{base + 2}", f"http://127.0.0.1:{base + 3}")
        assert c.env["RUNARCHIVE_ENDPOINT_URL"] == c.gateways[0]
        assert c.gateways[1] in out
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", c.env["AWS_ACCESS_KEY_ID"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", c.env["AWS_SECRET_ACCESS_KEY"])
        yield c
    finally:
        if (data_dir / "pids").is_dir():
            subprocess.run(["bash", str(STOP), str(data_dir)], env=script_env, check=False)


@dataclass
class Child:
    """A writer process; a thread collects its stdout lines as they come."""

    name: str
    proc: subprocess.Popen[str]
    stderr_path: Path
    lines: list[tuple[float, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        threading.Thread(target=self._collect, daemon=True).start()

    def _collect(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def tagged(self, tag: str, since: float = 0.0) -> list[list[str]]:
        return [
            line.split()[1:]
            for t, line in list(self.lines)
            if t >= since and line.split()[0] == tag
        ]

    def wait_for(self, tag: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.tagged(tag):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                time.sleep(0.2)  # let the reader thread catch the last lines
                raise AssertionError(f"{self.name}: no {tag} line; {self.diagnostics()}")
            time.sleep(0.05)

    def unflushed(self) -> int:
        status = self.tagged("STATUS")
        return int(status[-1][0]) if status else -1

    def diagnostics(self) -> str:
        err = self.stderr_path.read_text(errors="replace")[-3000:]
        return f"exit {self.proc.poll()}; last lines {[x for _, x in self.lines[-8:]]}\n{err}"


def _spawn(c: Cluster, tmp: Path, proc: int, gateway: str) -> Child:
    settings = {
        **c.settings(gateway),
        "cache_dir": str(tmp / f"cache-{proc}"),
        "host_id": f"host-{proc}",
        "flush_age": 0.2,
        "policy": {"keep_all": True},
    }
    spec = {
        "url": c.env["RUNARCHIVE_URL"],
        "settings": settings,
        "proc": proc,
        "run_records": RUN_RECORDS,
        "interval": INTERVAL,
    }
    stderr_path = tmp / f"child-{proc}.err"
    with stderr_path.open("w") as err:
        popen = subprocess.Popen(
            [sys.executable, str(CHILD), json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env={**os.environ, "AWS_REGION": "us-east-1"},
        )
    return Child(f"child-{proc}", popen, stderr_path)


def _wait_caught_up(children: list[Child], timeout: float) -> float:
    """Seconds until every child's backlog is back to normal (a few records)."""
    began = time.monotonic()
    while True:
        time.sleep(0.5)
        if all(0 <= ch.unflushed() <= 2 * RUN_RECORDS for ch in children):
            return time.monotonic() - began
        if time.monotonic() - began > timeout:
            raise AssertionError(f"backlog not drained: {[ch.unflushed() for ch in children]}")


def test_two_gateways_survive_a_dead_volume_server(cluster: Cluster, tmp_path: Path) -> None:
    began = time.monotonic()
    timings: dict[str, float] = {}
    children = [_spawn(cluster, tmp_path, p, gw) for p, gw in enumerate(cluster.gateways)]
    try:
        for ch in children:
            ch.wait_for("READY", timeout=30)
        time.sleep(BEFORE_KILL)
        first_run = children[0].tagged("END")[0]
        assert all(ch.tagged("END") for ch in children), "no run ended before the kill"

        # -- one of the two volume servers dies --------------------------------------
        os.kill(cluster.pid("volume1"), signal.SIGKILL)
        killed_at = time.monotonic()
        time.sleep(3.0)
        # Archived before the kill, so on both volume servers: readable from the copy,
        # through the gateway the writer did not use.
        with cluster.reader(cluster.gateways[1]) as reader:
            restored = reader.restore(first_run[0])
        assert restored.index.status == first_run[1]
        assert [r.seq for r in restored.records] == list(range(1, int(first_run[2]) + 1))
        time.sleep(max(0.0, OUTAGE - (time.monotonic() - killed_at)))
        acks_in_outage = [len(ch.tagged("ACK", since=killed_at)) for ch in children]
        backlog_peak = [
            max(int(s[0]) for s in ch.tagged("STATUS", since=killed_at)) for ch in children
        ]
        # Writers kept going while the bucket could not store anything.
        assert min(acks_in_outage) > 100, acks_in_outage
        assert min(backlog_peak) > 100, backlog_peak

        # -- a replacement volume server joins; server 1 never comes back -------------
        timings["replacement ready"], _ = cluster.script(START, VOLUMES="2 3")
        timings["backlog drained"] = _wait_caught_up(children, timeout=120)
        time.sleep(AFTER)

        for ch in children:
            assert ch.proc.stdin is not None
            ch.proc.stdin.write("stop\n")
            ch.proc.stdin.flush()
        for ch in children:
            ch.wait_for("CLOSED", timeout=120)
            assert ch.proc.wait(timeout=30) == 0, ch.diagnostics()
        timings["writing (total)"] = time.monotonic() - began
    finally:
        for ch in children:
            if ch.proc.poll() is None:
                ch.proc.kill()  # by its own PID: only the processes this test started
                ch.proc.wait(timeout=30)

    # -- what the parent saw acknowledged ----------------------------------------------
    acked: dict[str, dict[int, tuple[str, int]]] = {}  # run -> seq -> (kind, proc)
    final: dict[str, tuple[str, int]] = {}  # run -> (status, last seq)
    deferred = 0  # runs whose complete()/fail() could not flush (outage)
    for proc, ch in enumerate(children):
        for run_id, seq, kind in ch.tagged("ACK"):
            acked.setdefault(run_id, {})[int(seq)] = (kind, proc)
        for run_id, status, last, how in ch.tagged("END"):
            final[run_id] = (status, int(last))
            deferred += how.startswith("deferred")
    assert set(acked) == set(final), "a run was started but not ended"
    assert {s for s, _ in final.values()} == {"completed", "failed"}

    # -- through each gateway, from a fresh reader --------------------------------------
    checked = time.monotonic()
    for gateway in cluster.gateways:
        with cluster.reader(gateway) as reader:
            listed = reader.list_runs(limit=None)
            ids = [e.run_id for e in listed]
            assert len(ids) == len(set(ids)), "a run is listed twice"
            assert {e.run_id: e.status for e in listed} == {r: s for r, (s, _) in final.items()}
            assert reader.interrupted() == []
            lost = 0
            for run_id, records in acked.items():
                restored = reader.restore(run_id)
                got = {r.seq: r for r in restored.records}
                assert restored.index.status == final[run_id][0]
                assert sorted(got) == list(range(1, final[run_id][1] + 1))
                for seq, (kind, proc) in records.items():
                    record = got.get(seq)
                    if record is None:
                        lost += 1
                        continue
                    assert record.type == kind
                    body = record.state if record.type == "checkpoint" else record.data
                    assert body["proc"] == proc
                    assert body["run"] == run_id
            assert lost == 0, f"{lost} acknowledged records not restorable via {gateway}"
    timings["restore + list (both gateways)"] = time.monotonic() - checked

    verify_env = {**os.environ, **cluster.env, "RUNARCHIVE_ENDPOINT_URL": cluster.gateways[1]}
    out = subprocess.run(
        [str(Path(sys.executable).parent / "runarchive"), "verify", "--all", "--json"],
        env=verify_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout)
    errors = [p for p in report["problems"] if p["severity"] == "error"]
    assert errors == [], report
    assert report["ok"], report
    assert report["runs"] == len(final)
    assert report["records"] == sum(last for _, last in final.values())

    total_acked = sum(len(r) for r in acked.values())
    print(
        f"\nacked {total_acked} records in {len(final)} runs "
        f"({sum(s == 'failed' for s, _ in final.values())} failed, {deferred} ended "
        f"during the outage with the flush deferred); restored "
        f"{total_acked} through each of the 2 gateways, lost 0; acks during the outage "
        f"{acks_in_outage}, backlog peak {backlog_peak}; verify: {report['segments']} "
        f"segments, {len(report['problems'])} problems (0 errors)\n"
        + "\n".join(f"  {k}: {v:.1f} s" for k, v in timings.items())
        + f"\n  test total: {time.monotonic() - began:.1f} s; "
        f"cluster: {shlex.quote(str(cluster.data_dir))}"
    )
