"""The store contract: every backend (memory, file, moto, SeaweedFS over HTTP) passes it."""

from __future__ import annotations

import threading

import pytest
from conftest import StoreFactory

from runarchive.errors import (
    InvalidInputError,
    ObjectLockedError,
    ObjectLockUnsupportedError,
    ObjectNotFoundError,
    PreconditionFailedError,
)
from runarchive.store import GetResult, IfMatch, MemoryStore, probe_conditional_writes


def test_put_get_roundtrip_and_etag(make_store: StoreFactory) -> None:
    store = make_store()
    etag = store.put("runs/a/index.json", b"hello")
    got = store.get("runs/a/index.json")
    assert got.body == b"hello"
    assert got.etag == etag
    meta = store.head("runs/a/index.json")
    assert meta is not None
    assert (meta.size, meta.etag) == (5, etag)


def test_missing_object(make_store: StoreFactory) -> None:
    store = make_store()
    with pytest.raises(ObjectNotFoundError):
        store.get("runs/none/index.json")
    assert store.head("runs/none/index.json") is None
    store.delete("runs/none/index.json")  # deleting a missing object is fine


def test_create_only_refuses_existing(make_store: StoreFactory) -> None:
    store = make_store()
    store.put("k/seg", b"first", mode="create")
    with pytest.raises(PreconditionFailedError):
        store.put("k/seg", b"second", mode="create")
    assert store.get("k/seg").body == b"first"


def test_if_match_compare_and_swap(make_store: StoreFactory) -> None:
    store = make_store()
    e1 = store.put("k/index", b"v1", mode="create")
    e2 = store.put("k/index", b"v2", mode=IfMatch(e1))
    assert store.get("k/index").body == b"v2"
    with pytest.raises(PreconditionFailedError):
        store.put("k/index", b"v3", mode=IfMatch(e1))  # stale etag
    assert store.get("k/index").etag == e2
    with pytest.raises(PreconditionFailedError):
        store.put("k/missing", b"x", mode=IfMatch(e1))  # AWS 404 / SeaweedFS 412: same error


def test_overwrite(make_store: StoreFactory) -> None:
    store = make_store()
    store.put("k", b"1")
    store.put("k", b"2", mode="overwrite")
    assert store.get("k").body == b"2"


def test_list_sorted_by_key_with_prefix(make_store: StoreFactory) -> None:
    store = make_store()
    keys = ["runs/b/seg/000000000002", "runs/a/index.json", "runs/b/seg/000000000001", "other"]
    for key in keys:
        store.put(key, key.encode())
    listed = [m.key for m in store.list("runs/")]
    assert listed == sorted(k for k in keys if k.startswith("runs/"))
    sizes = {m.key: m.size for m in store.list("runs/b/")}
    assert sizes == {"runs/b/seg/000000000001": 23, "runs/b/seg/000000000002": 23}


def test_delete(make_store: StoreFactory) -> None:
    store = make_store()
    store.put("runs/x/a", b"1")
    store.delete("runs/x/a")
    assert store.head("runs/x/a") is None
    assert list(store.list("runs/")) == []


@pytest.mark.parametrize("key", ["", "/abs", "a//b", "../up", "a/../b", "a/./b", "sp ace"])
def test_invalid_keys_refused(make_store: StoreFactory, key: str) -> None:
    store = make_store()
    with pytest.raises(InvalidInputError):
        store.put(key, b"x")


def test_racing_creates_have_exactly_one_winner(make_race_store: StoreFactory) -> None:
    store = make_race_store()
    wins: list[int] = []
    losses: list[int] = []
    barrier = threading.Barrier(8)

    def racer(i: int) -> None:
        barrier.wait()
        try:
            store.put("race/seg", str(i).encode(), mode="create")
            wins.append(i)
        except PreconditionFailedError:
            losses.append(i)

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    assert len(losses) == 7
    assert store.get("race/seg").body == str(wins[0]).encode()


def test_racing_cas_loses_no_update(make_race_store: StoreFactory) -> None:
    """8 threads each add 5 increments through If-Match retry loops: the counter ends at 40."""
    store = make_race_store()
    store.put("cas/counter", b"0", mode="create")

    def worker() -> None:
        for _ in range(5):
            while True:
                got = store.get("cas/counter")
                try:
                    store.put(
                        "cas/counter", str(int(got.body) + 1).encode(), mode=IfMatch(got.etag)
                    )
                    break
                except PreconditionFailedError:
                    continue

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.get("cas/counter").body == b"40"


def test_probe_accepts_a_store_that_enforces_conditions(make_store: StoreFactory) -> None:
    store = make_store()
    probe_conditional_writes(store)
    assert list(store.list("_runarchive/")) == []  # the probe leaves nothing behind


def test_immutable_put_without_retention_is_an_ordinary_write(make_store: StoreFactory) -> None:
    """``immutable=True`` only allows a configured retention; without one, nothing locks."""
    store = make_store()
    etag = store.put("runs/a/seg/1", b"segment", mode="create", immutable=True)
    assert store.get("runs/a/seg/1") == GetResult(b"segment", etag)
    with pytest.raises(PreconditionFailedError):
        store.put("runs/a/seg/1", b"other", mode="create", immutable=True)
    assert store.retention is None
    assert store.lock_reason("runs/a/seg/1") is None
    assert store.lock_reason("runs/a/seg/1", bypass_governance=True) is None
    state = store.lock_state("runs/a/seg/1")
    assert state is None or (state.mode, state.legal_hold, state.retained()) == (
        None,
        False,
        False,
    )


def test_delete_with_bypass_governance_removes_an_unlocked_object(
    make_store: StoreFactory,
) -> None:
    store = make_store()
    store.put("runs/b/seg/1", b"1")
    store.put("runs/b/seg/1", b"2")  # a second version where the bucket keeps versions
    store.delete("runs/b/seg/1", bypass_governance=True)
    assert store.head("runs/b/seg/1") is None
    store.delete("runs/b/seg/missing", bypass_governance=True)  # missing: not an error
    assert list(store.list("runs/")) == []


def test_legal_hold_where_the_store_can_lock(make_store: StoreFactory) -> None:
    """Memory emulates holds; a directory, and a bucket without Object Lock, refuse them."""
    store = make_store()
    store.put("runs/c/seg/1", b"1")
    if isinstance(store, MemoryStore):
        store.set_legal_hold("runs/c/seg/1", True)
        assert store.lock_reason("runs/c/seg/1", bypass_governance=True) == "a legal hold"
        with pytest.raises(ObjectLockedError):
            store.delete("runs/c/seg/1")
        store.set_legal_hold("runs/c/seg/1", False)
        assert store.object_lock_enabled()
    else:
        # FileStore cannot lock at all; these S3 test buckets lack Object Lock.
        with pytest.raises(ObjectLockUnsupportedError):
            store.set_legal_hold("runs/c/seg/1", True)
        assert not store.object_lock_enabled()
    store.delete("runs/c/seg/1")
    assert store.head("runs/c/seg/1") is None
