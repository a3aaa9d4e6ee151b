"""The store contract as a test suite, so a custom :class:`~runarchive.store.Store` can
prove itself before an archive relies on it (``docs/testing.md``)::

    import runarchive.testing
    from runarchive.store import Store

    class TestMyStore(runarchive.testing.StoreContract):
        def make_store(self) -> Store:
            return MyStore(...)  # a fresh, empty store at every call

pytest collects the subclass like any test class (its name starts with ``Test``);
with :mod:`unittest`, mix in ``unittest.TestCase`` as well. Nothing here imports
pytest: a broken rule is an ``AssertionError`` whose message names the rule, and a
test that does not apply raises ``unittest.SkipTest`` (pytest reports it skipped).
runarchive's own backends (memory, file, moto, SeaweedFS) run this same suite.
"""

from __future__ import annotations

import threading
import unittest
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from runarchive.errors import (
    InvalidInputError,
    ObjectLockedError,
    ObjectLockUnsupportedError,
    ObjectNotFoundError,
    PreconditionFailedError,
)
from runarchive.store.base import GetResult, IfMatch, Store, probe_conditional_writes

__all__ = ["StoreContract"]

INVALID_KEYS = ("", "/abs", "a//b", "../up", "a/../b", "a/./b", "sp ace", "trailing/")


@contextmanager
def _raises(kind: type[BaseException], rule: str) -> Iterator[None]:
    """Assert that the block raises ``kind``; the failure message states ``rule``."""
    try:
        yield
    except kind:
        return
    except Exception as other:
        raise AssertionError(
            f"{rule}: expected {kind.__name__}, got {type(other).__name__}: {other}"
        ) from other
    raise AssertionError(f"{rule}: expected {kind.__name__}, nothing was raised")


def _check(ok: bool, rule: str) -> None:
    """``assert ok, rule`` that also holds under ``python -O``."""
    if not ok:
        raise AssertionError(rule)


def _race(threads: int, work: Callable[[int], None]) -> None:
    """Run ``work(i)`` on ``threads`` threads released at once; re-raise a failure."""
    barrier = threading.Barrier(threads)
    failures: list[BaseException] = []

    def run(i: int) -> None:
        barrier.wait()
        try:
            work(i)
        except BaseException as exc:  # reported by the test's thread
            failures.append(exc)

    pool = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    if failures:
        raise failures[0]


