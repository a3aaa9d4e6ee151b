"""The one place that builds a :class:`~runarchive.store.Store` from a configuration's URL."""

from __future__ import annotations

from runarchive.config import ArchiveConfig, parse_url
from runarchive.store._file import FileStore
from runarchive.store._s3 import S3Settings, S3Store
from runarchive.store.base import Store


def make_store(config: ArchiveConfig, *, create: bool = True) -> Store:
    """The store a configuration points at (no request is made). ``create=False``
    (readers): a ``file://`` directory that does not exist raises
    ``BucketNotFoundError`` instead of being created."""
    scheme, where, prefix = parse_url(config.resolved_url)
    if scheme == "file":
        return FileStore(where, create=create)
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
