"""Start, stop and inspect a local sandbox: PostgreSQL + an S3 server on 127.0.0.1.

    python -m tests.harness.sandbox up     --state-dir DIR [--no-s3]
    python -m tests.harness.sandbox down   --state-dir DIR
    python -m tests.harness.sandbox status --state-dir DIR

Used by `make demo`, `make sandbox-up` and molecule scenarios. Both servers
are detached, so they outlive this command; everything they need to be found
and stopped again lives in DIR:

    DIR/postgres/            the cluster (PostgresCluster base directory)
    DIR/s3/                  the S3 server state (S3Server state directory)
    DIR/sandbox.json         how to reach them (no secrets)
    DIR/s3-credentials.json  the S3 keys (0600)
    DIR/sandbox.env          `export` lines for PG* and AWS_* (0600, holds the S3 keys)
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
from botocore.exceptions import BotoCoreError, ClientError

from tests.harness.postgres_cluster import PostgresCluster, PostgresClusterError
from tests.harness.s3_server import S3Server, S3ServerError

DATABASE = "keel_demo"
BUCKET = "keel-backups"


def say(message: str) -> None:
    print(f"sandbox: {message}", flush=True)


class Sandbox:
    """The servers and files of one sandbox state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir.absolute()
        self.postgres = PostgresCluster(self.state_dir / "postgres")

    @property
    def s3_dir(self) -> Path:
        return self.state_dir / "s3"

    @property
    def description_file(self) -> Path:
        return self.state_dir / "sandbox.json"

    @property
    def credentials_file(self) -> Path:
        return self.state_dir / "s3-credentials.json"

    @property
    def env_file(self) -> Path:
        return self.state_dir / "sandbox.env"

    def s3(self) -> S3Server | None:
        """The S3 server of this sandbox, or None when it never had one."""
        return S3Server(self.s3_dir) if self.s3_dir.exists() else None

    # -- up -------------------------------------------------------------------

    def up(self, *, with_s3: bool) -> None:
        if self._is_fully_running(with_s3=with_s3):
            say(f"already running (PostgreSQL on port {self.postgres.port}); see {self.description_file}")
            return
        if self.postgres.is_running or self._s3_is_running():
            say("only partly running; stopping what runs, then starting afresh")
            self.down()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._start_postgres()
            s3 = self._start_s3() if with_s3 else None
            self._write_description(s3)
        except BaseException:
            # Half a sandbox would only confuse the next `up`; leave none.
            say("start failed; stopping what was started")
            self.down()
            raise
        say(f"ready; `source {self.env_file}` to point psql and AWS tools at it")

    def _is_fully_running(self, *, with_s3: bool) -> bool:
        s3_ok = self._s3_is_running() if with_s3 else True
        return self.postgres.is_running and s3_ok and self.description_file.is_file()

    def _s3_is_running(self) -> bool:
        s3 = self.s3()
        return s3 is not None and s3.is_running

    def _start_postgres(self) -> None:
        say(f"starting PostgreSQL in {self.postgres.base_dir}")
        self.postgres.start(detach=True)
        # "15.18 (Debian 15.18-0+deb12u1)" -> "15.18"
        version = self.postgres.execute("SHOW server_version")[0][0].split()[0]
        say(f"PostgreSQL {version} listening on {self.postgres.host}:{self.postgres.port} (pid {self.postgres.pid})")
        if self.postgres.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE]):
            say(f"database {DATABASE} already exists")
        else:
            self.postgres.create_database(DATABASE)
            say(f"created database {DATABASE}")

    def _start_s3(self) -> S3Server:
        s3 = S3Server(self.s3_dir)
        say(f"starting S3 server in {s3.state_dir}")
        s3.start(detach=True)
        say(f"S3 listening on {s3.endpoint_url} (pid {s3.pid})")
        client = s3.client()
        try:
            client.head_bucket(Bucket=BUCKET)
            say(f"bucket {BUCKET} already exists")
        except ClientError:
            client.create_bucket(Bucket=BUCKET, ObjectLockEnabledForBucket=True)
            say(f"created bucket {BUCKET} with Object Lock enabled")
        return s3

    def _write_description(self, s3: S3Server | None) -> None:
        description: dict[str, Any] = {
            "postgres": {
                "host": self.postgres.host,
                "port": self.postgres.port,
                "user": self.postgres.user,
                "database": DATABASE,
                "data_dir": str(self.postgres.data_dir),
                "log_file": str(self.postgres.log_file),
            },
            "s3": None,
        }
        environment = {
            "PGHOST": self.postgres.host,
            "PGPORT": str(self.postgres.port),
            "PGUSER": self.postgres.user,
            "PGDATABASE": DATABASE,
            "KEEL_SANDBOX_DIR": str(self.state_dir.resolve()),
        }
        if s3 is not None:
            description["s3"] = {
                "endpoint_url": s3.endpoint_url,
                "bucket": BUCKET,
                "region": s3.region,
                "credentials_file": str(self.credentials_file),
                "log_file": str(s3.log_file),
            }
            credentials = {"aws_access_key_id": s3.access_key, "aws_secret_access_key": s3.secret_key}
            _write_private_file(self.credentials_file, json.dumps(credentials, indent=2) + "\n")
            environment.update(
                AWS_ACCESS_KEY_ID=s3.access_key,
                AWS_SECRET_ACCESS_KEY=s3.secret_key,
                AWS_DEFAULT_REGION=s3.region,
                AWS_REGION=s3.region,
                AWS_ENDPOINT_URL=s3.endpoint_url,
                KEEL_BACKUP_BUCKET=BUCKET,
            )
        exports = "".join(f"export {name}={shlex.quote(value)}\n" for name, value in environment.items())
        _write_private_file(self.env_file, exports)
        _write_file(self.description_file, json.dumps(description, indent=2) + "\n", mode=0o644)
        say(f"wrote {self.description_file}, {self.env_file}" + (f", {self.credentials_file}" if s3 else ""))

    # -- down -----------------------------------------------------------------

    def down(self) -> None:
        """Stop both servers and wait until they are gone; keep their data for the next `up`."""
        self._stop_postgres()
        self._stop_s3()
        # They describe servers that no longer run; stale ports would mislead.
        for path in (self.description_file, self.env_file, self.credentials_file):
            path.unlink(missing_ok=True)

    def _stop_postgres(self) -> None:
        if not self.postgres.is_running:
            say("PostgreSQL is not running")
            return
        say(f"stopping PostgreSQL (pid {self.postgres.pid})")
        self.postgres.stop()
        say("PostgreSQL stopped")

    def _stop_s3(self) -> None:
        s3 = self.s3()
        if s3 is None or not s3.is_running:
            say("S3 server is not running")
            return
        say(f"stopping S3 server (pid {s3.pid}; this takes a few seconds)")
        s3.stop()
        say("S3 server stopped")

    # -- status ---------------------------------------------------------------

    def status_rows(self) -> list[tuple[str, str, str, str]]:
        """(component, state, address, pid) for the status table."""
        return [self._postgres_row(), self._s3_row()]

    def _postgres_row(self) -> tuple[str, str, str, str]:
        pid = self.postgres.pid
        if pid is None:
            return ("postgres", "stopped", "-", "-")
        return ("postgres", "running", f"{self.postgres.host}:{self.postgres.port}", str(pid))

    def _s3_row(self) -> tuple[str, str, str, str]:
        s3 = self.s3()
        if s3 is None:
            return ("s3", "absent", "-", "-")
        pid = s3.pid
        if pid is None:
            return ("s3", "stopped", "-", "-")
        return ("s3", "running", s3.endpoint_url, str(pid))


