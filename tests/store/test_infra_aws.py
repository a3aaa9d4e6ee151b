"""infra/aws/runarchive-bucket.yaml, deployed into moto's CloudFormation, then used.

moto's CreateStack (5.2) creates the S3 bucket honouring only ``BucketName``,
``BucketEncryption`` (algorithm and key, not ``BucketKeyEnabled``) and ``Tags``; the
KMS key (policy, rotation) and alias; the IAM managed policies (documents as given).
It has no model for ``AWS::S3::BucketPolicy`` (skipped with a warning) and ignores the
bucket's versioning, public access block, ownership controls, lifecycle rules and
Object Lock. For those, the tests take the properties as moto resolved them from the
template (parameters, conditions, ``!Sub``/``!If``), check them, and apply them with
the S3 API, so the archive then runs on a bucket configured as CloudFormation on AWS
would configure it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.cloudformation.models import cloudformation_backends
from moto.cloudformation.parsing import clean_json
from moto.core import DEFAULT_ACCOUNT_ID

from runarchive import Archive, Policy, Reader

TEMPLATE = Path(__file__).resolve().parents[2] / "infra" / "aws" / "runarchive-bucket.yaml"
REGION = "us-east-1"

# slow: moto's CloudFormation deploys the whole stack, ~1 s a test on 2 idle cores.
pytestmark = [
    pytest.mark.filterwarnings("ignore:Tried to parse AWS.+BucketPolicy"),
    pytest.mark.slow,
]

WRITER_OBJECT_ACTIONS = {
    "s3:GetObject",
    "s3:PutObject",
    "s3:PutObjectTagging",
    "s3:AbortMultipartUpload",
    "s3:DeleteObject",
    "s3:DeleteObjectVersion",
}
LOCK_READ = {"s3:GetObjectRetention", "s3:GetObjectLegalHold"}
LOCK_WRITE = {"s3:PutObjectRetention", "s3:PutObjectLegalHold"}


@pytest.fixture
def aws() -> Iterator[None]:
    with mock_aws():
        yield


class Stack:
    """A stack created from the template, with what moto resolved of it."""

    def __init__(self, name: str, params: dict[str, str]) -> None:
        self.cf = boto3.client("cloudformation", region_name=REGION)
        stack_id = self.cf.create_stack(
            StackName=name,
            TemplateBody=TEMPLATE.read_text(),
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in params.items()],
            Capabilities=["CAPABILITY_NAMED_IAM"],
        )["StackId"]
        desc = self.cf.describe_stacks(StackName=stack_id)["Stacks"][0]
        assert desc["StackStatus"] == "CREATE_COMPLETE"
        self.outputs = {o["OutputKey"]: o["OutputValue"] for o in desc["Outputs"]}
        self.resources = {  # moto lists the skipped BucketPolicy without an id
            r["LogicalResourceId"]: r
            for r in self.cf.describe_stack_resources(StackName=stack_id)["StackResources"]
            if "LogicalResourceId" in r
        }
        self._moto = cloudformation_backends[DEFAULT_ACCOUNT_ID][REGION].stacks[stack_id]

    def resolved(self, logical_id: str) -> dict[str, Any]:
        """A resource's properties as moto resolved them (parameters, conditions)."""
        props = self._moto.template_dict["Resources"][logical_id]["Properties"]
        resolved: dict[str, Any] = clean_json(props, self._moto.resource_map)
        return resolved


