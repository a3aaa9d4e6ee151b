"""The object-store contract every backend implements (see ``runarchive.store``).

A store is a flat key space of immutable-or-CAS byte objects, the subset of S3
that runarchive needs. Keys are relative to the store's root (an S3 prefix or a
directory) and use ``/`` separators; they never start with ``/`` or contain ``..``.

Put modes (the caller states its intent in the signature, as obstore does):

* ``"create"``   — write only if the key does not exist (S3 ``If-None-Match: *``);
  otherwise :class:`~runarchive.errors.PreconditionFailedError`.
* ``"overwrite"`` — unconditional write.
* ``IfMatch(etag)`` — compare-and-swap: write only if the current ETag equals
  ``etag``. A missing key also fails with ``PreconditionFailedError`` on every
  backend (AWS answers 404 there, SeaweedFS 412; both are mapped to the same error).

``immutable=True`` on a put says "this object is never rewritten": the store may
apply its configured retention to it (S3 Object Lock on :class:`S3Store`, emulated
by :class:`MemoryStore`). runarchive passes it for segments only; the run index and
the manifest shards must stay rewritable and never carry a retention.

Object locks (S3 Object Lock semantics): a retention (``GOVERNANCE`` or
``COMPLIANCE`` until a date) and a legal hold each forbid deleting an object.
``delete(key, bypass_governance=True)`` may remove a ``GOVERNANCE`` one; nothing
removes a ``COMPLIANCE`` retention before its date or a legal hold still on. Which
backend does what:

* :class:`S3Store` — real Object Lock, if the bucket was created with it;
* :class:`MemoryStore` — emulates it (for tests): retention on immutable puts when
  built with ``retention=``, legal holds, and refusal of locked deletes/overwrites;
* :class:`FileStore` — cannot lock: ``set_legal_hold`` raises
  :class:`~runarchive.errors.ObjectLockUnsupportedError` and nothing is ever locked.

Backends: :class:`MemoryStore` (reference), :class:`FileStore` (``file://``,
the embedded default), :class:`S3Store` (any S3-compatible bucket through
boto3). :class:`CountingStore` wraps any of them to count requests and bytes.
A custom backend proves it keeps these rules with :class:`runarchive.testing.StoreContract`
(``docs/testing.md``), the suite the built-in backends pass.
"""

from __future__ import annotations

import re
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, Protocol

from runarchive.errors import (
    ConditionalWritesUnsupportedError,
    InvalidInputError,
    ObjectLockUnsupportedError,
    ObjectNotFoundError,
    PreconditionFailedError,
)


@dataclass(frozen=True)
class IfMatch:
    """Put mode: replace the object only if its current ETag is ``etag``."""

    etag: str


PutMode = Literal["create", "overwrite"] | IfMatch
LockMode = Literal["GOVERNANCE", "COMPLIANCE"]


@dataclass(frozen=True)
class Retention:
    """The retention a store applies to immutable puts: ``mode`` for ``days`` days."""

    mode: LockMode
    days: int

    def until(self, now: datetime | None = None) -> datetime:
        """The retain-until date of an object written at ``now`` (default: now, UTC)."""
        return (now or datetime.now(UTC)) + timedelta(days=self.days)


@dataclass(frozen=True)
class LockState:
    """What locks one object: its retention (mode and date, if any) and its legal hold."""

    mode: str | None = None
    retain_until: datetime | None = None
    legal_hold: bool = False

    def retained(self, now: datetime | None = None) -> bool:
        """Whether a retention is in force (its date has not passed)."""
        return self.retain_until is not None and self.retain_until > (now or datetime.now(UTC))

    def reason(self, *, bypass_governance: bool = False) -> str | None:
        """Why a delete is refused, or ``None`` if it is allowed.

        A legal hold and a ``COMPLIANCE`` retention always refuse; a ``GOVERNANCE``
        one refuses unless ``bypass_governance``.
        """
        if self.legal_hold:
            return "a legal hold"
        if not self.retained():
            return None
        assert self.retain_until is not None
        if bypass_governance and self.mode == "GOVERNANCE":
            return None
        return f"{self.mode or 'a'} retention until {self.retain_until.isoformat()}"


@dataclass(frozen=True)
class ObjectMeta:
    """What a listing or a HEAD tells about one object."""

    key: str
    size: int
    etag: str
    modified: datetime | None = None  # last write time (UTC); gc ages orphans by it


