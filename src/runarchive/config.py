"""Configuration: one typed, validated object, also read from ``RUNARCHIVE_*`` variables.

Precedence: arguments to :meth:`Archive.open` > ``RUNARCHIVE_*`` environment
variables > defaults. Nested policy fields use ``__``:
``RUNARCHIVE_POLICY__KEEP_LAST=50``. An invalid value raises ``ConfigError``
naming the setting and its variable; numbers must be finite and within the range
each field declares (the error says which). A ``RUNARCHIVE_*`` variable that names
no setting is an error too (with the closest name), except the few variables in
:data:`NOT_SETTINGS`. S3 credentials are never settings here:
boto3's standard chain (environment, ``AWS_PROFILE``, SSO, instance roles) finds
them; ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` are honoured by boto3 itself.
"""

from __future__ import annotations

import difflib
import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Self
from urllib.parse import unquote, urlparse

import annotated_types
from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from runarchive.errors import ConfigError
from runarchive.policy import Policy

DEFAULT_HOME = Path(".runarchive")
MiB = 1024 * 1024
GiB = 1024 * MiB
INT64_MAX = 2**63 - 1  # SQLite's INTEGER: larger counts and sizes would overflow the cache
MAX_SECONDS = 1e9  # ~31.7 years: "never" for a duration, yet a valid timedelta and timeout
MAX_TIMEOUT = 3600.0  # seconds for one S3 connect or read
MAX_PRICE = 1e6  # $ per unit in the cost estimates
MAX_DAYS = 36500  # retention, as S3 Object Lock allows

ENV_PREFIX = "RUNARCHIVE_"
NOT_SETTINGS: dict[str, str] = {
    "RUNARCHIVE_FAULT_POINT": "crash tests only: a named point where the process kills "
    "itself (runarchive.faults, docs/design.md)",
}
"""``RUNARCHIVE_*`` variables runarchive reads that are not settings. Every other
``RUNARCHIVE_*`` variable must name a setting (see :func:`unknown_variables`)."""


