"""An AWS KMS API on 127.0.0.1 for tests: moto's server (`moto_server` from `moto[server]`).

This is the one mock the test suite accepts: AWS KMS itself cannot run here,
and moto speaks its wire protocol, so the code under test talks to it through
boto3 exactly as it would to AWS. moto keeps everything in memory: a stopped
server leaves nothing behind but its log directory, which `stop()` removes.

Known differences from AWS KMS that tests must not rely on (moto 5.x):
moto encrypts and decrypts with Disabled and PendingDeletion keys, accepts a
second ScheduleKeyDeletion, and answers a Decrypt naming the wrong key with
AccessDeniedException (AWS: IncorrectKeyException).
"""

from __future__ import annotations

import shutil
import signal
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

from tests.harness.ports import LOOPBACK, free_port
from tests.harness.processes import die_with_parent, log_tail, stop_child

_STOP_GRACE_SECONDS = 10.0


class KmsServerError(RuntimeError):
    """The KMS server could not be started."""


def find_moto_server() -> Path:
    """`moto_server` from our venv, else from PATH."""
    beside_python = Path(sys.executable).parent / "moto_server"
    if beside_python.is_file():
        return beside_python
    on_path = shutil.which("moto_server")
    if on_path is not None:
        return Path(on_path)
    raise KmsServerError(f"No `moto_server` next to {sys.executable} or on PATH. Install the dev requirements (`pip install 'moto[server]>=5'`).")


class KmsServer:
    """One `moto_server` child process on a free loopback port; it dies with us (parent-death signal)."""

    region = "us-east-1"
    # moto accepts any credentials; fixed ones keep the tests independent of the environment's AWS_* settings.
    access_key = "KEELTESTACCESSKEY000"
    secret_key = "keel-test-secret-key-not-a-secret"

    def __init__(self) -> None:
        self.state_dir = Path(tempfile.mkdtemp(prefix="keel-kms-", dir="/tmp"))
        self.port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"KmsServer(port={self.port})"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "moto.log"

    @property
    def endpoint_url(self) -> str:
        if self.port is None:
            raise KmsServerError(f"{self} has no endpoint: it was never started")
        return f"http://{LOOPBACK}:{self.port}"

    def key_provider_options(self, **overrides: Any) -> dict[str, Any]:
        """The `key_provider` option of a keel.postgres module pointing at this server."""
        options: dict[str, Any] = {
            "type": "aws_kms",
            "endpoint_url": self.endpoint_url,
            "region": self.region,
            "access_key": self.access_key,
            "secret_key": self.secret_key,
        }
        options.update(overrides)
        return options

    def client(self, **config: Any) -> BaseClient:
        """A boto3 KMS client for this server; `config` overrides botocore Config fields."""
        return boto3.session.Session().client(
            "kms",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(**config),
        )

    @property
    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 60.0) -> None:
        if self.is_running:
            raise KmsServerError(f"{self} is already running (pid {self._process.pid if self._process else '?'})")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(
                [str(find_moto_server()), "-H", LOOPBACK, "-p", str(self.port)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.state_dir,
                # Own process group (Ctrl-C reaches pytest only, whose teardown stops us), SIGTERM when we die.
                process_group=0,
                preexec_fn=die_with_parent(signal.SIGTERM),
            )
        try:
            self._wait_until_serving(timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """SIGTERM, SIGKILL after a grace period; a no-op when not running."""
        if self._process is not None:
            stop_child(self._process, signal.SIGTERM, _STOP_GRACE_SECONDS)
            self._process = None

    def remove(self) -> None:
        """Stop the server and delete its log directory (moto keeps no other state)."""
        self.stop()
        shutil.rmtree(self.state_dir, ignore_errors=True)

    def _wait_until_serving(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        probe = self.client(connect_timeout=1, read_timeout=2, retries={"max_attempts": 1})
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise KmsServerError(self._describe_failure(f"moto_server exited during startup ({self._process.returncode})"))
            try:
                probe.list_keys(Limit=1)
                return
            except (BotoCoreError, ClientError) as error:
                last_error = error
                time.sleep(0.2)
        raise KmsServerError(self._describe_failure(f"KMS did not answer within {timeout:.0f}s ({last_error})"))

    def _describe_failure(self, what: str) -> str:
        return f"{self}: {what}. Last lines of {self.log_file}:\n{log_tail(self.log_file)}"
