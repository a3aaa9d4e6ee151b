"""Store errors carry the S3 request id and host id of the answer (support asks for them)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from support.backends import s3_store_for
from support.servers import S3Server

from runarchive import Archive
from runarchive.errors import (
    BucketNotFoundError,
    ObjectLockedError,
    ObjectNotFoundError,
    PreconditionFailedError,
    StoreError,
    StoreUnavailableError,
)
from runarchive.store import IfMatch, S3Settings, S3Store


def _moto_store(bucket: str = "ids-bucket", *, create: bool = True) -> S3Store:
    if create:
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=bucket)
    return S3Store(S3Settings(bucket=bucket, prefix="p", region="us-east-1", max_attempts=1))


def _shown(exc: StoreError) -> None:
    """The id is an attribute and ends the message (so logs and the CLI show it)."""
    assert exc.request_id
    assert str(exc).endswith(f"[S3 request id {exc.request_id}]") or (
        exc.host_id and str(exc).endswith(f"host id {exc.host_id}]")
    )
    assert f"request id {exc.request_id}" in str(exc)


def test_an_error_without_ids_reads_as_before() -> None:
    exc = StoreError("GET failed", key="k", code="X")
    assert (exc.request_id, exc.host_id, str(exc)) == (None, None, "GET failed")
    empty = ObjectNotFoundError("gone", key="k", request_id="", host_id="")
    assert (empty.request_id, empty.host_id, str(empty)) == (None, None, "gone")


@pytest.mark.usefixtures("moto_s3")
def test_moto_errors_carry_the_request_id() -> None:
    store = _moto_store()
    with pytest.raises(ObjectNotFoundError) as missing:
        store.get("runs/none/index.json")
    _shown(missing.value)
    etag = store.put("k", b"1", mode="create")
    with pytest.raises(PreconditionFailedError) as lost:
        store.put("k", b"2", mode=IfMatch(etag.replace(etag[1:5], "0000")))
    _shown(lost.value)
    # moto answers If-Match on a missing key with 404, retyped to a lost precondition:
    # the retyped error keeps the answer's id.
    with pytest.raises(PreconditionFailedError) as retyped:
        store.put("missing", b"x", mode=IfMatch(etag))
    _shown(retyped.value)
    assert missing.value.request_id != lost.value.request_id  # each answer its own


@pytest.mark.usefixtures("moto_s3")
def test_a_missing_bucket_at_open_names_the_request(tmp_path: Path) -> None:
    with pytest.raises(BucketNotFoundError) as exc:
        Archive.open("s3://no-such-bucket/p", cache_dir=tmp_path / "c", region="us-east-1")
    _shown(exc.value)


def _stubbed(store: S3Store) -> Stubber:
    return Stubber(store._client)


AWS_META: dict[str, Any] = {
    "RequestId": "ignored-when-the-header-is-there",
    "HTTPHeaders": {"x-amz-request-id": "4442587FB7D0A2F9", "x-amz-id-2": "vlR7PnpV2Ce81l0PRw6j"},
}


@pytest.mark.usefixtures("moto_s3")
def test_aws_shaped_answer_gives_both_ids() -> None:
    """AWS sends ``x-amz-request-id`` and ``x-amz-id-2`` headers; both are kept."""
    store = _moto_store()
    with _stubbed(store) as stub:
        stub.add_client_error(
            "get_object",
            service_error_code="AccessDenied",
            service_message="Access Denied",
            http_status_code=403,
            response_meta=AWS_META,
        )
        with pytest.raises(StoreError) as exc:
            store.get("runs/a/index.json")
    assert (exc.value.request_id, exc.value.host_id) == ("4442587FB7D0A2F9", "vlR7PnpV2Ce81l0PRw6j")
    assert str(exc.value).endswith("[S3 request id 4442587FB7D0A2F9, host id vlR7PnpV2Ce81l0PRw6j]")


@pytest.mark.usefixtures("moto_s3")
def test_delete_objects_per_key_errors_carry_the_answers_ids() -> None:
    """DeleteObjects answers 200 with errors inside: the ids are of that answer."""
    store = _moto_store()
    with _stubbed(store) as stub:
        stub.add_response(
            "list_object_versions",
            {"Versions": [{"Key": "p/k", "VersionId": "v1"}]},
        )
        stub.add_response(
            "delete_objects",
            {
                "Errors": [{"Key": "p/k", "Code": "AccessDenied", "Message": "held"}],
                "ResponseMetadata": AWS_META,
            },
        )
        with pytest.raises(ObjectLockedError) as exc:
            store.delete("k", bypass_governance=True)
    assert exc.value.request_id == "4442587FB7D0A2F9"
    assert exc.value.host_id == "vlR7PnpV2Ce81l0PRw6j"


def test_no_answer_no_ids(tmp_path: Path) -> None:
    """A connection refused has no answer: no ids, and the message says none."""
    store = S3Store(
        S3Settings(
            bucket="b",
            endpoint_url="http://127.0.0.1:9",
            region="us-east-1",
            max_attempts=1,
            connect_timeout=0.5,
        )
    )
    with pytest.raises(StoreUnavailableError) as exc:
        store.get("k")
    assert (exc.value.request_id, exc.value.host_id) == (None, None)
    assert "request id" not in str(exc.value)


@pytest.mark.real_server
def test_seaweedfs_errors_carry_its_request_id(seaweed: S3Server) -> None:
    store = s3_store_for(seaweed, seaweed.make_bucket())
    with pytest.raises(ObjectNotFoundError) as missing:
        store.get("runs/none/index.json")
    _shown(missing.value)
    etag = store.put("k", b"1", mode="create")
    with pytest.raises(PreconditionFailedError) as lost:
        store.put("k", b"2", mode="create")
    _shown(lost.value)
    with pytest.raises(PreconditionFailedError) as stale:
        store.put("k", b"2", mode=IfMatch('"0123456789abcdef0123456789abcdef"'))
    _shown(stale.value)
    assert store.get("k").etag == etag
    # SeaweedFS sends x-amz-request-id (hex) and no x-amz-id-2.
    assert re.fullmatch(r"[0-9A-F]+", missing.value.request_id or "")
    assert missing.value.host_id is None
    gone = s3_store_for(seaweed, "no-such-bucket-here")
    with pytest.raises(BucketNotFoundError) as nobucket:
        gone.get("k")  # (SeaweedFS creates a missing bucket on PUT)
    _shown(nobucket.value)