class StoreContract:
    """Tests every :class:`~runarchive.store.Store` must pass; subclass and define
    :meth:`make_store`.

    ``atomic_conditional_writes`` (default ``True``): the racing tests (8 threads on
    one key) run. runarchive's no-lost-update guarantee needs them to pass; set it to
    ``False`` only for a test double whose conditional writes are not atomic (moto's
    are not), and the racing tests are skipped.
    """

    atomic_conditional_writes: bool = True
    racers: int = 8

    def make_store(self) -> Store:
        """A fresh, empty store (a new bucket, prefix or directory at each call)."""
        raise NotImplementedError("define make_store() in your StoreContract subclass")

    @contextmanager
    def _store(self) -> Iterator[Store]:
        store = self.make_store()
        _check(isinstance(store, Store), "make_store() must return a runarchive Store")
        try:
            yield store
        finally:
            store.close()

    # -- reads and writes ----------------------------------------------------------

    def test_put_get_roundtrip_and_etag(self) -> None:
        with self._store() as store:
            etag = store.put("runs/a/index.json", b"hello")
            got = store.get("runs/a/index.json")
            _check(got.body == b"hello", "get returns the body put wrote")
            _check(got.etag == etag, "get returns the ETag put returned")
            meta = store.head("runs/a/index.json")
            _check(meta is not None, "head finds an object that was put")
            assert meta is not None
            _check((meta.size, meta.etag) == (5, etag), "head gives the size and the ETag")
            _check(meta.key == "runs/a/index.json", "head names the key asked for")

    def test_empty_and_binary_bodies(self) -> None:
        with self._store() as store:
            body = bytes(range(256)) * 4
            store.put("k/bin", body)
            _check(store.get("k/bin").body == body, "bodies are bytes, kept exactly")
            store.put("k/empty", b"")
            _check(store.get("k/empty").body == b"", "an empty body is an object")

    def test_missing_object(self) -> None:
        with self._store() as store:
            with _raises(ObjectNotFoundError, "get of a missing key"):
                store.get("runs/none/index.json")
            _check(store.head("runs/none/index.json") is None, "head of a missing key is None")
            store.delete("runs/none/index.json")  # deleting a missing object is fine

    def test_create_only_refuses_existing(self) -> None:
        with self._store() as store:
            store.put("k/seg", b"first", mode="create")
            with _raises(PreconditionFailedError, "create-only put of an existing key"):
                store.put("k/seg", b"second", mode="create")
            _check(store.get("k/seg").body == b"first", "a refused create changes nothing")

    def test_if_match_compare_and_swap(self) -> None:
        with self._store() as store:
            e1 = store.put("k/index", b"v1", mode="create")
            e2 = store.put("k/index", b"v2", mode=IfMatch(e1))
            _check(store.get("k/index").body == b"v2", "If-Match with the current ETag writes")
            with _raises(PreconditionFailedError, "If-Match with a stale ETag"):
                store.put("k/index", b"v3", mode=IfMatch(e1))
            _check(store.get("k/index").etag == e2, "a refused If-Match changes nothing")
            # AWS answers 404 here, SeaweedFS 412: the contract's answer is one error.
            with _raises(PreconditionFailedError, "If-Match on a missing key"):
                store.put("k/missing", b"x", mode=IfMatch(e1))
            _check(store.head("k/missing") is None, "a refused If-Match creates nothing")

    def test_overwrite(self) -> None:
        with self._store() as store:
            store.put("k", b"1")
            store.put("k", b"2", mode="overwrite")
            _check(store.get("k").body == b"2", "overwrite replaces the body")

    def test_get_if_changed(self) -> None:
        with self._store() as store:
            etag = store.put("k/index", b"v1")
            _check(store.get_if_changed("k/index", etag) is None, "unchanged answers None")
            e2 = store.put("k/index", b"v2")
            got = store.get_if_changed("k/index", etag)
            _check(got == GetResult(b"v2", e2), "changed answers the new body and ETag")
            with _raises(ObjectNotFoundError, "get_if_changed of a missing key"):
                store.get_if_changed("k/none", etag)

    # -- listing and deleting ------------------------------------------------------

    def test_list_sorted_by_key_with_prefix(self) -> None:
        with self._store() as store:
            keys = [
                "runs/b/seg/000000000002",
                "runs/a/index.json",
                "runs/b/seg/000000000001",
                "other",
            ]
            for key in keys:
                store.put(key, key.encode())
            listed = [m.key for m in store.list("runs/")]
            _check(
                listed == sorted(k for k in keys if k.startswith("runs/")),
                f"list gives the keys under the prefix, in key order (got {listed})",
            )
            sizes = {m.key: m.size for m in store.list("runs/b/")}
            _check(
                sizes == {"runs/b/seg/000000000001": 23, "runs/b/seg/000000000002": 23},
                f"list gives each object's size (got {sizes})",
            )
            _check(list(store.list("none/")) == [], "an empty prefix lists nothing")

    def test_list_level(self) -> None:
        with self._store() as store:
            for key in ["d/2025/a", "d/2025/b", "d/2026/x/y", "d/top", "e/other"]:
                store.put(key, b"1")
            dirs, objects = store.list_level("d/")
            _check(dirs == ["d/2025/", "d/2026/"], f"list_level's directories (got {dirs})")
            names = [m.key for m in objects]
            _check(names == ["d/top"], f"list_level's objects (got {names})")

    def test_delete(self) -> None:
        with self._store() as store:
            store.put("runs/x/a", b"1")
            store.delete("runs/x/a")
            _check(store.head("runs/x/a") is None, "a deleted object is gone from head")
            _check(list(store.list("runs/")) == [], "a deleted object is gone from list")
            with _raises(ObjectNotFoundError, "get of a deleted key"):
                store.get("runs/x/a")

    def test_invalid_keys_refused(self) -> None:
        with self._store() as store:
            for key in INVALID_KEYS:
                with _raises(InvalidInputError, f"put of the invalid key {key!r}"):
                    store.put(key, b"x")

    # -- concurrency ---------------------------------------------------------------

    def _skip_unless_atomic(self) -> None:
        if not self.atomic_conditional_writes:
            raise unittest.SkipTest("atomic_conditional_writes = False (a test double)")

    def test_racing_creates_have_exactly_one_winner(self) -> None:
        self._skip_unless_atomic()
        with self._store() as store:
            wins: list[int] = []

            def racer(i: int) -> None:
                try:
                    store.put("race/seg", str(i).encode(), mode="create")
                    wins.append(i)
                except PreconditionFailedError:
                    pass

            _race(self.racers, racer)
            _check(len(wins) == 1, f"racing create-only puts: exactly one wins (won: {wins})")
            _check(store.get("race/seg").body == str(wins[0]).encode(), "the winner's body")

    def test_racing_cas_loses_no_update(self) -> None:
        """Threads each add 5 increments through If-Match retry loops; none is lost."""
        self._skip_unless_atomic()
        with self._store() as store:
            store.put("cas/counter", b"0", mode="create")

            def worker(_: int) -> None:
                for _step in range(5):
                    while True:
                        got = store.get("cas/counter")
                        try:
                            new = str(int(got.body) + 1).encode()
                            store.put("cas/counter", new, mode=IfMatch(got.etag))
                            break
                        except PreconditionFailedError:
                            continue

            _race(self.racers, worker)
            end = int(store.get("cas/counter").body)
            _check(end == 5 * self.racers, f"If-Match increments lost: {5 * self.racers} -> {end}")

    def test_probe_accepts_a_store_that_enforces_conditions(self) -> None:
        with self._store() as store:
            probe_conditional_writes(store)
            _check(list(store.list("_runarchive/")) == [], "the probe leaves nothing behind")

    # -- object locks ----------------------------------------------------------------

    def test_immutable_put_without_retention_is_an_ordinary_write(self) -> None:
        """``immutable=True`` only allows a configured retention; without one, nothing locks."""
        with self._store() as store:
            if store.retention is not None:
                raise unittest.SkipTest("the store applies a retention to immutable puts")
            etag = store.put("runs/a/seg/1", b"segment", mode="create", immutable=True)
            _check(store.get("runs/a/seg/1") == GetResult(b"segment", etag), "immutable put")
            with _raises(PreconditionFailedError, "create-only immutable put of an existing key"):
                store.put("runs/a/seg/1", b"other", mode="create", immutable=True)
            _check(store.lock_reason("runs/a/seg/1") is None, "nothing locks without retention")
            _check(
                store.lock_reason("runs/a/seg/1", bypass_governance=True) is None,
                "nothing locks without retention",
            )
            state = store.lock_state("runs/a/seg/1")
            _check(
                state is None
                or (state.mode, state.legal_hold, state.retained()) == (None, False, False),
                f"no lock state without retention (got {state})",
            )

    def test_delete_with_bypass_governance_removes_an_unlocked_object(self) -> None:
        with self._store() as store:
            store.put("runs/b/seg/1", b"1")
            store.put("runs/b/seg/1", b"2")  # a second version where the bucket keeps them
            store.delete("runs/b/seg/1", bypass_governance=True)
            _check(store.head("runs/b/seg/1") is None, "bypass delete removes the object")
            store.delete("runs/b/seg/missing", bypass_governance=True)  # missing: no error
            _check(list(store.list("runs/")) == [], "bypass delete leaves nothing listed")

    def test_legal_hold_where_the_store_can_lock(self) -> None:
        """A store that can lock honours a legal hold; one that cannot says so."""
        with self._store() as store:
            store.put("runs/c/seg/1", b"1")
            if store.object_lock_enabled():
                store.set_legal_hold("runs/c/seg/1", True)
                _check(
                    store.lock_reason("runs/c/seg/1", bypass_governance=True) == "a legal hold",
                    "a legal hold is a reason not to delete, even bypassing governance",
                )
                with _raises(ObjectLockedError, "bypass delete of an object under legal hold"):
                    store.delete("runs/c/seg/1", bypass_governance=True)
                store.set_legal_hold("runs/c/seg/1", False)
                _check(store.lock_reason("runs/c/seg/1") is None, "a released hold locks nothing")
            else:
                with _raises(ObjectLockUnsupportedError, "legal hold on a store that cannot lock"):
                    store.set_legal_hold("runs/c/seg/1", True)
            store.delete("runs/c/seg/1")
            _check(store.head("runs/c/seg/1") is None, "delete after the hold is released")
