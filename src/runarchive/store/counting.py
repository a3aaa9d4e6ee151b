"""A store wrapper that counts requests and bytes, so tests can assert request budgets."""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Iterator

from runarchive.store.base import GetResult, ObjectMeta, PutMode, Store


class CountingStore(Store):
    """Delegates to ``inner`` and counts each call by operation name.

    ``counts["put"]``, ``counts["get"]``, ... are requests as the caller made them
    (a multipart upload counts as one ``put``); ``bytes_in`` / ``bytes_out`` are
    object bytes read and written.
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

    def _count(self, op: str, key: str, bytes_in: int = 0, bytes_out: int = 0) -> None:
        with self._lock:
            self.counts[op] += 1
            self.recent.append((op, key))
            self.bytes_in += bytes_in
            self.bytes_out += bytes_out

    def get(self, key: str) -> GetResult:
        self._count("get", key)  # before the call: a failed request is still a request
        result = self.inner.get(key)
        with self._lock:
            self.bytes_in += len(result.body)
        return result

    def head(self, key: str) -> ObjectMeta | None:
        self._count("head", key)
        return self.inner.head(key)

    def put(self, key: str, body: bytes, *, mode: PutMode = "overwrite") -> str:
        self._count("put", key, bytes_out=len(body))
        return self.inner.put(key, body, mode=mode)

    def list(self, prefix: str = "") -> Iterator[ObjectMeta]:
        self._count("list", prefix)
        yield from self.inner.list(prefix)

    def lock_reason(self, key: str) -> str | None:
        self._count("head", key)
        return self.inner.lock_reason(key)

    def delete(self, key: str) -> None:
        self._count("delete", key)
        self.inner.delete(key)

    def close(self) -> None:
        self.inner.close()
