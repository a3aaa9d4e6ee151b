"""Keyrings: the data keys of encrypted runs, created, unwrapped and re-wrapped.

Envelope encryption: each run has a random 256-bit data key per key-encryption key
(KEK); a :class:`~runarchive.crypto.providers.KeyProvider` wraps it and only the
wrapped form is stored, in the run index (``keys``) and in the header of every
segment it encrypts. A :class:`Keyring` holds an archive's providers, creates data
keys, unwraps them (once per process) and re-wraps them (``rekey``).

Plaintext key material: besides the providers (which hold the KEKs), only this
module unwraps data keys and only :mod:`runarchive.crypto.sealing` encrypts or
decrypts with them. The flush and compaction code pass the ``(DataKey, bytes)``
pair :meth:`Keyring.write_key` returns on to sealing (and ``engine.levels`` derives
checkpoint name tokens from it) without keeping it. Nothing here logs.
"""

from __future__ import annotations

import base64
import secrets
import threading
from collections.abc import Sequence

from runarchive.config import ArchiveConfig
from runarchive.crypto.providers import KeyProvider, KmsKeyProvider, LocalKeyProvider
from runarchive.errors import CorruptObjectError, KeyUnavailableError
from runarchive.format.model import DataKey, utcnow

__all__ = ["Keyring", "b64", "context", "keyring_for", "unb64"]


def b64(data: bytes) -> str:
    """``data`` as standard base64 text (the form keys and nonces are stored in)."""
    return base64.b64encode(data).decode("ascii")


def unb64(text: str, where: str) -> bytes:
    """The bytes of base64 ``text``; ``CorruptObjectError`` naming ``where`` if invalid."""
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise CorruptObjectError(where, "a base64 field does not decode") from None


def context(run_id: str) -> dict[str, str]:
    """What a provider binds to a run's wrapped data keys (KMS encryption context)."""
    return {"runarchive:run": run_id}


