"""Where a test's archive lives: the store kinds, one backend object per test, children.

The fixtures that build these live in ``tests/conftest.py``; the helpers here are what the
tests import (``from support.backends import Backend, abandon``).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from runarchive import Archive
from runarchive.store import FileStore, MemoryStore, S3Settings, S3Store, Store
from support import CHILDREN
from support.servers import S3Server

StoreFactory = Callable[[], Store]


def s3_store_for(server: S3Server, bucket: str, prefix: str = "p") -> S3Store:
    """An S3Store pointed at ``server``'s ``bucket`` with the server's credentials."""
    return S3Store(
        S3Settings(
            bucket=bucket,
            prefix=prefix,
            endpoint_url=server.endpoint_url,
            region=server.region,
            addressing_style="path",
            max_attempts=2,
        ),
        client=server.client(),
    )


def s3_settings(server: S3Server) -> dict[str, object]:
    """Archive settings that reach ``server`` (credentials come from the environment)."""
    return {
        "endpoint_url": server.endpoint_url,
        "region": server.region,
        "addressing_style": "path",
    }


def abandon(archive: Archive) -> None:
    """Drop an archive the way a killed process would: no final flush, cache released.

    (The crash tests kill real processes; this is for in-process protocol tests.)
    """
    archive.flusher.stop()
    archive.cache.close()
    archive._path.closed = True


def store_factory(
    store_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[StoreFactory]:
    """Yield a factory of fresh, empty stores of ``store_kind`` (each call: a new
    bucket or directory); ``seaweedfs`` uses the session's server."""
    counter = iter(range(1000))
    if store_kind == "memory":
        yield MemoryStore
    elif store_kind == "file":
        yield lambda: FileStore(tmp_path / f"bucket{next(counter)}")
    elif store_kind == "moto":
        with mock_aws():

            def make_moto() -> Store:
                name = f"moto-bucket-{next(counter)}"
                boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=name)
                return S3Store(S3Settings(bucket=name, prefix="pre/fix", region="us-east-1"))

            yield make_moto
    else:
        server: S3Server = request.getfixturevalue("seaweed")
        yield lambda: s3_store_for(server, server.make_bucket())


class Backend:
    """Where an archive test runs: a URL plus the settings to reach it."""

    def __init__(self, name: str, url: str, settings: dict[str, object], tmp: Path) -> None:
        self.name, self.url, self.settings, self.tmp = name, url, settings, tmp
        self._opened: list[Archive] = []
        self._n = 0

    def open(self, **overrides: object) -> Archive:
        """Open the archive with a fresh cache dir (a new host) unless one is given."""
        self._n += 1
        settings = {**self.settings, **overrides}
        settings.setdefault("cache_dir", self.tmp / f"host{self._n}")
        archive = Archive.open(self.url, **settings)
        self._opened.append(archive)
        return archive

    def close_all(self) -> None:
        for archive in self._opened:
            archive.close()


def open_backend(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Yield an empty archive's :class:`Backend` of ``kind`` (file, moto, seaweedfs),
    closing what it opened afterwards."""
    if kind == "file":
        b = Backend(kind, (tmp_path / "bucket").as_uri(), {}, tmp_path)
        yield b
        b.close_all()
    elif kind == "moto":
        with mock_aws():
            boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="runarchive-test")
            b = Backend(kind, "s3://runarchive-test/agents", {"region": "us-east-1"}, tmp_path)
            yield b
            b.close_all()
    else:
        server: S3Server = request.getfixturevalue("seaweed")
        b = Backend(kind, server.url(server.make_bucket(), "agents"), s3_settings(server), tmp_path)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("AWS_ACCESS_KEY_ID", server.access_key)
            mp.setenv("AWS_SECRET_ACCESS_KEY", server.secret_key)
            yield b
            b.close_all()


def run_child(backend: Backend, script: str, doc: dict[str, object]) -> str:
    """Run ``tests/support/children/<script>`` with ``doc`` (plus the backend's URL and
    settings) as JSON; return its stdout. The child sees the backend's credentials through
    the environment."""
    settings = {k: v for k, v in backend.settings.items()}
    settings.setdefault("cache_dir", str(backend.tmp / "child-host"))
    full = {"url": backend.url, "settings": settings, **doc}
    proc = subprocess.run(
        [sys.executable, str(CHILDREN / script), json.dumps(full, default=str)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode in (0, -signal.SIGKILL), proc.stderr
    return proc.stdout
