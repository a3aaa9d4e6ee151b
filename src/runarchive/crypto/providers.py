"""Key providers for client-side encryption: who holds the key-encryption keys (KEKs).

runarchive encrypts with a random 256-bit *data key* per run and KEK; a provider
wraps that data key with a KEK it holds, and only the wrapped form is stored in
the bucket. A KEK is named by a *key id* ``<provider>:<id>`` (``local:2026-11``,
``kms:alias/agents``), recorded beside every wrapped data key, so a later reader
knows which key to ask for. ``docs/encryption.md`` describes the scheme.

Providers here: :class:`LocalKeyProvider` (keys from a key file or the
``RUNARCHIVE_ENCRYPTION_KEYS`` variable; AES key wrap, RFC 3394) and
:class:`KmsKeyProvider` (AWS KMS ``GenerateDataKey`` / ``Decrypt`` / ``ReEncrypt``).
Anything implementing :class:`KeyProvider` can be passed as ``key_provider=``.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import secrets
import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from runarchive.errors import ConfigError, KeyUnavailableError

DATA_KEY_BYTES = 32  # AES-256
_LOCAL_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")


class KeyProvider(ABC):
    """Wraps and unwraps data keys with key-encryption keys it holds.

    ``prefix`` is the provider part of the key ids it serves (``local``, ``kms``).
    ``context`` (``{"runarchive:run": run_id}``) is bound to the wrapped key where
    the provider supports it (KMS encryption context, visible in CloudTrail).
    Methods raise :class:`KeyUnavailableError` naming the key id.
    """

    prefix: str
    remote = False  # unwrapping costs a network request (listings then leave data sealed)

    @property
    @abstractmethod
    def current(self) -> str | None:
        """Key id that wraps new data keys (``None``: this provider only reads)."""

    @abstractmethod
    def generate(self, key_id: str, context: Mapping[str, str]) -> tuple[bytes, bytes]:
        """A fresh data key: ``(plaintext, wrapped)``."""

    @abstractmethod
    def unwrap(self, key_id: str, wrapped: bytes, context: Mapping[str, str]) -> bytes:
        """The plaintext of a data key ``key_id`` wrapped."""

    def rewrap(
        self, key_id: str, wrapped: bytes, new_key_id: str, context: Mapping[str, str]
    ) -> bytes:
        """The same data key wrapped by ``new_key_id`` instead (key rotation)."""
        return self.wrap(new_key_id, self.unwrap(key_id, wrapped, context), context)

    @abstractmethod
    def wrap(self, key_id: str, plaintext: bytes, context: Mapping[str, str]) -> bytes:
        """Wrap a data key with ``key_id``."""

    def serves(self, key_id: str) -> bool:
        """Whether ``key_id`` belongs to this provider."""
        return key_id.startswith(self.prefix + ":")


class LocalKeyProvider(KeyProvider):
    """KEKs held by this process: 32-byte keys by id, the first (or ``current``) wraps.

    Wrapping is AES key wrap (RFC 3394): a wrong key for an id is detected by the
    unwrap's integrity check. ``context`` is not bound (the segment's own AES-GCM
    associated data binds ciphertext to its run). Keep the key file out of the
    bucket and out of version control; losing a key loses every run it wrapped.
    """

    prefix = "local"

    def __init__(self, keys: Mapping[str, bytes], current: str | None = None) -> None:
        if not keys:
            raise ConfigError("a local key provider needs at least one key")
        for kid, material in keys.items():
            if not _LOCAL_ID_RE.fullmatch(kid):
                raise ConfigError(
                    f"invalid local key id {kid!r}: use 1-64 characters from [A-Za-z0-9._-]"
                )
            if len(material) != DATA_KEY_BYTES:
                raise ConfigError(
                    f"local key {kid!r} is {len(material)} bytes; keys are 32 random bytes "
                    "(base64: 44 characters; `runarchive keygen` makes one)"
                )
        self._keys = dict(keys)
        first = next(iter(self._keys))
        cur = current or first
        if cur not in self._keys:
            raise ConfigError(f"the current local key {cur!r} is not among the keys given")
        self._current = cur

    @classmethod
    def from_spec(cls, spec: str) -> LocalKeyProvider:
        """Keys from ``id=BASE64[,id=BASE64...]`` (``RUNARCHIVE_ENCRYPTION_KEYS``); the
        first one is current."""
        keys: dict[str, bytes] = {}
        for part in (p.strip() for p in spec.split(",")):
            if not part:
                continue
            kid, sep, b64 = part.partition("=")
            if not sep:
                raise ConfigError(
                    "setting 'encryption_keys' (RUNARCHIVE_ENCRYPTION_KEYS): each key is "
                    "id=BASE64, keys separated by commas (the first one is current)"
                )
            keys[kid.strip()] = _b64key(b64.strip(), kid.strip())
        return cls(keys)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> LocalKeyProvider:
        """Keys from a JSON key file ``{"current": id, "keys": {id: BASE64}}``."""
        p = Path(path)
        try:
            doc = json.loads(p.read_text())
        except FileNotFoundError:
            raise ConfigError(f"key file {p} does not exist (`runarchive keygen --file`)") from None
        except (OSError, ValueError) as exc:
            raise ConfigError(f"key file {p} is not readable JSON ({type(exc).__name__})") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("keys"), dict):
            raise ConfigError(f'key file {p} must hold {{"current": ID, "keys": {{ID: BASE64}}}}')
        keys = {str(k): _b64key(str(v), str(k)) for k, v in doc["keys"].items()}
        current = doc.get("current")
        return cls(keys, str(current) if current is not None else None)

    @property
    def current(self) -> str:
        return f"local:{self._current}"

    def _material(self, key_id: str) -> bytes:
        kid = key_id.removeprefix("local:")
        got = self._keys.get(kid)
        if got is None:
            raise KeyUnavailableError(
                key_id,
                f"key {key_id!r} is not among the configured local keys "
                f"({', '.join('local:' + k for k in self._keys)}): add it to the key file "
                "or RUNARCHIVE_ENCRYPTION_KEYS (old keys must stay for reading)",
            )
        return got

    def generate(self, key_id: str, context: Mapping[str, str]) -> tuple[bytes, bytes]:
        plaintext = secrets.token_bytes(DATA_KEY_BYTES)
        return plaintext, self.wrap(key_id, plaintext, context)

    def wrap(self, key_id: str, plaintext: bytes, context: Mapping[str, str]) -> bytes:
        return aes_key_wrap(self._material(key_id), plaintext)

    def unwrap(self, key_id: str, wrapped: bytes, context: Mapping[str, str]) -> bytes:
        try:
            return aes_key_unwrap(self._material(key_id), wrapped)
        except InvalidUnwrap:
            raise KeyUnavailableError(
                key_id,
                f"the configured key {key_id!r} does not unwrap this data key: it is not the "
                "key that wrapped it (wrong key material under that id?)",
            ) from None


def _b64key(text: str, kid: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"local key {kid!r} is not valid base64") from None


def new_local_key() -> str:
    """32 random bytes, base64: a new local KEK."""
    return base64.b64encode(secrets.token_bytes(DATA_KEY_BYTES)).decode("ascii")


def add_key_to_file(path: str | os.PathLike[str], key_id: str | None = None) -> str:
    """Add a fresh key to a key file (created mode 0600 if missing) and make it current;
    older keys stay for reading. Returns the new key id."""
    p = Path(path)
    doc: dict[str, Any] = {"current": None, "keys": {}}
    if p.exists():
        doc = json.loads(p.read_text())
    kid = key_id or f"k{len(doc['keys']) + 1}-{secrets.token_hex(3)}"
    if not _LOCAL_ID_RE.fullmatch(kid):
        raise ConfigError(f"invalid local key id {kid!r}: use 1-64 characters from [A-Za-z0-9._-]")
    if kid in doc["keys"]:
        raise ConfigError(f"key file {p} already has a key {kid!r}")
    doc["keys"][kid] = new_local_key()
    doc["current"] = kid
    tmp = p.with_name(p.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, p)
    return f"local:{kid}"


class KmsKeyProvider(KeyProvider):
    """KEKs in AWS KMS: data keys come from ``GenerateDataKey`` (AES_256), are opened by
    ``Decrypt`` and rotated by ``ReEncrypt`` (the plaintext never leaves KMS then).

    ``key_id`` (id, ARN or alias) wraps new data keys; ``None`` reads only (KMS
    finds the key of a symmetric ciphertext itself). The encryption context
    ``{"runarchive:run": run_id}`` is bound to every data key. Cost: one KMS
    request per new data key (one per run and key), one ``Decrypt`` per data key a
    process reads (cached for its lifetime), one ``ReEncrypt`` per key rotated.
    Credentials and region come from boto3's chain, like S3's.
    """

    prefix = "kms"
    remote = True

    def __init__(self, key_id: str | None = None, client: Any = None, **client_args: Any) -> None:
        self._key = key_id
        self._client = client
        self._client_args = client_args
        self._lock = threading.Lock()

    def client(self) -> Any:
        """The boto3 KMS client, made on first use (reading needs none until a run
        under a ``kms:`` key is met)."""
        with self._lock:
            if self._client is None:
                import boto3.session  # noqa: PLC0415 - ~0.25 s, only for kms: keys

                args = dict(self._client_args)
                session = boto3.session.Session(profile_name=args.pop("profile", None))
                self._client = session.client("kms", **{k: v for k, v in args.items() if v})
            return self._client

    @property
    def current(self) -> str | None:
        return f"kms:{self._key}" if self._key else None

    def _call(self, key_id: str, op: str, **kwargs: Any) -> dict[str, Any]:
        from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

        try:
            result: dict[str, Any] = getattr(self.client(), op)(**kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            raise KeyUnavailableError(
                key_id,
                f"AWS KMS refused {op} with key {key_id!r} ({code}): check the key exists, is "
                "enabled, and that these credentials may use it (kms:GenerateDataKey, "
                "kms:Decrypt, kms:ReEncrypt*)",
            ) from None
        except BotoCoreError as exc:
            raise KeyUnavailableError(
                key_id, f"AWS KMS unreachable for {op} with key {key_id!r} ({type(exc).__name__})"
            ) from None
        return result

    def generate(self, key_id: str, context: Mapping[str, str]) -> tuple[bytes, bytes]:
        got = self._call(
            key_id,
            "generate_data_key",
            KeyId=key_id.removeprefix("kms:"),
            KeySpec="AES_256",
            EncryptionContext=dict(context),
        )
        return bytes(got["Plaintext"]), bytes(got["CiphertextBlob"])

    def wrap(self, key_id: str, plaintext: bytes, context: Mapping[str, str]) -> bytes:
        got = self._call(
            key_id,
            "encrypt",
            KeyId=key_id.removeprefix("kms:"),
            Plaintext=plaintext,
            EncryptionContext=dict(context),
        )
        return bytes(got["CiphertextBlob"])

    def unwrap(self, key_id: str, wrapped: bytes, context: Mapping[str, str]) -> bytes:
        got = self._call(key_id, "decrypt", CiphertextBlob=wrapped, EncryptionContext=dict(context))
        return bytes(got["Plaintext"])

    def rewrap(
        self, key_id: str, wrapped: bytes, new_key_id: str, context: Mapping[str, str]
    ) -> bytes:
        if not self.serves(new_key_id):
            return super().rewrap(key_id, wrapped, new_key_id, context)
        got = self._call(
            key_id,
            "re_encrypt",
            CiphertextBlob=wrapped,
            SourceEncryptionContext=dict(context),
            DestinationKeyId=new_key_id.removeprefix("kms:"),
            DestinationEncryptionContext=dict(context),
        )
        return bytes(got["CiphertextBlob"])
