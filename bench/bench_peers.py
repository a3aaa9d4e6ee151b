"""Head-to-head: runarchive vs the LangGraph S3 checkpointers on PyPI (``make bench-peers``).

The same agent workload (growing transcript, named checkpoints, one event per
checkpoint; 10 runs x 1,000 checkpoints, ``--quick``: 3 x 200) goes through
runarchive (its own API, every checkpoint kept) and through
``langgraph-checkpoint-s3``, ``langgraph-checkpoint-objectstorage`` and
``langgraph-checkpoint-tigris`` (``put`` per checkpoint, ``put_writes`` per event).
Each peer is installed from PyPI into its own bench-only virtual environment under
``.venv/peers/<name>`` (never the project's), and every system runs in a subprocess
(``bench/peers/driver.py``, with that venv's python) against the same SeaweedFS,
started here, through a counting HTTP proxy (``tests/support/faultproxy.py`` at 0 % faults):
every system's requests are counted the same way, at the wire.

Measured: per-checkpoint latency p50/p99, requests per 1,000 checkpoints, stored
bytes and objects (bucket listing of each system's prefix), time to read a whole
run back in a fresh process, time to list all runs, requests per invoke of a
3-node LangGraph graph (runarchive through ``ArchiveSaver``). A peer that cannot
be installed or fails is reported with its error, not dropped.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from common import ROOT, S3Server, SeaweedFS, aws_env, warm_bucket
from support.faultproxy import FaultProxy

DRIVER = ROOT / "bench" / "peers" / "driver.py"
PEERS_DIR = ROOT / ".venv" / "peers"
BUCKET = "peers"
# name -> pip requirements. langgraph-checkpoint-s3 0.1.3 works only with
# langgraph-checkpoint 2.1.2 (with 4.x its first put fails); langgraph 0.6 is the
# last release accepting that.
PEERS: dict[str, list[str]] = {
    "s3": [
        "langgraph-checkpoint-s3==0.1.3",
        "langgraph-checkpoint==2.1.2",
        "langgraph>=0.6,<0.7",
    ],
    "objectstorage": ["langgraph-checkpoint-objectstorage[s3]==0.1.15", "langgraph"],
    "tigris": ["langgraph-checkpoint-tigris==0.1.0", "langgraph"],
}
PACKAGE = {
    "runarchive": "runarchive",
    "s3": "langgraph-checkpoint-s3",
    "objectstorage": "langgraph-checkpoint-objectstorage",
    "tigris": "langgraph-checkpoint-tigris",
}


class Failed(Exception):
    """A step of one system failed; the message is what the table shows."""


def ensure_venv(name: str, reqs: list[str]) -> Path:
    """The python of the peer's venv, created and installed once (stamped by its pins)."""
    venv = PEERS_DIR / name
    stamp = venv / ".installed"
    python = venv / "bin" / "python"
    if stamp.exists() and stamp.read_text() == "\n".join(reqs) and python.exists():
        return python
    print(f"installing {' '.join(reqs)} into {venv} ...", file=sys.stderr)
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    proc = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *reqs],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if "WARNING" not in ln]
        raise Failed("pip install failed: " + " ".join(lines[-3:])[:300])
    stamp.write_text("\n".join(reqs))
    return python


def version_of(python: Path, package: str) -> str:
    code = f"import importlib.metadata as m; print(m.version({package!r}))"
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=False)
    return out.stdout.strip() or "?"


