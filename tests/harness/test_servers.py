"""Tests proving the real-S3-server helpers in tests/support/servers.py."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, EndpointConnectionError
from support import TESTS
from support.servers import (
    GRPC_PORT_OFFSET,
    MotoServer,
    S3Server,
    SeaweedFS,
    find_weed,
    remove_stale_grpc_sockets,
    unique_bucket_name,
)

BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")


def _status(err: ClientError) -> int:
    return int(err.response["ResponseMetadata"]["HTTPStatusCode"])


def _code(err: ClientError) -> str:
    return str(err.response["Error"]["Code"])


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


# --------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    sw = SeaweedFS(tmp_path_factory.mktemp("seaweedfs"))
    sw.start()
    try:
        yield sw
    finally:
        sw.stop()


@pytest.fixture(scope="module")
def seaweed_s3(seaweed: SeaweedFS) -> S3Server:
    return seaweed.server


@pytest.fixture(scope="module")
def moto_s3() -> Iterator[S3Server]:
    with MotoServer() as server:
        yield server


@pytest.fixture(params=[pytest.param("seaweedfs", marks=pytest.mark.real_server), "moto"])
def s3(request: pytest.FixtureRequest) -> S3Server:
    fixture = "seaweed_s3" if request.param == "seaweedfs" else "moto_s3"
    server: S3Server = request.getfixturevalue(fixture)
    return server


# --------------------------------------------------------------------------
# pure helpers
# --------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["t", "Run_Archive.Test!", "-x-", "", "p" * 100])
def test_unique_bucket_name_is_valid(prefix: str) -> None:
    names = {unique_bucket_name(prefix) for _ in range(50)}
    assert len(names) == 50
    for name in names:
        assert 3 <= len(name) <= 63
        assert BUCKET_RE.match(name), name


def test_url() -> None:
    s3 = S3Server("moto", "http://127.0.0.1:1", "a", "b")
    assert s3.url("bkt") == "s3://bkt"
    assert s3.url("bkt", "") == "s3://bkt"
    assert s3.url("bkt", "runs/1") == "s3://bkt/runs/1"
    assert s3.url("bkt", "/runs/") == "s3://bkt/runs/"
    assert s3.port == 1
    assert s3.env()["AWS_ENDPOINT_URL"] == "http://127.0.0.1:1"


def test_missing_weed_binary_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    with pytest.raises(RuntimeError, match="make test"):
        find_weed()
    with pytest.raises(RuntimeError, match="make test"):
        SeaweedFS(tmp_path).start()


# --------------------------------------------------------------------------
# both servers
# --------------------------------------------------------------------------


def test_put_get(s3: S3Server) -> None:
    bucket = s3.make_bucket("putget")
    assert BUCKET_RE.match(bucket)
    client = s3.client()
    client.put_object(Bucket=bucket, Key="dir/a.txt", Body=b"hello")
    got = client.get_object(Bucket=bucket, Key="dir/a.txt")
    assert got["Body"].read() == b"hello"
    listed = client.list_objects_v2(Bucket=bucket, Prefix="dir/")
    assert [o["Key"] for o in listed["Contents"]] == ["dir/a.txt"]
    assert bucket in {b["Name"] for b in client.list_buckets()["Buckets"]}


def test_if_none_match_star(s3: S3Server) -> None:
    bucket = s3.make_bucket("inm")
    client = s3.client()
    client.put_object(Bucket=bucket, Key="k", Body=b"first", IfNoneMatch="*")
    with pytest.raises(ClientError) as info:
        client.put_object(Bucket=bucket, Key="k", Body=b"second", IfNoneMatch="*")
    assert _status(info.value) == 412
    assert _code(info.value) == "PreconditionFailed"
    assert client.get_object(Bucket=bucket, Key="k")["Body"].read() == b"first"


def test_if_match(s3: S3Server) -> None:
    bucket = s3.make_bucket("im")
    client = s3.client()
    etag = client.put_object(Bucket=bucket, Key="k", Body=b"v1")["ETag"]
    client.put_object(Bucket=bucket, Key="k", Body=b"v2", IfMatch=etag)
    with pytest.raises(ClientError) as info:
        client.put_object(Bucket=bucket, Key="k", Body=b"v3", IfMatch=etag)
    assert _status(info.value) == 412
    assert client.get_object(Bucket=bucket, Key="k")["Body"].read() == b"v2"


def test_if_match_on_missing_key(s3: S3Server) -> None:
    """Documents a divergence: AWS (and moto) say 404, SeaweedFS says 412."""
    bucket = s3.make_bucket("im-missing")
    with pytest.raises(ClientError) as info:
        s3.client().put_object(Bucket=bucket, Key="nope", Body=b"x", IfMatch='"abc"')
    expected = 412 if s3.name == "seaweedfs" else 404
    assert _status(info.value) == expected


# --------------------------------------------------------------------------
# SeaweedFS specifics
# --------------------------------------------------------------------------


@pytest.mark.real_server
def test_seaweed_checks_signatures(seaweed_s3: S3Server) -> None:
    bucket = seaweed_s3.make_bucket("sig")
    bad = S3Server(
        name=seaweed_s3.name,
        endpoint_url=seaweed_s3.endpoint_url,
        access_key=seaweed_s3.access_key,
        secret_key=seaweed_s3.secret_key + "-wrong",
    )
    with pytest.raises(ClientError) as info:
        bad.client().list_buckets()
    assert _status(info.value) == 403
    with pytest.raises(ClientError) as info:
        bad.client().put_object(Bucket=bucket, Key="k", Body=b"x")
    assert _status(info.value) == 403


@pytest.mark.real_server
def test_seaweed_binds_only_loopback_on_chosen_ports(seaweed: SeaweedFS) -> None:
    ports = seaweed.ports
    assert set(ports) == {"s3", "master", "volume", "filer", "admin"}
    for port in ports.values():
        assert port + GRPC_PORT_OFFSET < 65536
    # The readiness probe proves s3, filer, master and volume; the admin server
    # is not on that path and may still be binding on a loaded machine (CI saw
    # it once). Wait for every listener, bounded, and name the one that is late.
    wanted = {
        f"{name} {kind}": port + offset
        for name, port in ports.items()
        for kind, offset in (("http", 0), ("grpc", GRPC_PORT_OFFSET))
    }
    deadline = time.monotonic() + 60
    missing = sorted(label for label, port in wanted.items() if not _port_in_use(port))
    while missing and time.monotonic() < deadline:
        time.sleep(0.2)
        missing = sorted(label for label, port in wanted.items() if not _port_in_use(port))
    assert not missing, f"not listening after 60 s: {missing}\n{seaweed.log_tail()}"
    pid = seaweed.pid
    assert pid is not None
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=False).stdout
    mine = [line for line in out.splitlines() if f"pid={pid}," in line]
    if mine:  # `ss` may be missing or unable to see pids; then skip this part
        listening = {line.split()[3] for line in mine}
        expected = {f"127.0.0.1:{p}" for p in ports.values()}
        expected |= {f"127.0.0.1:{p + GRPC_PORT_OFFSET}" for p in ports.values()}
        assert listening == expected


@pytest.mark.real_server
def test_seaweed_startup_time_recorded(seaweed: SeaweedFS) -> None:
    assert seaweed.startup_seconds is not None
    assert seaweed.startup_seconds < seaweed.ready_timeout


@pytest.mark.real_server
def test_seaweed_restart_keeps_data(seaweed: SeaweedFS) -> None:
    s3 = seaweed.server
    bucket = s3.make_bucket("restart")
    s3.client().put_object(Bucket=bucket, Key="k", Body=b"persisted")
    old_pid = seaweed.pid
    assert old_pid is not None

    again = seaweed.restart()

    assert again == s3  # same endpoint, same credentials
    assert seaweed.pid not in (None, old_pid)
    assert not _pid_alive(old_pid)
    got = s3.client().get_object(Bucket=bucket, Key="k")
    assert got["Body"].read() == b"persisted"


@pytest.mark.real_server
def test_seaweed_kill_is_an_outage_then_restart_recovers(seaweed: SeaweedFS) -> None:
    s3 = seaweed.server
    bucket = s3.make_bucket("outage")
    s3.client().put_object(Bucket=bucket, Key="k", Body=b"survives")
    old_pid = seaweed.pid
    assert old_pid is not None

    seaweed.kill()
    assert seaweed.pid is None
    assert not _pid_alive(old_pid)
    fast = s3.client(Config(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=1))
    with pytest.raises(EndpointConnectionError):
        fast.get_object(Bucket=bucket, Key="k")

    seaweed.restart()
    assert s3.client().get_object(Bucket=bucket, Key="k")["Body"].read() == b"survives"


@pytest.mark.real_server
def test_seaweed_context_manager_stops_process(tmp_path: Path) -> None:
    sw = SeaweedFS(tmp_path)
    with sw as s3:
        pid = sw.pid
        assert pid is not None
        assert s3.name == "seaweedfs"
        bucket = s3.make_bucket()
        s3.client().put_object(Bucket=bucket, Key="k", Body=b"x")
    assert sw.pid is None
    assert not _pid_alive(pid)
    assert not _port_in_use(s3.port)


@pytest.mark.real_server
def test_seaweed_child_dies_with_parent(tmp_path: Path) -> None:
    """A session killed with SIGKILL (no atexit, no teardown) takes weed along."""
    script = (
        "import json, sys, time; from pathlib import Path; from support.servers import SeaweedFS\n"
        "sw = SeaweedFS(Path(sys.argv[1])); sw.start()\n"
        "print(json.dumps([sw.pid, sw.ports]), flush=True); time.sleep(600)\n"
    )
    tests_dir = str(TESTS)
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=tests_dir,
        env={**os.environ, "PYTHONPATH": tests_dir},
    )
    assert proc.stdout is not None
    with proc.stdout:
        try:
            weed_pid, ports = json.loads(proc.stdout.readline())
            assert _pid_alive(weed_pid)
        finally:
            proc.kill()
            proc.wait()
    deadline = time.monotonic() + 10
    while _pid_alive(weed_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _pid_alive(weed_pid)
    remove_stale_grpc_sockets(ports)
