"""Helpers shared by the benchmarks (not part of the library)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from servers import S3Server  # noqa: E402


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