def _api_lifecycle_rule(rule: dict[str, Any]) -> dict[str, Any]:
    """A CloudFormation lifecycle rule in PutBucketLifecycleConfiguration's shape."""
    out: dict[str, Any] = {"ID": rule["Id"], "Status": rule["Status"]}
    cond: dict[str, Any] = {}
    if "Prefix" in rule:
        cond["Prefix"] = rule["Prefix"]
    if "ObjectSizeGreaterThan" in rule:
        cond["ObjectSizeGreaterThan"] = int(rule["ObjectSizeGreaterThan"])
    if "TagFilters" in rule:
        cond["Tags"] = rule["TagFilters"]
    out["Filter"] = {"And": cond} if len(cond) > 1 else cond or {"Prefix": ""}
    if "AbortIncompleteMultipartUpload" in rule:
        days = int(rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"])
        out["AbortIncompleteMultipartUpload"] = {"DaysAfterInitiation": days}
    if "NoncurrentVersionExpiration" in rule:
        days = int(rule["NoncurrentVersionExpiration"]["NoncurrentDays"])
        out["NoncurrentVersionExpiration"] = {"NoncurrentDays": days}
    if rule.get("ExpiredObjectDeleteMarker"):
        out["Expiration"] = {"ExpiredObjectDeleteMarker": True}
    if "Transitions" in rule:
        out["Transitions"] = [
            {"Days": int(t["TransitionInDays"]), "StorageClass": t["StorageClass"]}
            for t in rule["Transitions"]
            if t is not None  # moto keeps !Ref AWS::NoValue in lists as None
        ]
    return out


def apply_what_moto_skips(stack: Stack) -> dict[str, Any]:
    """Configure the bucket with the template's properties moto ignores; return them."""
    s3 = boto3.client("s3", region_name=REGION)
    bucket = stack.outputs["BucketName"]
    props = stack.resolved("ArchiveBucket")
    s3.put_bucket_versioning(
        Bucket=bucket, VersioningConfiguration=props["VersioningConfiguration"]
    )
    s3.put_public_access_block(
        Bucket=bucket, PublicAccessBlockConfiguration=props["PublicAccessBlockConfiguration"]
    )
    if props.get("ObjectLockEnabled"):
        s3.put_object_lock_configuration(
            Bucket=bucket, ObjectLockConfiguration={"ObjectLockEnabled": "Enabled"}
        )
    rules = [r for r in props["LifecycleConfiguration"]["Rules"] if r is not None]
    s3.put_bucket_lifecycle_configuration(
        Bucket=bucket,
        LifecycleConfiguration={"Rules": [_api_lifecycle_rule(r) for r in rules]},
    )
    return props


def apply_bucket_policy(stack: Stack) -> dict[str, Any]:
    """Put the template's bucket policy on the bucket; return it as S3 reads it back.

    Only once the archive has run: moto 5.2 treats a Deny statement whose condition
    does not hold as a deny (``IAMPolicyStatement.is_action_permitted`` returns DENIED
    whenever a condition fails, whatever the Effect), so with the TLS-only statements
    in place it refuses every request, TLS or not.
    """
    s3 = boto3.client("s3", region_name=REGION)
    bucket = stack.outputs["BucketName"]
    policy = stack.resolved("ArchiveBucketPolicy")["PolicyDocument"]
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
    read: dict[str, Any] = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
    return read


def policy_statements(arn: str) -> dict[str, dict[str, Any]]:
    """The statements of a managed policy's default version, by Sid."""
    iam = boto3.client("iam", region_name=REGION)
    pol = iam.get_policy(PolicyArn=arn)["Policy"]
    doc = iam.get_policy_version(PolicyArn=arn, VersionId=pol["DefaultVersionId"])
    document = doc["PolicyVersion"]["Document"]
    if isinstance(document, str):
        document = json.loads(document)
    return {s["Sid"]: s for s in document["Statement"]}


def actions(statement: dict[str, Any]) -> set[str]:
    act = statement["Action"]
    return {act} if isinstance(act, str) else set(act)


def write_and_restore(url: str, tmp: Path, **settings: Any) -> tuple[str, int]:
    """Write a run of 12 checkpoints and 12 events through ``url``, restore it on a
    fresh cache, list it; return its id and the number of segments."""
    with (
        Archive.open(
            url, cache_dir=tmp / "writer", region=REGION, flush_records=8, **settings
        ) as archive,
        archive.start_run(agent="infra", policy=Policy(keep_all=True)) as run,
    ):
        for i in range(12):
            run.checkpoint(f"step{i % 3}", {"i": i, "pad": "x" * 100})
            run.event("tool_call", {"i": i})
            if i % 4 == 3:
                run.flush()  # three segments whatever the background flusher does
        run_id = run.run_id
    with Reader.open(url, region=REGION) as reader:
        restored = reader.restore(run_id)
        assert [c.state["i"] for c in restored.checkpoints] == list(range(12))
        assert len(restored.events) == 12
        assert restored.index.status == "completed"
        assert [r.run_id for r in reader.list_runs()] == [run_id]
        return run_id, len(restored.index.segments)


def test_default_stack_creates_key_bucket_policies_and_runs_an_archive(
    aws: None, tmp_path: Path
) -> None:
    stack = Stack("ra", {"BucketName": "ra-archive"})
    out = stack.outputs
    bucket = out["BucketName"]
    assert bucket == "ra-archive"
    assert out["RunarchiveUrl"] == "s3://ra-archive/agents"
    assert "RunarchiveObjectLockSettings" not in out  # Object Lock is off by default

    # What moto's CreateStack itself honoured: the key, its rotation, the alias,
    # default SSE-KMS encryption with it, and both managed policies.
    kms = boto3.client("kms", region_name=REGION)
    key_arn = out["KmsKeyArn"]
    assert stack.resources["ArchiveKey"]["ResourceStatus"] == "CREATE_COMPLETE"
    assert kms.get_key_rotation_status(KeyId=key_arn)["KeyRotationEnabled"] is True
    aliases = {a["AliasName"]: a.get("TargetKeyId") for a in kms.list_aliases()["Aliases"]}
    assert aliases["alias/runarchive-ra-archive"] == key_arn.rsplit("/", 1)[1]
    key_policy: Any = kms.get_key_policy(KeyId=key_arn, PolicyName="default")["Policy"]
    if isinstance(key_policy, str):  # moto returns the template's object as is
        key_policy = json.loads(key_policy)
    assert [s["Principal"] for s in key_policy["Statement"]] == [
        {"AWS": f"arn:aws:iam::{DEFAULT_ACCOUNT_ID}:root"}
    ]
    s3 = boto3.client("s3", region_name=REGION)
    sse = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]
    default = sse["Rules"][0]["ApplyServerSideEncryptionByDefault"]
    assert default == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key_arn}

    objects = "arn:aws:s3:::ra-archive/agents/*"
    writer = policy_statements(out["WriterPolicyArn"])
    assert actions(writer["ListArchive"]) == {"s3:ListBucket", "s3:ListBucketVersions"}
    assert writer["ListArchive"]["Condition"] == {"StringLike": {"s3:prefix": ["agents/*"]}}
    assert writer["ListArchive"]["Resource"] == "arn:aws:s3:::ra-archive"
    assert actions(writer["ReadWriteArchiveObjects"]) == WRITER_OBJECT_ACTIONS
    assert writer["ReadWriteArchiveObjects"]["Resource"] == objects
    assert actions(writer["ObjectLock"]) == LOCK_READ  # no lock: nothing to set or bypass
    assert actions(writer["UseArchiveKey"]) == {"kms:GenerateDataKey", "kms:Decrypt"}
    assert writer["UseArchiveKey"]["Resource"] == key_arn
    assert writer["UseArchiveKey"]["Condition"] == {
        "StringEquals": {"kms:ViaService": "s3.us-east-1.amazonaws.com"}
    }
    auditor = policy_statements(out["AuditorPolicyArn"])
    granted = set().union(*(actions(s) for s in auditor.values()))
    assert granted == {
        "s3:ListBucket",
        "s3:ListBucketVersions",
        "s3:GetBucketObjectLockConfiguration",
        "s3:GetBucketVersioning",
        "s3:GetEncryptionConfiguration",
        "s3:GetObject",
        "s3:GetObjectVersion",
        "s3:GetObjectRetention",
        "s3:GetObjectLegalHold",
        "kms:Decrypt",
    }
    assert all(s["Effect"] == "Allow" for s in auditor.values())
    assert auditor["ReadArchiveObjects"]["Resource"] == objects

    # What moto skipped, as it resolved it from the template, then applied.
    props = apply_what_moto_skips(stack)
    assert "ObjectLockEnabled" not in props
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["BucketKeyEnabled"]
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    pab = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert pab == dict.fromkeys(
        ["BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets"],
        True,
    )
    rules = {r["ID"]: r for r in s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]}
    assert rules["abort-incomplete-multipart-uploads"]["AbortIncompleteMultipartUpload"] == {
        "DaysAfterInitiation": 7
    }
    assert (
        rules["expire-noncurrent-versions"]["NoncurrentVersionExpiration"]["NoncurrentDays"] == 30
    )
    seg_rule = next(r for r in props["LifecycleConfiguration"]["Rules"] if r and "Transitions" in r)
    assert seg_rule["Prefix"] == "agents/runs/"  # never manifest/ nor _runarchive/
    assert int(seg_rule["ObjectSizeGreaterThan"]) == 131071
    # Exactly the segments: runarchive tags each one at PUT (tag_segments, default on).
    assert seg_rule["TagFilters"] == [{"Key": "runarchive-object", "Value": "segment"}]
    assert [(t["StorageClass"], int(t["TransitionInDays"])) for t in seg_rule["Transitions"]] == [
        ("STANDARD_IA", 30),
        ("GLACIER_IR", 90),
    ]
    # The archive on the created bucket, at the URL the stack prints.
    run_id, segments = write_and_restore(out["RunarchiveUrl"], tmp_path)
    assert segments >= 3
    seg = s3.list_objects_v2(Bucket=bucket, Prefix=f"agents/runs/{run_id}/seg/")["Contents"]
    head = s3.head_object(Bucket=bucket, Key=seg[0]["Key"])
    assert head["ServerSideEncryption"] == "aws:kms"  # the bucket default, with the key
    assert head["SSEKMSKeyId"] == key_arn
    # Versioned: every flush left the previous index as a noncurrent version (the
    # lifecycle rule above expires them).
    index_versions = s3.list_object_versions(
        Bucket=bucket, Prefix=f"agents/runs/{run_id}/index.json"
    )["Versions"]
    assert len(index_versions) >= segments

    policy = apply_bucket_policy(stack)
    statements = {s["Sid"]: s for s in policy["Statement"]}
    assert all(s["Effect"] == "Deny" and s["Principal"] == "*" for s in statements.values())
    tls = statements["DenyInsecureTransport"]
    assert tls["Action"] == "s3:*"
    assert tls["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert tls["Resource"] == ["arn:aws:s3:::ra-archive", "arn:aws:s3:::ra-archive/*"]
    assert statements["DenyTlsOlderThan12"]["Condition"] == {
        "NumericLessThan": {"s3:TlsVersion": "1.2"}
    }
    assert statements["DenyEncryptionOtherThanKms"]["Condition"] == {
        "StringNotEqualsIfExists": {"s3:x-amz-server-side-encryption": "aws:kms"}
    }


def test_object_lock_stack_with_a_given_key_locks_segments(aws: None, tmp_path: Path) -> None:
    kms = boto3.client("kms", region_name=REGION)
    key_arn = kms.create_key(Description="operator's key")["KeyMetadata"]["Arn"]
    stack = Stack(
        "ra-locked",
        {
            "BucketName": "ra-locked",
            "KeyPrefix": "",
            "KmsKeyArn": key_arn,
            "ObjectLock": "true",
            "ObjectLockMode": "GOVERNANCE",
            "ObjectLockDays": "1",
            "WriterMayBypassGovernance": "true",
            "TransitionMatch": "size",
            "TransitionToIADays": "0",
            "NoncurrentVersionExpirationDays": "7",
        },
    )
    out = stack.outputs
    assert "ArchiveKey" not in stack.resources  # the given key is used, none created
    assert len(kms.list_keys()["Keys"]) == 1
    assert out["KmsKeyArn"] == key_arn
    assert out["RunarchiveUrl"] == "s3://ra-locked"
    assert out["RunarchiveObjectLockSettings"] == (
        "RUNARCHIVE_OBJECT_LOCK_MODE=GOVERNANCE RUNARCHIVE_OBJECT_LOCK_DAYS=1"
    )
    writer = policy_statements(out["WriterPolicyArn"])
    assert "Condition" not in writer["ListArchive"]  # no prefix: the whole bucket
    assert writer["ReadWriteArchiveObjects"]["Resource"] == "arn:aws:s3:::ra-locked/*"
    assert actions(writer["ObjectLock"]) == {
        *LOCK_READ,
        *LOCK_WRITE,
        "s3:BypassGovernanceRetention",
    }
    assert writer["UseArchiveKey"]["Resource"] == key_arn

    props = apply_what_moto_skips(stack)
    assert props["ObjectLockEnabled"] is True
    assert "Rule" not in props.get("ObjectLockConfiguration", {})  # no default retention
    s3 = boto3.client("s3", region_name=REGION)
    lock = s3.get_object_lock_configuration(Bucket="ra-locked")["ObjectLockConfiguration"]
    assert lock == {"ObjectLockEnabled": "Enabled"}
    seg_rule = next(r for r in props["LifecycleConfiguration"]["Rules"] if r and "Transitions" in r)
    assert seg_rule["Prefix"] == "runs/"
    assert "TagFilters" not in seg_rule  # TransitionMatch=size: by size alone
    assert [t["StorageClass"] for t in seg_rule["Transitions"] if t] == ["GLACIER_IR"]

    run_id, _ = write_and_restore(
        out["RunarchiveUrl"], tmp_path, object_lock_mode="GOVERNANCE", object_lock_days=1
    )
    seg = s3.list_objects_v2(Bucket="ra-locked", Prefix=f"runs/{run_id}/seg/")["Contents"]
    assert s3.head_object(Bucket="ra-locked", Key=seg[0]["Key"])["ObjectLockMode"] == "GOVERNANCE"
    index = s3.head_object(Bucket="ra-locked", Key=f"runs/{run_id}/index.json")
    assert "ObjectLockMode" not in index
    assert index["SSEKMSKeyId"] == key_arn


def test_no_transition_rule_when_both_transitions_are_off(aws: None) -> None:
    stack = Stack(
        "ra-cold",
        {"BucketName": "ra-cold", "TransitionToIADays": "0", "TransitionToGlacierIRDays": "0"},
    )
    rules = [r for r in stack.resolved("ArchiveBucket")["LifecycleConfiguration"]["Rules"] if r]
    assert [r["Id"] for r in rules] == [
        "abort-incomplete-multipart-uploads",
        "expire-noncurrent-versions",
    ]