class ArchiveConfig(BaseSettings):
    """Every setting of an archive. Field docs are the reference (``docs/config.md``)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
        allow_inf_nan=False,
    )

    url: str | None = Field(
        default=None,
        description="s3://bucket/prefix or file:///dir; unset: file://./.runarchive/archive",
    )
    cache_dir: Path = Field(
        default=DEFAULT_HOME / "cache", description="local write-through cache directory"
    )
    durability: Literal["local", "remote"] = Field(
        default="local",
        description="ack after local fsync, or only once the record is in the bucket",
    )
    flush_records: int = Field(
        default=256, ge=1, le=INT64_MAX, description="flush after this many records"
    )
    flush_bytes: int = Field(
        default=8 * MiB,
        ge=1,
        le=INT64_MAX,
        description="flush when the next segment would hold this much",
    )
    flush_age: float = Field(
        default=5.0,
        gt=0,
        le=MAX_SECONDS,
        description="flush when the oldest pending record is this old (s)",
    )
    max_segment_records: int = Field(
        default=4096,
        ge=1,
        le=INT64_MAX,
        description="split a backlog into segments of at most this many",
    )
    policy: Policy = Field(default_factory=Policy, description="which checkpoints to archive")
    compression_level: int = Field(default=3, ge=1, le=22, description="zstd level")
    max_record_bytes: int = Field(
        default=256 * MiB,
        ge=1024,
        le=INT64_MAX,
        description="largest JSON of one checkpoint or event; larger ones are refused",
    )
    cache_max_unflushed_bytes: int = Field(
        default=1024 * MiB,
        ge=1,
        le=INT64_MAX,
        description="unflushed record bytes the cache may hold; past it appends raise "
        "BackpressureError",
    )
    cache_keep_records: int = Field(
        default=100,
        ge=0,
        le=INT64_MAX,
        description="archived records kept in the cache per run for reads",
    )
    check_conditional_writes: bool = Field(
        default=True, description="probe at open that the bucket enforces conditional writes"
    )
    read_back: bool = Field(
        default=True,
        description="before a run is listed as ended, at close() and every read_back_seconds, "
        "check that the bucket holds the index and segments this host wrote (1 conditional "
        "GET + 1 LIST per 1,000 segments per run) and heal what it lacks",
    )
    read_back_seconds: float = Field(
        default=60.0,
        ge=1,
        le=MAX_SECONDS,
        description="how often the flusher reads back runs it archived records of since",
    )
    restore_workers: int = Field(default=8, ge=1, le=64, description="parallel segment GETs")
    lease_seconds: float = Field(
        default=60.0,
        ge=3,
        le=MAX_SECONDS,
        description="a running run's lease; renewed every third of it",
    )
    host_id: str = Field(
        default_factory=socket.gethostname,
        min_length=1,
        description="this host's name in the manifest (owner of its runs)",
    )
    live_compaction: bool = Field(
        default=True,
        description="the writer merges a running run's segments as they pile up (levels), "
        "re-applying the policy over the whole run",
    )
    compaction_fanout: int = Field(
        default=8, ge=2, le=64, description="live compaction merges this many segments of a level"
    )
    compaction_max_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1024,
        le=1024**3,
        description="live compaction writes no merged segment above this raw size",
    )
    gc_grace_seconds: float = Field(
        default=3600.0,
        ge=0,
        le=MAX_SECONDS,
        description="gc deletes orphan and retired segments only once older than this",
    )
    retention_days: int | None = Field(
        default=None,
        ge=1,
        le=MAX_DAYS,
        description="gc deletes runs that ended more than this many days ago (unless locked)",
    )
    telemetry: bool = Field(
        default=True,
        description="report OpenTelemetry spans and metrics if opentelemetry-api is "
        "installed (runarchive[otel]); false: never import it",
    )
    # Cost estimates (``runarchive stats``): AWS S3 Standard us-east-1 list prices by default
    price_storage_gb_month: float = Field(
        default=0.023,
        ge=0,
        le=MAX_PRICE,
        description="storage price, $ per GB (2^30 bytes) per month",
    )
    price_put_per_1000: float = Field(
        default=0.005,
        ge=0,
        le=MAX_PRICE,
        description="$ per 1,000 PUT, COPY, POST or LIST requests",
    )
    price_get_per_1000: float = Field(
        default=0.0004, ge=0, le=MAX_PRICE, description="$ per 1,000 GET, HEAD and other requests"
    )
    # S3 only
    endpoint_url: str | None = Field(default=None, description="S3 endpoint (MinIO, SeaweedFS...)")
    region: str | None = Field(default=None, description="S3 region; boto3's default if unset")
    profile: str | None = Field(default=None, description="AWS profile name")
    addressing_style: Literal["auto", "path", "virtual"] = "auto"
    retry_mode: Literal["standard", "adaptive"] = "standard"
    max_attempts: int = Field(default=5, ge=1, le=20)
    connect_timeout: float = Field(default=5.0, gt=0, le=MAX_TIMEOUT)
    read_timeout: float = Field(default=30.0, gt=0, le=MAX_TIMEOUT)
    request_checksum_calculation: Literal["when_supported", "when_required"] = "when_supported"
    response_checksum_validation: Literal["when_supported", "when_required"] = "when_supported"
    # S3's limits: a single PUT and a part are at most 5 GiB
    multipart_threshold: int = Field(default=64 * MiB, ge=5 * MiB, le=5 * GiB)
    multipart_part_size: int = Field(default=16 * MiB, ge=5 * MiB, le=5 * GiB)
    # S3 only: retention locks and encryption at rest (docs/config.md, docs/design.md)
    object_lock_mode: Literal["GOVERNANCE", "COMPLIANCE"] | None = Field(
        default=None,
        description="S3 Object Lock retention of every segment; the bucket must have "
        "Object Lock enabled (checked at open, 1 request)",
    )
    object_lock_days: int | None = Field(
        default=None, ge=1, le=MAX_DAYS, description="retention days; required with a mode"
    )
    allow_compliance_lock: bool = Field(
        default=False,
        description="opt-in to object_lock_mode=COMPLIANCE (irreversible: nobody, root "
        "included, can delete the segments before the retention ends)",
    )
    sse: Literal["AES256", "aws:kms"] | None = Field(
        default=None, description="server-side encryption of every object written"
    )
    sse_kms_key_id: str | None = Field(
        default=None,
        min_length=1,
        description='KMS key id/ARN/alias, only with sse="aws:kms"; unset: the bucket\'s key',
    )
    # Client-side encryption (docs/encryption.md)
    encryption: Literal["local", "kms"] | None = Field(
        default=None,
        description="encrypt new data client-side (AES-256-GCM) with data keys wrapped by "
        "the local keys or by AWS KMS; unset: write plaintext (encrypted runs stay "
        "readable with their keys configured)",
    )
    encryption_keys: SecretStr | None = Field(
        default=None,
        description="local keys as id=BASE64[,id=BASE64...] (32 bytes each); the first "
        "wraps new data keys, the others are kept for reading",
    )
    encryption_key_file: Path | None = Field(
        default=None,
        description='local key file {"current": id, "keys": {id: BASE64}} '
        "(`runarchive keygen --file`)",
    )
    encryption_kms_key_id: str | None = Field(
        default=None, min_length=1, description="KMS key (id, ARN or alias) for encryption=kms"
    )
    encryption_required: bool = Field(
        default=False,
        description="refuse plaintext: readers reject runs and segments that are not "
        "encrypted (a replaced index), writers refuse to open without a key to encrypt",
    )
    kms_endpoint_url: str | None = Field(
        default=None, description="AWS KMS endpoint (LocalStack, moto); unset: AWS's"
    )
    tag_segments: bool = Field(
        default=True,
        description="tag segment objects runarchive-object=segment (for lifecycle rules)",
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is not None:
            parse_url(value)
        return value

    @field_validator("object_lock_mode", mode="before")
    @classmethod
    def _upper_lock_mode(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("sse", mode="before")
    @classmethod
    def _normalise_sse(cls, value: object) -> object:
        if isinstance(value, str):
            return {"aes256": "AES256", "aws:kms": "aws:kms"}.get(value.lower(), value)
        return value

    @model_validator(mode="after")
    def _check_lock_and_encryption(self) -> Self:
        if self.object_lock_mode is not None and self.object_lock_days is None:
            raise ValueError(
                "setting 'object_lock_days' (RUNARCHIVE_OBJECT_LOCK_DAYS) is required with "
                f"object_lock_mode={self.object_lock_mode}: give the retention in days (>= 1)"
            )
        if self.object_lock_days is not None and self.object_lock_mode is None:
            raise ValueError(
                "setting 'object_lock_days' (RUNARCHIVE_OBJECT_LOCK_DAYS) needs "
                "'object_lock_mode' (RUNARCHIVE_OBJECT_LOCK_MODE) = GOVERNANCE or COMPLIANCE; "
                "set both or neither"
            )
        if self.object_lock_mode == "COMPLIANCE" and not self.allow_compliance_lock:
            raise ValueError(
                "setting 'object_lock_mode' (RUNARCHIVE_OBJECT_LOCK_MODE) = COMPLIANCE is "
                "irreversible: no one, the account root included, can delete or shorten the "
                "retention of a segment before it ends. Use GOVERNANCE, or set "
                "'allow_compliance_lock' (RUNARCHIVE_ALLOW_COMPLIANCE_LOCK) = true to opt in"
            )
        if self.encryption_keys is not None and self.encryption_key_file is not None:
            raise ValueError(
                "settings 'encryption_keys' (RUNARCHIVE_ENCRYPTION_KEYS) and "
                "'encryption_key_file' (RUNARCHIVE_ENCRYPTION_KEY_FILE) are both set: "
                "give the local keys one way"
            )
        if self.encryption == "local" and (
            self.encryption_keys is None and self.encryption_key_file is None
        ):
            raise ValueError(
                "setting 'encryption' (RUNARCHIVE_ENCRYPTION) = local needs "
                "'encryption_keys' (RUNARCHIVE_ENCRYPTION_KEYS) or 'encryption_key_file' "
                "(RUNARCHIVE_ENCRYPTION_KEY_FILE); `runarchive keygen --file keys.json` makes one"
            )
        if self.encryption == "kms" and self.encryption_kms_key_id is None:
            raise ValueError(
                "setting 'encryption' (RUNARCHIVE_ENCRYPTION) = kms needs "
                "'encryption_kms_key_id' (RUNARCHIVE_ENCRYPTION_KMS_KEY_ID): the KMS key id, "
                "ARN or alias that wraps new data keys"
            )
        if self.sse_kms_key_id is not None and self.sse != "aws:kms":
            raise ValueError(
                "setting 'sse_kms_key_id' (RUNARCHIVE_SSE_KMS_KEY_ID) needs "
                "'sse' (RUNARCHIVE_SSE) = aws:kms; unset it, or set sse=aws:kms"
            )
        return self

    @property
    def resolved_url(self) -> str:
        """The archive URL, with the embedded default filled in."""
        return self.url or (DEFAULT_HOME / "archive").absolute().as_uri()


def parse_url(url: str) -> tuple[str, str, str]:
    """Split an archive URL into ``(scheme, bucket_or_dir, prefix)``; ``ValueError`` if bad."""
    parsed = urlparse(url)
    if parsed.scheme == "s3":
        bucket = parsed.netloc
        if not 3 <= len(bucket) <= 63 or bucket != bucket.lower() or "_" in bucket:
            raise ValueError(
                f"invalid bucket name {bucket!r} in {url!r}: S3 bucket names are 3-63 "
                "lowercase letters, digits, dots and hyphens"
            )
        return "s3", bucket, parsed.path.strip("/")
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"file URL {url!r} must be file:///absolute/path")
        if not parsed.path:
            raise ValueError(f"file URL {url!r} has no path")
        return "file", unquote(parsed.path), ""
    raise ValueError(f"unsupported archive URL {url!r}: use s3://bucket/prefix or file:///dir")


def _setting_variables() -> set[str]:
    names = {ENV_PREFIX + name.upper() for name in ArchiveConfig.model_fields}
    names |= {f"{ENV_PREFIX}POLICY__{name.upper()}" for name in Policy.model_fields}
    return names


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """``RUNARCHIVE_*`` variables of ``environ`` (default: ``os.environ``) that name no
    setting and are not in :data:`NOT_SETTINGS`, sorted. Names are matched
    case-insensitively, as the settings read them."""
    env = os.environ if environ is None else environ
    known = _setting_variables() | set(NOT_SETTINGS)
    return sorted(k for k in env if k.upper().startswith(ENV_PREFIX) and k.upper() not in known)


def _check_environment() -> None:
    unknown = unknown_variables()
    if not unknown:
        return
    known = sorted(v.removeprefix(ENV_PREFIX) for v in _setting_variables())
    problems = []
    for name in unknown:  # never the value: it may be a key
        rest = name.upper().removeprefix(ENV_PREFIX)  # the shared prefix would match anything
        close = difflib.get_close_matches(rest, known, n=1, cutoff=0.6)
        hint = f" (did you mean {ENV_PREFIX}{close[0]}?)" if close else ""
        problems.append(f"unknown environment variable {name}{hint}")
    raise ConfigError(
        "invalid configuration: "
        + "; ".join(problems)
        + ". No setting has this name: fix or unset it (the settings and their variables "
        "are listed in docs/config.md)"
    )


def _accepted(loc: tuple[int | str, ...]) -> str | None:
    """``accepted: an integer >= 1 and <= ...`` for a numeric setting, else ``None``."""
    model: type[BaseModel] | None = ArchiveConfig
    info: FieldInfo | None = None
    for part in loc:
        info = model.model_fields.get(str(part)) if model is not None else None
        if info is None:
            return None
        ann = info.annotation
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    assert info is not None
    kinds = {info.annotation, *getattr(info.annotation, "__args__", ())}
    if bool in kinds or not kinds & {int, float}:
        return None
    bounds = []
    for m in info.metadata:
        for attr, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if isinstance(m, getattr(annotated_types, attr.capitalize())):
                value = getattr(m, attr)
                shown = f"{int(value):,}" if float(value).is_integer() else f"{value:g}"
                bounds.append(f"{op} {shown}")
    kind = "an integer" if int in kinds else "a finite number"
    unset = " (or unset)" if type(None) in kinds else ""
    return f"accepted: {kind} {' and '.join(bounds)}{unset}".rstrip()


def load_config(**overrides: Any) -> ArchiveConfig:
    """Build the configuration from ``overrides`` and the environment, or raise ``ConfigError``."""
    _check_environment()
    try:
        return ArchiveConfig(**{k: v for k, v in overrides.items() if v is not None})
    except SettingsError as exc:  # a variable of a nested setting that is not JSON
        m = re.search(r'field "([^"]+)"', str(exc))
        field = m.group(1) if m else "policy"
        env = ENV_PREFIX + field.upper()
        raise ConfigError(
            f"invalid configuration: setting {field!r} ({env}): the variable is not valid "
            f"JSON; give an object, e.g. {env}='{{\"keep_last\": 50}}', or set its fields "
            f"one by one, e.g. {env}__KEEP_LAST=50"
        ) from None
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            if not loc:  # a check across settings: its message names them
                problems.append(err["msg"].removeprefix("Value error, "))
                continue
            env = ENV_PREFIX + loc.upper().replace(".", "__")
            accepted = _accepted(err["loc"])
            problems.append(
                f"setting {loc!r} ({env}): {err['msg']}" + (f"; {accepted}" if accepted else "")
            )
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None
