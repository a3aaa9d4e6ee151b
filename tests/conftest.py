"""Shared fixtures: every store backend, real S3 servers, archives on each of them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import pytest
from moto import mock_aws
from servers import MotoServer, S3Server, SeaweedFS

from runarchive import Archive
from runarchive.store import FileStore, MemoryStore, S3Settings, S3Store, Store

# No test may reach a real AWS account or read the developer's credentials.
for _var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
    os.environ.pop(_var, None)
os.environ["AWS_ACCESS_KEY_ID"] = "testing"
os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
for _var in [v for v in os.environ if v.startswith("RUNARCHIVE_")]:
    os.environ.pop(_var)


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real SeaweedFS S3 server on 127.0.0.1 for the whole session."""
    with SeaweedFS(tmp_path_factory.mktemp("seaweed")) as server:
        yield server


@pytest.fixture(scope="session")
def moto_server() -> Iterator[S3Server]:
    """moto's S3 server over HTTP on 127.0.0.1."""
    with MotoServer() as server:
        yield server


@pytest.fixture
def moto_s3() -> Iterator[None]:
    """In-process moto (no HTTP)."""
    with mock_aws():
        yield


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


StoreFactory = Callable[[], Store]


def abandon(archive: Archive) -> None:
    """Drop an archive the way a killed process would: no final flush, cache released.

    (The crash tests kill real processes; this is for in-process protocol tests.)
    """
    archive.flusher.stop()
    archive.cache.close()
    archive._path.closed = True


@pytest.fixture(params=["memory", "file", "moto", "seaweedfs"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# moto checks a precondition and then writes in two steps without a lock
# (moto/s3/responses.py put_object), so truly concurrent conditional writes can
# both pass there. Race tests run on the backends that are atomic, the real
# server among them.
@pytest.fixture(params=["memory", "file", "seaweedfs"])
def race_store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_store(
    store_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[StoreFactory]:
    """A factory of fresh, empty stores of one backend (each call: a new bucket/dir)."""
    yield from _store_factory(store_kind, tmp_path, request)


@pytest.fixture
def make_race_store(
    race_store_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[StoreFactory]:
    """Like ``make_store``, over the backends whose conditional writes are atomic."""
    yield from _store_factory(race_store_kind, tmp_path, request)


def _store_factory(
    store_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[StoreFactory]:
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


@pytest.fixture
def archive_factory(tmp_path: Path) -> Iterator[Callable[..., Archive]]:
    """Open archives that are closed at the end of the test, each with its own cache."""
    opened: list[Archive] = []
    counter = iter(range(1000))

    def factory(url: str | None = None, **settings: object) -> Archive:
        settings.setdefault("cache_dir", tmp_path / f"cache{next(counter)}")
        if url is None:
            url = (tmp_path / "bucket").as_uri()
        archive = Archive.open(url, **settings)
        opened.append(archive)
        return archive

    yield factory
    for archive in opened:
        archive.close()


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


@pytest.fixture(params=["file", "moto", "seaweedfs"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """An empty archive on each kind of store: file://, in-process moto, real SeaweedFS."""
    yield from _backend(str(request.param), request, tmp_path)


@pytest.fixture(params=["file", "seaweedfs"])
def shared_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Like ``backend``, over the stores another process can reach too (not in-process moto)."""
    yield from _backend(str(request.param), request, tmp_path)


def _backend(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
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
    """Run ``tests/<script>`` with ``doc`` (plus the backend's URL and settings) as JSON;
    return its stdout. The child sees the backend's credentials through the environment."""
    settings = {k: v for k, v in backend.settings.items()}
    settings.setdefault("cache_dir", str(backend.tmp / "child-host"))
    full = {"url": backend.url, "settings": settings, **doc}
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).parent / script), json.dumps(full, default=str)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode in (0, -signal.SIGKILL), proc.stderr
    return proc.stdout


def s3_settings(server: S3Server) -> dict[str, object]:
    """Archive settings that reach ``server`` (credentials come from the environment)."""
    return {
        "endpoint_url": server.endpoint_url,
        "region": server.region,
        "addressing_style": "path",
    }