class Keyring:
    """The key providers of an archive: ``writer`` wraps new data keys (``None``: this
    archive writes plaintext); every provider reads. Thread-safe.

    Unwrapped data keys are cached for the process's lifetime (at most 4,096), so a
    run costs one unwrap (one KMS ``Decrypt``) per data key, not per segment.
    """

    def __init__(self, providers: Sequence[KeyProvider], writer: KeyProvider | None) -> None:
        self.providers = list(providers)
        if writer is not None and writer not in self.providers:
            self.providers.insert(0, writer)
        self.writer = writer
        self._plain: dict[tuple[str, str], bytes] = {}
        # Data keys made for a run but not yet in its index (the flush that carries
        # them may be retried): reused, so a retry re-creates the same bytes.
        self._fresh: dict[tuple[str, str], tuple[DataKey, bytes]] = {}
        self._lock = threading.Lock()

    @property
    def writes(self) -> bool:
        """Whether new data of this archive is encrypted."""
        return self.writer is not None and self.writer.current is not None

    @property
    def current(self) -> str | None:
        """The key id that wraps new data keys."""
        return self.writer.current if self.writer is not None else None

    def provider(self, key_id: str) -> KeyProvider:
        for p in self.providers:
            if p.serves(key_id):
                return p
        raise KeyUnavailableError(
            key_id,
            f"no key provider for {key_id!r} is configured: set the encryption settings "
            "(encryption_keys / encryption_key_file for local:…, encryption_kms_key_id or "
            "encryption=kms for kms:…; docs/encryption.md)",
        )

    def plaintext(self, run_id: str, key: DataKey, *, remote: bool = True) -> bytes:
        """The data key ``key`` of ``run_id``, unwrapped (cached). ``remote=False``
        refuses (``KeyUnavailableError``) to ask a remote provider (KMS) for a key
        not cached yet."""
        return self.unwrapped(run_id, key.kek, key.wrapped, remote=remote)

    def unwrapped(self, run_id: str, kek: str, wrapped: str, *, remote: bool = True) -> bytes:
        """:meth:`plaintext` from a data key's ``kek`` and base64 ``wrapped`` alone."""
        cache_key = (kek, wrapped)
        got = self._plain.get(cache_key)
        if got is None and not remote and self.provider(kek).remote:
            raise KeyUnavailableError(kek, f"{kek} not asked: a listing stays local")
        if got is None:
            raw = unb64(wrapped, f"a data key of run {run_id}")
            got = self.provider(kek).unwrap(kek, raw, context(run_id))
            with self._lock:
                if len(self._plain) >= 4096:
                    self._plain.pop(next(iter(self._plain)))
                self._plain[cache_key] = got
        return got

    def key_by_id(
        self, run_id: str, keys: Sequence[DataKey], dek: str, where: str, *, remote: bool = True
    ) -> bytes:
        for key in keys:
            if key.id == dek:
                return self.plaintext(run_id, key, remote=remote)
        with self._lock:
            for fresh, plain in self._fresh.values():
                if fresh.id == dek:
                    return plain
        raise CorruptObjectError(where, f"names data key {dek!r}, which the run index lacks")

    def _writing(self) -> tuple[str, KeyProvider]:
        current, writer = self.current, self.writer
        if current is None or writer is None:
            raise KeyUnavailableError("", "this archive has no key to encrypt with")
        return current, writer

    def _generate(self, run_id: str) -> tuple[DataKey, bytes]:
        current, writer = self._writing()
        plain, wrapped = writer.generate(current, context(run_id))
        made = DataKey(
            id=secrets.token_hex(4), kek=current, wrapped=b64(wrapped), created_at=utcnow()
        )
        return made, plain

    def write_key(self, run_id: str, keys: Sequence[DataKey]) -> tuple[DataKey, bytes]:
        """The data key new data of ``run_id`` is sealed with: the run's key under the
        current KEK, or a new one (the caller adds it to the index it writes)."""
        current, _ = self._writing()
        for key in keys:
            if key.kek == current:
                return key, self.plaintext(run_id, key)
        with self._lock:
            got = self._fresh.get((run_id, current))
        if got is not None:
            return got
        made = self._generate(run_id)
        with self._lock:
            return self._fresh.setdefault((run_id, current), made)

    def new_key(self, run_id: str) -> tuple[DataKey, bytes]:
        """A new data key for ``run_id`` under the current KEK, whatever the run has
        (compaction with ``fresh_key``); :meth:`persisted` caches it once written."""
        made = self._generate(run_id)
        with self._lock:
            self._fresh[(run_id, "new:" + made[0].id)] = made
        return made

    def persisted(self, run_id: str, keys: Sequence[DataKey]) -> None:
        """Move the fresh keys of ``run_id`` that ``keys`` (a written index) now holds
        to the unwrapped-key cache (so the next flush asks no provider)."""
        ids = {k.id for k in keys}
        with self._lock:
            for k in [k for k, (dk, _) in self._fresh.items() if k[0] == run_id and dk.id in ids]:
                dk, plain = self._fresh.pop(k)
                self._plain[(dk.kek, dk.wrapped)] = plain

    def rewrap(self, run_id: str, key: DataKey) -> DataKey | None:
        """``key`` wrapped by the current KEK, or ``None`` if it already is."""
        current = self.current
        if current is None:
            raise KeyUnavailableError("", "rekey needs a current key: configure encryption")
        if key.kek == current:
            return None
        old = self.provider(key.kek)
        new = self.provider(current)
        wrapped = unb64(key.wrapped, f"data key {key.id} of run {run_id}")
        if old is new:
            out = old.rewrap(key.kek, wrapped, current, context(run_id))
        else:
            out = new.wrap(current, old.unwrap(key.kek, wrapped, context(run_id)), context(run_id))
        return key.model_copy(update={"kek": current, "wrapped": b64(out)})


def keyring_for(config: ArchiveConfig, key_provider: KeyProvider | None = None) -> Keyring:
    """The keyring an archive's settings describe. ``key_provider`` (any
    :class:`KeyProvider`) is added first and wraps new data keys. A read-only KMS
    provider is always present (no client is made until a ``kms:`` key is met)."""
    providers: list[KeyProvider] = []
    local: LocalKeyProvider | None = None
    if config.encryption_keys is not None:
        local = LocalKeyProvider.from_spec(config.encryption_keys.get_secret_value())
    elif config.encryption_key_file is not None:
        local = LocalKeyProvider.from_file(config.encryption_key_file)
    kms = KmsKeyProvider(
        config.encryption_kms_key_id,
        region_name=config.region,
        endpoint_url=config.kms_endpoint_url,
        profile=config.profile,
    )
    if key_provider is not None:
        providers.append(key_provider)
    if local is not None:
        providers.append(local)
    providers.append(kms)
    writer: KeyProvider | None = key_provider
    if writer is None and config.encryption == "local":
        writer = local
    elif writer is None and config.encryption == "kms":
        writer = kms
    return Keyring(providers, writer)
