"""Helpers shared by the benchmarks (not part of the library)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from support.servers import S3Server, SeaweedFS  # noqa: E402


def pct(values: list[float], q: float) -> float:
    """Percentile ``q`` (0-100) with linear interpolation."""
    data = sorted(values)
    if not data:
        return float("nan")
    pos = (len(data) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def kib(n: float) -> str:
    return f"{n / 1024:,.1f} KiB"


def mib(n: float) -> str:
    return f"{n / 1024 / 1024:,.2f} MiB"


@contextmanager
def aws_env(server: S3Server) -> Iterator[None]:
    """Credentials for boto3's chain, from the test server; restored afterwards.
    Child processes inherit them."""
    wanted = {
        "AWS_ACCESS_KEY_ID": server.access_key,
        "AWS_SECRET_ACCESS_KEY": server.secret_key,
        "AWS_DEFAULT_REGION": server.region,
    }
    drop = ["AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"]
    drop += [k for k in os.environ if k.startswith("RUNARCHIVE_")]
    saved = {k: os.environ.get(k) for k in [*wanted, *drop]}
    for k in drop:
        os.environ.pop(k, None)
    os.environ.update(wanted)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def warm_bucket(server: S3Server, bucket: str) -> None:
    """SeaweedFS allocates volumes on a bucket's first PUT (~0.2 s): do it untimed."""
    client = server.client()
    client.put_object(Bucket=bucket, Key="_warm", Body=b"x")
    client.delete_object(Bucket=bucket, Key="_warm")


def run_bench(
    description: str,
    measure: Callable[[S3Server, Path, bool], tuple[str, dict[str, Any]]],
    argv: list[str] | None = None,
) -> int:
    """The shared command line of a benchmark: ``--quick``, ``--json [PATH]``; starts a
    SeaweedFS in a temporary directory, calls ``measure(server, tmp, quick)`` and prints
    the text it returns (and writes its payload as JSON when asked). Exit status 0:
    a benchmark reports a missed target, it does not fail."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="a smaller, faster run")
    default = str(Path(tempfile.gettempdir()) / f"runarchive-{Path(sys.argv[0]).stem}.json")
    parser.add_argument(
        "--json",
        nargs="?",
        const=default,
        metavar="PATH",
        help="also write the results as JSON (default path: %(const)s)",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="rabench-") as tmp_name:
        tmp = Path(tmp_name)
        with SeaweedFS(tmp / "weed") as server, aws_env(server):
            print(f"SeaweedFS up at {server.endpoint_url}; running...", file=sys.stderr)
            text, payload = measure(server, tmp, args.quick)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(payload, indent=2, default=str) + "\n")
        print(f"results written to {args.json}")
    return 0
