"""The store contract (:mod:`runarchive.testing`) on every backend of ours: memory, file,
moto (in-process) and SeaweedFS over HTTP, as a user's custom store runs it."""

from __future__ import annotations

import pytest
from support.backends import StoreFactory, s3_store_for
from support.servers import S3Server

from runarchive.store import CountingStore, MemoryStore, Retention, Store
from runarchive.testing import StoreContract


class TestOurStores(StoreContract):
    """``make_store`` and ``store_kind`` (conftest) parametrize the class by backend."""

    @pytest.fixture(autouse=True)
    def _backend(self, make_store: StoreFactory, store_kind: str) -> None:
        self._factory = make_store
        # moto checks a precondition and then writes in two steps without a lock
        # (moto/s3/responses.py put_object): truly concurrent conditional writes can
        # both pass there, so the racing tests run on the atomic backends only.
        self.atomic_conditional_writes = store_kind != "moto"

    def make_store(self) -> Store:
        return self._factory()


class TestCountingStore(StoreContract):
    """The counting wrapper (benchmarks, request budgets) keeps the contract."""

    def make_store(self) -> Store:
        return CountingStore(MemoryStore())


class TestMemoryStoreWithRetention(StoreContract):
    """Immutable puts take a GOVERNANCE retention; every other rule holds."""

    def make_store(self) -> Store:
        return MemoryStore(retention=Retention("GOVERNANCE", 1))


@pytest.mark.real_server
class TestSeaweedFSObjectLockBucket(StoreContract):
    """A versioned bucket with Object Lock on a real server: the legal-hold rules run
    (a plain delete only adds a delete marker there; a bypassing one is refused)."""

    @pytest.fixture(autouse=True)
    def _server(self, seaweed: S3Server) -> None:
        self._seaweed = seaweed

    def make_store(self) -> Store:
        return s3_store_for(self._seaweed, self._seaweed.make_bucket(object_lock=True))
