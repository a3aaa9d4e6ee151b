"""The one place that builds a :class:`~runarchive.store.Store` from a URL or a
configuration: :func:`make_store` (what a configuration points at),
:func:`store_for_url` (another bucket or directory with a configuration's other
settings: export destinations, bundles) and :func:`check_store_settings` (the
open-time check that the store honours the lock and encryption settings)."""

from __future__ import annotations

from runarchive.config import ArchiveConfig, load_config, parse_url
from runarchive.errors import ConfigError
from runarchive.store._file import FileStore
from runarchive.store.base import Retention, Store


def make_store(config: ArchiveConfig, *, create: bool = True) -> Store:
    """The store a configuration points at (no request is made). ``create=False``
    (readers): a ``file://`` directory that does not exist raises
    ``BucketNotFoundError`` instead of being created."""
    scheme, where, prefix = parse_url(config.resolved_url)
    if scheme == "file":
        return FileStore(where, create=create)
    # boto3 costs ~0.25 s to import: only an s3:// archive pays it.
    from runarchive.store._s3 import S3Settings, S3Store  # noqa: PLC0415

    return S3Store(
        S3Settings(
            bucket=where,
            prefix=prefix,
            endpoint_url=config.endpoint_url,
            region=config.region,
            profile=config.profile,
            addressing_style=config.addressing_style,
            retry_mode=config.retry_mode,
            max_attempts=config.max_attempts,
            connect_timeout=config.connect_timeout,
            read_timeout=config.read_timeout,
            request_checksum_calculation=config.request_checksum_calculation,
            response_checksum_validation=config.response_checksum_validation,
            multipart_threshold=config.multipart_threshold,
            multipart_part_size=config.multipart_part_size,
            object_lock_mode=config.object_lock_mode,
            object_lock_days=config.object_lock_days,
            sse=config.sse,
            sse_kms_key_id=config.sse_kms_key_id,
            tag_immutable=config.tag_segments,
        )
    )


def store_for_url(url: str, config: ArchiveConfig | None = None, *, create: bool = True) -> Store:
    """The store an ``s3://`` / ``file://`` URL names, with ``config``'s other settings
    (endpoint, region, object lock, SSE) or the ``RUNARCHIVE_*`` environment.
    ``create=False`` (reading a bundle): a missing ``file://`` directory raises
    ``BucketNotFoundError`` instead of being created."""
    base = config.model_dump(exclude={"url"}) if config is not None else {}
    cfg = load_config(**{**base, "url": url})
    store = make_store(cfg, create=create)
    try:
        check_store_settings(cfg, store)
    except BaseException:
        store.close()
        raise
    return store


def check_store_settings(config: ArchiveConfig, store: Store) -> None:
    """Refuse, at open, lock and encryption settings the store cannot honour.

    * ``object_lock_mode`` on a store that cannot lock (``file://``), on a store
      built without that retention (``store=`` given to ``Archive.open``), or on a
      bucket without Object Lock enabled (GetObjectLockConfiguration: 1 request,
      only when a mode is set);
    * ``sse`` on a store that cannot encrypt (``file://``).

    Raises ``ConfigError`` naming the setting; makes no request otherwise.
    """
    mode, days = config.object_lock_mode, config.object_lock_days
    if mode is not None and days is not None:
        if not store.capabilities.object_lock:
            raise ConfigError(
                f"setting 'object_lock_mode' (RUNARCHIVE_OBJECT_LOCK_MODE) = {mode}: "
                f"{store.description} cannot lock objects (a directory has no Object Lock). "
                "Use an s3:// bucket created with Object Lock enabled, or unset the setting"
            )
        if store.retention != Retention(mode, days):
            raise ConfigError(
                f"setting 'object_lock_mode' (RUNARCHIVE_OBJECT_LOCK_MODE) = {mode} for "
                f"{days} days, but the store passed to Archive.open applies "
                f"{store.retention or 'no retention'}: build the store with the same "
                "retention, or let the archive build it from the URL"
            )
        if not store.object_lock_enabled():
            raise ConfigError(
                f"setting 'object_lock_mode' (RUNARCHIVE_OBJECT_LOCK_MODE) = {mode}: "
                f"{store.description} does not have S3 Object Lock enabled, so segments "
                "cannot be locked. Use a bucket created with Object Lock "
                "(aws s3api create-bucket --object-lock-enabled-for-bucket ...), or unset "
                "the setting"
            )
    if config.sse is not None and not store.capabilities.encryption:
        raise ConfigError(
            f"setting 'sse' (RUNARCHIVE_SSE) = {config.sse}: {store.description} cannot "
            "encrypt objects server-side. Encrypt the file system instead and unset it, "
            "or use an s3:// bucket"
        )