class CountingProxy(FaultProxy):
    """The fault proxy at 0 % faults, counting requests by method."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.by_method: Counter[str] = Counter()

    def choose(self, method: str, path: str) -> str | None:
        with self._lock:
            self.by_method[method] += 1
        return super().choose(method, path)

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self.by_method)


def drive(python: Path, proxy: CountingProxy, cfg: dict[str, Any]) -> dict[str, Any]:
    """Run one phase in a fresh process; returns its JSON plus the requests it made
    between its two marks (by method)."""
    env = {**os.environ, "PYTHONPATH": "", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [str(python), str(DRIVER), json.dumps(cfg)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdin
    assert proc.stdout
    assert proc.stderr
    marks: dict[str, Counter[str]] = {}
    last = ""
    for line in proc.stdout:
        if line.startswith("MARK "):
            marks[line.split()[1]] = proxy.snapshot()
            proc.stdin.write("\n")
            proc.stdin.flush()
        elif line.strip():
            last = line
    err = proc.stderr.read()
    if proc.wait() != 0 or not last.startswith("{"):
        tail = [ln for ln in err.strip().splitlines() if ln.strip()][-1:] or ["no output"]
        raise Failed(f"{cfg['phase']} failed: {tail[0][:240]}")
    result: dict[str, Any] = json.loads(last)
    result["requests"] = dict(marks["end"] - marks["start"])
    return result


def stored(server: S3Server, prefix: str) -> tuple[int, int]:
    """(objects, bytes) under ``prefix/`` (listed directly, not through the proxy)."""
    n = size = 0
    pages = server.client().get_paginator("list_objects_v2")
    for page in pages.paginate(Bucket=BUCKET, Prefix=prefix + "/"):
        for obj in page.get("Contents", []):
            n += 1
            size += obj["Size"]
    return n, size


def measure_system(
    name: str, python: Path, server: S3Server, proxy: CountingProxy, tmp: Path, scale: Any
) -> dict[str, Any]:
    base = {
        "system": name,
        "endpoint": proxy.endpoint_url,
        "bucket": BUCKET,
        "prefix": name,
        "region": server.region,
        "runs": scale.runs,
        "steps": scale.steps,
        "workdir": str(tmp / name),
        "invokes": scale.invokes,
    }
    (tmp / name).mkdir()
    row: dict[str, Any] = {"system": name, "version": version_of(python, PACKAGE[name])}
    t0 = time.monotonic()
    w = drive(python, proxy, {**base, "phase": "write"})
    checkpoints = scale.runs * scale.steps
    row.update(
        p50_ms=w["p50_ms"],
        p99_ms=w["p99_ms"],
        write_s=w["wall_s"],
        write_requests=w["requests"],
        requests_per_1000=sum(w["requests"].values()) * 1000 / checkpoints,
    )
    row["objects"], row["stored_bytes"] = stored(server, name)
    r = drive(python, proxy, {**base, "phase": "restore", "run_id": w["ids"][0]})
    if r["checkpoints"] != scale.steps or r["latest_messages"] != scale.steps:
        raise Failed(f"read back {r['checkpoints']} of {scale.steps} checkpoints")
    row.update(restore_s=r["seconds"], restore_requests=sum(r["requests"].values()))
    lst = drive(python, proxy, {**base, "phase": "list"})
    if lst["runs"] != scale.runs:
        raise Failed(f"listed {lst['runs']} of {scale.runs} runs")
    row.update(list_s=lst["seconds"], list_requests=sum(lst["requests"].values()))
    g = drive(python, proxy, {**base, "phase": "graph", "prefix": name + "-graph"})
    if g["messages"] != 4 * scale.invokes:
        raise Failed(f"graph state has {g['messages']} messages, expected {4 * scale.invokes}")
    row["graph_requests_per_invoke"] = sum(g["requests"].values()) / scale.invokes
    row["graph_requests"] = g["requests"]
    row["seconds"] = time.monotonic() - t0
    return row


def ratio(value: float, base: float) -> str:
    return "" if not base else f" ({value / base:.3g}x)"


def table(rows: list[dict[str, Any]], scale: Any) -> str:
    base = next((r for r in rows if r["system"] == "runarchive" and "error" not in r), {})
    cols = [
        ("checkpoint p50", "p50_ms", "{:.3f} ms"),
        ("checkpoint p99", "p99_ms", "{:.3f} ms"),
        ("requests / 1,000 checkpoints", "requests_per_1000", "{:,.0f}"),
        ("stored", "stored_bytes", "{:,.0f} B"),
        ("objects", "objects", "{:,}"),
        (f"read back 1 run ({scale.steps} checkpoints)", "restore_s", "{:.2f} s"),
        (f"list all {scale.runs} runs", "list_s", "{:.3f} s"),
        ("requests / graph invoke (3 nodes)", "graph_requests_per_invoke", "{:.1f}"),
    ]
    head = "| | " + " | ".join(f"{r['system']} {r.get('version', '')}" for r in rows) + " |"
    out = [head, "|---" * (len(rows) + 1) + "|"]
    for label, key, fmt in cols:
        cells = []
        for r in rows:
            if "error" in r:
                cells.append("failed" if key != "p50_ms" else f"**failed**: {r['error']}")
            else:
                cells.append(fmt.format(r[key]) + ratio(r[key], base.get(key, 0)))
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(out)


class Scale:
    def __init__(self, quick: bool) -> None:
        self.runs, self.steps, self.invokes = (3, 200, 5) if quick else (10, 1000, 10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 runs x 200 checkpoints")
    parser.add_argument("--only", nargs="*", help="systems to run (default: all)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    scale = Scale(args.quick)
    systems = args.only or ["runarchive", *PEERS]
    pythons: dict[str, Path | str] = {}
    for name in systems:
        if name == "runarchive":
            pythons[name] = Path(sys.executable)
            continue
        try:
            pythons[name] = ensure_venv(name, PEERS[name])
        except (Failed, subprocess.SubprocessError, OSError) as exc:
            pythons[name] = str(exc)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="rapeers-") as tmp_name:
        tmp = Path(tmp_name)
        with SeaweedFS(tmp / "weed") as server, aws_env(server):
            server.client().create_bucket(Bucket=BUCKET)
            warm_bucket(server, BUCKET)
            with CountingProxy(server.endpoint_url) as proxy:
                for name in systems:
                    python = pythons[name]
                    if isinstance(python, str):
                        rows.append({"system": name, "error": python})
                        continue
                    print(f"{name}: {scale.runs} x {scale.steps} ...", file=sys.stderr)
                    try:
                        rows.append(measure_system(name, python, server, proxy, tmp, scale))
                    except Failed as exc:
                        rows.append({"system": name, "error": str(exc)})
                    print(f"{name}: {rows[-1]}", file=sys.stderr)
    cmd = "make bench-peers" + (" (--quick)" if args.quick else "")
    print(f"{cmd}: {scale.runs} runs x {scale.steps} checkpoints (+1 event each), SeaweedFS")
    print(table(rows, scale))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2, default=str) + "\n")
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
