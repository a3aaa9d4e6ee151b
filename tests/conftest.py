"""Shared fixtures: every store backend, real S3 servers, archives on each of them.

Helpers live in the ``support`` package (``from support.backends import Backend``).
Markers: ``real_server`` is put here on every test that uses SeaweedFS (see
:func:`pytest_collection_modifyitems`); ``slow`` is put on the tests themselves.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zstandard
from moto import mock_aws
from support import backends, hostile
from support.backends import Backend, StoreFactory
from support.servers import MotoServer, S3Server, SeaweedFS

from runarchive import Archive

# No test may reach a real AWS account or read the developer's credentials.
for _var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
    os.environ.pop(_var, None)
os.environ["AWS_ACCESS_KEY_ID"] = "testing"
os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
for _var in [v for v in os.environ if v.startswith("RUNARCHIVE_")]:
    os.environ.pop(_var)

SEAWEED = "seaweedfs"
"""The store kind (and parameter id) of the real server."""


def _uses_real_server(item: pytest.Item) -> bool:
    """Whether ``item`` needs SeaweedFS: it names the ``seaweed`` fixture (directly or
    through another fixture), or one of its parameters is the ``seaweedfs`` store kind
    (``backend``, ``store_kind``, ... resolve it at run time with getfixturevalue)."""
    if "seaweed" in getattr(item, "fixturenames", ()):
        return True
    callspec = getattr(item, "callspec", None)
    return callspec is not None and SEAWEED in callspec.id


def _on_in_process_moto(item: pytest.Item) -> bool:
    """Whether ``item`` runs an archive on in-process moto (the ``backend`` fixtures):
    0.5-3 s a test where file:// takes milliseconds. The store contract on moto
    (``store_kind``) stays fast, so ``make test-fast`` still runs S3Store."""
    callspec = getattr(item, "callspec", None)
    return callspec is not None and any(
        callspec.params.get(name) == "moto" for name in ("backend", "shared_backend")
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # One rule here rather than a mark on each parameter: a new backend fixture or an
    # indirect parametrisation cannot forget it (test_markers.py checks the selection).
    for item in items:
        if _uses_real_server(item) and item.get_closest_marker("real_server") is None:
            item.add_marker(pytest.mark.real_server)
        if _on_in_process_moto(item):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _real_server_is_marked(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test that started SeaweedFS, or used the session's server, without the
    ``real_server`` mark (so ``-m "not real_server"`` really runs without one)."""
    started = SeaweedFS.started
    yield
    used = SeaweedFS.started > started or "seaweed" in request.fixturenames
    if used and request.node.get_closest_marker("real_server") is None:
        pytest.fail(
            f"{request.node.nodeid} uses SeaweedFS but is not marked real_server: add "
            "@pytest.mark.real_server, or a seaweedfs parameter id",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real SeaweedFS S3 server on 127.0.0.1 for the whole session."""
    with SeaweedFS(tmp_path_factory.mktemp("seaweed")) as server:
        yield server


@pytest.fixture(scope="session")
def bombs() -> dict[bool, bytes]:
    """Two 10 GiB zstd bombs (about 330 KB each, seconds to make, so once per session):
    with the content size in the frame header, and without it (streamed: a reader only
    learns the size by decompressing)."""
    made = {sized: hostile.make_bomb(sized) for sized in (True, False)}
    assert zstandard.frame_content_size(made[True]) == hostile.BOMB_SIZE
    assert zstandard.frame_content_size(made[False]) == -1
    return made


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


@pytest.fixture(params=["memory", "file", "moto", SEAWEED])
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# moto checks a precondition and then writes in two steps without a lock
# (moto/s3/responses.py put_object), so truly concurrent conditional writes can
# both pass there. Race tests run on the backends that are atomic, the real
# server among them.
@pytest.fixture(params=["memory", "file", SEAWEED])
def race_store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_store(
    store_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[StoreFactory]:
    """A factory of fresh, empty stores of one backend (each call: a new bucket/dir)."""
    yield from backends.store_factory(store_kind, tmp_path, request)


@pytest.fixture
def make_race_store(
    race_store_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[StoreFactory]:
    """Like ``make_store``, over the backends whose conditional writes are atomic."""
    yield from backends.store_factory(race_store_kind, tmp_path, request)


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


@pytest.fixture(params=["file", "moto", SEAWEED])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """An empty archive on each kind of store: file://, in-process moto, real SeaweedFS."""
    yield from backends.open_backend(str(request.param), request, tmp_path)


@pytest.fixture(params=["file", SEAWEED])
def shared_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Like ``backend``, over the stores another process can reach too (not in-process moto)."""
    yield from backends.open_backend(str(request.param), request, tmp_path)
