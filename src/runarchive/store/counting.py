"""A store wrapper that counts requests and bytes, so tests can assert request budgets."""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Iterator

from runarchive.errors import PreconditionFailedError
from runarchive.store.base import (
    GetResult,
    Level,
    LockState,
    ObjectMeta,
    PutMode,
    Retention,
    Store,
    StoreObserver,
)


class CountingStore(Store):
    """Delegates to ``inner`` and counts each call by operation name.

    ``counts["put"]``, ``counts["get"]``, ... are requests as the caller made them
    (a multipart upload counts as one ``put``, ``lock_state``/``lock_reason`` as a
    ``head``, a ``delete`` with ``bypass_governance`` as one ``delete`` although S3
    makes one LIST plus one DELETE per version); ``bytes_in`` / ``bytes_out`` are
    object bytes read and written. An observer (:meth:`set_observer`) is told of each
    request as counted here and of each failed conditional write.
    """

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.capabilities = inner.capabilities
        self.counts: Counter[str] = Counter()
        self.bytes_in = 0
        self.bytes_out = 0
        self.recent: deque[tuple[str, str]] = deque(maxlen=10_000)  # (op, key), newest last
        self._lock = threading.Lock()

    @property
    def description(self) -> str:
        return self.inner.description

    @property
    def total(self) -> int:
        """All requests counted so far."""
        return sum(self.counts.values())

    def reset(self) -> None:
        """Start counting from zero."""
        with self._lock:
            self.counts.clear()
            self.recent.clear()
            self.bytes_in = self.bytes_out = 0

    def set_observer(self, observer: StoreObserver | None) -> None:
        self.observer = observer
        self.inner.set_observer(observer)

    def _count(self, op: str, key: str, bytes_in: int = 0, bytes_out: int = 0) -> None:
        with self._lock:
            self.counts[op] += 1
            self.recent.append((op, key))
            self.bytes_in += bytes_in
            self.bytes_out += bytes_out
        if self.observer is not None:
            self.observer.request(op)

    def get(self, key: str) -> GetResult:
        self._count("get", key)  # before the call: a failed request is still a request
        result = self.inner.get(key)
        with self._lock:
            self.bytes_in += len(result.body)
        return result

    def get_if_changed(self, key: str, etag: str) -> GetResult | None:
        self._count("get", key)
        result = self.inner.get_if_changed(key, etag)
        if result is not None:
            with self._lock:
                self.bytes_in += len(result.body)
        return result

    def head(self, key: str) -> ObjectMeta | None:
        self._count("head", key)
        return self.inner.head(key)

    def put(
        self, key: str, body: bytes, *, mode: PutMode = "overwrite", immutable: bool = False
    ) -> str:
        self._count("put", key, bytes_out=len(body))
        try:
            return self.inner.put(key, body, mode=mode, immutable=immutable)
        except PreconditionFailedError:
            if self.observer is not None:
                self.observer.conflict(key)
            raise

    def list(self, prefix: str = "") -> Iterator[ObjectMeta]:
        self._count("list", prefix)
        yield from self.inner.list(prefix)

    def list_level(self, prefix: str) -> Level:
        self._count("list", prefix)
        return self.inner.list_level(prefix)

    @property
    def retention(self) -> Retention | None:
        return self.inner.retention

    def lock_state(self, key: str) -> LockState | None:
        self._count("head", key)
        return self.inner.lock_state(key)

    def set_legal_hold(self, key: str, on: bool) -> None:
        self._count("legal_hold", key)
        self.inner.set_legal_hold(key, on)

    def object_lock_enabled(self) -> bool:
        self._count("lock_config", "")
        return self.inner.object_lock_enabled()

    def delete(self, key: str, *, bypass_governance: bool = False) -> None:
        self._count("delete", key)
        self.inner.delete(key, bypass_governance=bypass_governance)

    def close(self) -> None:
        self.inner.close()