def _write_private_file(path: Path, text: str) -> None:
    _write_file(path, text, mode=0o600)


def _write_file(path: Path, text: str, *, mode: int) -> None:
    """Write atomically, with `mode` from the first byte on (no window where secrets are world-readable)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(descriptor, "w") as stream:
        stream.write(text)
    os.chmod(temporary, mode)  # O_CREAT's mode is filtered by the umask
    os.replace(temporary, path)


def _print_table(rows: Sequence[tuple[str, ...]]) -> None:
    header = ("component", "state", "address", "pid")
    widths = [max(len(row[column]) for row in (header, *rows)) for column in range(len(header))]
    for row in (header, *rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def _parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.harness.sandbox", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("up", "down", "status"))
    parser.add_argument("--state-dir", type=Path, required=True, help="where the servers keep data, pids and logs")
    parser.add_argument("--no-s3", action="store_true", help="up: start PostgreSQL only")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = _parse_arguments(argv)
    try:
        sandbox = Sandbox(arguments.state_dir)
        if arguments.command == "up":
            sandbox.up(with_s3=not arguments.no_s3)
        elif arguments.command == "down":
            sandbox.down()
        else:
            _print_table(sandbox.status_rows())
    except (PostgresClusterError, S3ServerError, OSError, psycopg.Error, BotoCoreError, ClientError) as error:
        print(f"sandbox: {arguments.command} failed: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