Level = tuple[list[str], list[ObjectMeta]]
"""What :meth:`Store.list_level` returns: (directory prefixes, objects), in key order."""


@dataclass(frozen=True)
class GetResult:
    """An object's body with the ETag it had when read (for a later ``IfMatch``)."""

    body: bytes
    etag: str


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do. ``conditional_writes`` is what the backend promises;
    :func:`probe_conditional_writes` checks that the server really enforces it."""

    conditional_writes: bool = True
    multipart: bool = False
    remote: bool = False
    object_lock: bool = False  # can hold/retain objects (S3: if the bucket allows it)
    encryption: bool = False  # can encrypt at rest on request (S3 SSE)


class StoreObserver(Protocol):
    """Told about requests as a store makes them (``runarchive.telemetry`` implements it).

    Calls come from any thread, after the fact, and must be cheap and never raise.
    """

    def request(self, op: str) -> None:
        """One request of kind ``op`` (``get``, ``put``, ``head``, ``list``, ``delete``...)."""

    def retries(self, count: int, source: str) -> None:
        """``count`` more attempts of one request: ``source`` is ``botocore`` (its
        retries of a request) or ``body`` (a GET whose body was cut short, read again)."""

    def conflict(self, key: str) -> None:
        """A conditional write of ``key`` failed (412/409, ``PreconditionFailedError``)."""


_KEY_RE = re.compile(r"^[A-Za-z0-9._\-]+(/[A-Za-z0-9._\-]+)*$")


def check_key(key: str) -> str:
    """Return ``key`` if it is a valid store key, else raise ``InvalidInputError``."""
    if not _KEY_RE.fullmatch(key) or any(part in (".", "..") for part in key.split("/")):
        raise InvalidInputError(f"invalid object key {key!r}")
    return key


class Store(ABC):
    """Base class of object stores. Implementations are thread-safe."""

    capabilities: Capabilities = Capabilities()
    observer: StoreObserver | None = None  # see set_observer

    def set_observer(self, observer: StoreObserver | None) -> None:
        """Report requests, retries and conflicts to ``observer`` (``None``: stop).

        Which calls a store reports is its own: :class:`CountingStore` reports requests
        and conflicts and passes the observer on to the store it wraps; :class:`S3Store`
        reports botocore's retries and its own re-reads.
        """
        self.observer = observer

    @property
    @abstractmethod
    def description(self) -> str:
        """Where this store lives, for messages (never contains credentials)."""

    @abstractmethod
    def get(self, key: str) -> GetResult:
        """Read a whole object. Raises ``ObjectNotFoundError`` if it is missing."""

    def get_if_changed(self, key: str, etag: str) -> GetResult | None:
        """Read ``key`` unless its ETag is still ``etag`` (``None``: unchanged).

        One request: S3 sends ``If-None-Match`` and answers 304 without a body when
        nothing changed. This default reads the whole object (local stores, where a
        read costs no request). Raises ``ObjectNotFoundError`` if the object is missing.
        """
        got = self.get(key)
        return None if got.etag == etag else got

    @abstractmethod
    def head(self, key: str) -> ObjectMeta | None:
        """Size and ETag of an object, or ``None`` if it does not exist."""

    @abstractmethod
    def put(
        self, key: str, body: bytes, *, mode: PutMode = "overwrite", immutable: bool = False
    ) -> str:
        """Write ``body`` at ``key`` under ``mode`` and return the new ETag.

        ``immutable=True`` (default ``False``): this object is never rewritten, so the
        store may apply its configured :attr:`retention` to it. Stores without one
        ignore it. Cost: one request, or 2 + parts for multipart uploads on S3.
        """

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectMeta]:
        """Objects whose key starts with ``prefix``, in key order.

        Cost on S3: one request per 1,000 keys. runarchive's hot paths never list.
        """

    def list_level(self, prefix: str) -> Level:
        """One level below ``prefix`` (which ends with ``/``): the "directories"
        (distinct ``prefix + name + "/"`` of deeper keys) and the objects directly
        under it, each in key order.

        Cost on S3: one delimited LIST per 1,000 entries (the manifest finds its day
        partitions this way without listing their objects). This default lists every
        key below ``prefix``; backends override it.
        """
        dirs: dict[str, None] = {}
        objects: list[ObjectMeta] = []
        for meta in self.list(prefix):
            rest = meta.key[len(prefix) :]
            if "/" in rest:
                dirs.setdefault(prefix + rest.split("/", 1)[0] + "/")
            else:
                objects.append(meta)
        return list(dirs), objects

    @abstractmethod
    def delete(self, key: str, *, bypass_governance: bool = False) -> None:
        """Delete an object; deleting a missing object is not an error.

        ``bypass_governance`` (default ``False``) deletes it for good even under a
        ``GOVERNANCE`` retention (on S3: every version of it; see :class:`S3Store`).
        A legal hold or a ``COMPLIANCE`` retention is never bypassed. Backends
        without object locks ignore the flag.
        """

    @property
    def retention(self) -> Retention | None:
        """The retention this store applies to immutable puts (default: none)."""
        return None

    def lock_state(self, key: str) -> LockState | None:
        """The object's retention and legal hold, or ``None`` if it is missing or the
        backend cannot lock. Cost on S3: one HEAD."""
        return None

    def lock_reason(self, key: str, *, bypass_governance: bool = False) -> str | None:
        """Why ``key`` may not be deleted (legal hold, retention), or ``None``.

        With ``bypass_governance``, a ``GOVERNANCE`` retention is no reason.
        Backends without object locks never lock anything. Cost on S3: one HEAD.
        """
        state = self.lock_state(key)
        return None if state is None else state.reason(bypass_governance=bypass_governance)

    def set_legal_hold(self, key: str, on: bool) -> None:
        """Place (``on=True``) or remove a legal hold on ``key``.

        The default (stores that cannot lock) raises ``ObjectLockUnsupportedError``.
        Cost on S3: one request.
        """
        raise ObjectLockUnsupportedError(
            f"{self.description} cannot place legal holds: use an S3 bucket created with "
            "Object Lock enabled",
            key=key,
        )

    def object_lock_enabled(self) -> bool:
        """Whether this store can lock objects at all (S3: the bucket has Object Lock
        enabled; one request). The default answers ``capabilities.object_lock``."""
        return self.capabilities.object_lock

    def close(self) -> None:  # noqa: B027 - optional hook, most stores hold nothing
        """Release connections and handles."""


def _landed(store: Store, key: str, body: bytes) -> str | None:
    """The ETag of ``key`` if it holds ``body`` (a write whose answer was lost), else None."""
    try:
        got = store.get(key)
    except ObjectNotFoundError:
        return None
    return got.etag if got.body == body else None


def probe_conditional_writes(store: Store) -> None:
    """Check that ``store`` really enforces create-only and If-Match writes.

    Some S3-compatible servers accept the headers and ignore them (all racing
    writers "win"); others refuse every quoted If-Match. Both would silently
    break runarchive's no-lost-update guarantee, so the archive refuses them at
    open. Cost: 5 requests on a sound store; leaves nothing behind.
    """
    key = f"_runarchive/probe/{uuid.uuid4().hex}"
    why = (
        f"{store.description} does not enforce S3 conditional writes "
        "(If-None-Match / If-Match); runarchive needs them so that concurrent writers "
        "never lose an update. Use AWS S3, SeaweedFS, MinIO, R2 or another server that "
        "supports them."
    )
    try:
        try:
            etag = store.put(key, b"probe-1", mode="create")
        except PreconditionFailedError:
            # The key is new: a 412 means this very write landed and its answer was
            # lost (the client's retry then met the object). 1 GET, only then.
            landed = _landed(store, key, b"probe-1")
            if landed is None:
                raise
            etag = landed
        try:
            store.put(key, b"probe-2", mode="create")
        except PreconditionFailedError:
            pass
        else:
            raise ConditionalWritesUnsupportedError(
                why + " (a create-only write replaced an existing object)", key=key
            )
        try:
            store.put(key, b"probe-3", mode=IfMatch('"0123456789abcdef0123456789abcdef"'))
        except PreconditionFailedError:
            pass
        else:
            raise ConditionalWritesUnsupportedError(
                why + " (an If-Match write with a wrong ETag succeeded)", key=key
            )
        try:
            store.put(key, b"probe-4", mode=IfMatch(etag))
        except PreconditionFailedError as exc:
            if _landed(store, key, b"probe-4") is not None:
                return  # it landed; the 412 answered a retry of it (a lost response)
            raise ConditionalWritesUnsupportedError(
                why + " (an If-Match write with the current ETag was refused)", key=key
            ) from exc
    finally:
        store.delete(key)
