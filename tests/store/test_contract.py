"""The store contract (:mod:`runarchive.testing`) on every backend of ours: memory, file,
moto (in-process) and SeaweedFS over HTTP, as a user's custom store runs it."""

from __future__ import annotations

import pytest
from conftest import StoreFactory

from runarchive.store import Store
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
