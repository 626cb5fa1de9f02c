"""A throwaway PostgreSQL cluster on 127.0.0.1 for tests, demos and molecule.

Layout of the base directory:

    data/           PGDATA (initdb output, 0700, owned by the server's OS user)
    socket/         unix_socket_directories, so no two clusters share /var/run/postgresql
    postgres.log    everything the postmaster writes

PostgreSQL refuses to run as root, so when we are root every server program
runs as the `postgres` OS user and the base directory is handed to it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
from psycopg.abc import Params, Query
from psycopg.conninfo import make_conninfo
from psycopg.sql import SQL, Identifier

from tests.harness.ports import LOOPBACK, free_port
from tests.harness.processes import (
    command_line,
    die_with_parent,
    is_alive,
    log_tail,
    pids_with_argument,
    stop_child,
)

SUPERUSER = "postgres"
SERVICE_OS_USER = "postgres"
SETTINGS_FILE = "keel_harness.conf"
# sockaddr_un.sun_path is 108 bytes including the NUL terminator.
_MAX_SOCKET_PATH = 107
_SOCKET_FILE_NAME_LENGTH = len("/.s.PGSQL.65535")

_HBA_RULES = """\
# Written by tests/harness/postgres_cluster.py: a disposable cluster reachable
# only through its own socket directory and 127.0.0.1, so trust is enough.
local   all          all                 trust
host    all          all   127.0.0.1/32  trust
local   replication  all                 trust
host    replication  all   127.0.0.1/32  trust
"""


class PostgresClusterError(RuntimeError):
    """The cluster could not be created, started or stopped."""


def find_server_bindir() -> Path:
    """The directory holding initdb/pg_ctl/postgres.

    `pg_config --bindir` names the client installation, which on Debian has
    no initdb; then the newest /usr/lib/postgresql/<major>/bin wins, then PATH.
    """
    candidates = [_pg_config_bindir(), *_packaged_bindirs_newest_first(), _initdb_dir_on_path()]
    for candidate in candidates:
        if candidate is not None and (candidate / "initdb").is_file():
            return candidate
    raise PostgresClusterError(
        "No PostgreSQL server binaries found (looked at `pg_config --bindir`, "
        "/usr/lib/postgresql/*/bin and PATH for initdb). Install the server package, "
        "e.g. `apt-get install postgresql-15`."
    )


def _pg_config_bindir() -> Path | None:
    pg_config = shutil.which("pg_config")
    if pg_config is None:
        return None
    completed = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
    return Path(completed.stdout.strip()) if completed.returncode == 0 else None


def _packaged_bindirs_newest_first() -> list[Path]:
    def major_version(bindir: Path) -> float:
        try:
            return float(bindir.parent.name)
        except ValueError:
            return -1.0

    return sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=major_version, reverse=True)


def _initdb_dir_on_path() -> Path | None:
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PostgresCluster:
    """One PostgreSQL cluster in its own base directory.

    A new object on an existing base directory attaches to it: it can tell
    whether that cluster runs, connect to it and stop it, even when another
    process started it (the data directory and postmaster.pid are the truth).
    """

    def __init__(self, base_dir: Path | str | None = None, *, bindir: Path | None = None) -> None:
        # pytest's tmp dirs are 0700 root; the postgres OS user could not
        # enter them, so by default use a fresh directory directly under /tmp.
        if base_dir is None:
            base_dir = tempfile.mkdtemp(prefix="keel-pg-", dir="/tmp")
        # Absolute, because server programs run with cwd=/ and get paths on their command lines.
        self.base_dir = Path(base_dir).absolute()
        self.bindir = bindir if bindir is not None else find_server_bindir()
        self._service_account = _service_account()
        self._port: int | None = None
        self._postmaster: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"PostgresCluster(base_dir={str(self.base_dir)!r})"

    # -- locations --------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base_dir / "socket"

    @property
    def log_file(self) -> Path:
        return self.base_dir / "postgres.log"

    # -- connection details -------------------------------------------------

    @property
    def host(self) -> str:
        return LOOPBACK

    @property
    def port(self) -> int:
        """The TCP port: chosen at start, or read from a running cluster's postmaster.pid."""
        if self._port is None:
            self._port = self._port_from_pid_file()
        if self._port is None:
            raise PostgresClusterError(f"{self} has no port yet: it was never started")
        return self._port

    @property
    def user(self) -> str:
        return SUPERUSER

    @property
    def conninfo(self) -> dict[str, Any]:
        """Keyword arguments for psycopg.connect() (or module options) as the superuser."""
        return {"host": self.host, "port": self.port, "user": self.user, "dbname": "postgres"}

    def dsn(self, dbname: str = "postgres") -> str:
        return make_conninfo(**{**self.conninfo, "dbname": dbname})

    # -- state ----------------------------------------------------------------

    @property
    def is_initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").is_file()

    @property
    def pid(self) -> int | None:
        """The postmaster's pid while it runs, from postmaster.pid."""
        lines = self._pid_file_lines()
        if not lines or not lines[0].strip().isdigit():
            return None
        pid = int(lines[0])
        # A stale pid file may name a recycled pid that belongs to something else.
        if is_alive(pid) and any("postgres" in part for part in command_line(pid)):
            return pid
        return None

    @property
    def is_running(self) -> bool:
        if self._postmaster is not None and self._postmaster.poll() is None:
            return True
        return self.pid is not None

    def _pid_file_lines(self) -> list[str]:
        try:
            return (self.data_dir / "postmaster.pid").read_text().splitlines()
        except OSError:
            return []

    def _port_from_pid_file(self) -> int | None:
        # Line 4 of postmaster.pid is the port (see PostgreSQL's pidfile.h).
        lines = self._pid_file_lines()
        if self.pid is None or len(lines) < 4 or not lines[3].strip().isdigit():
            return None
        return int(lines[3])

    # -- lifecycle ------------------------------------------------------------

    def initdb(self) -> None:
        """Create the cluster: UTF8, C locale, superuser `postgres`, trust on loopback only."""
        if self.is_initialized:
            raise PostgresClusterError(f"{self.data_dir} already holds a cluster")
        self._prepare_base_dir()
        self._run_server_program(
            "initdb",
            f"--pgdata={self.data_dir}",
            f"--username={SUPERUSER}",
            "--encoding=UTF8",
            "--locale=C",
            "--auth=trust",
        )
        self._write_owned_file(self.data_dir / "pg_hba.conf", _HBA_RULES)
        with (self.data_dir / "postgresql.conf").open("a") as config:
            config.write(f"\n# Test harness settings, rewritten at every start.\ninclude '{SETTINGS_FILE}'\n")

    def clone_as_standby_of(self, primary: PostgresCluster) -> None:
        """Fill this (empty) cluster with a base backup of `primary`, set up to stream from it.

        `pg_basebackup --write-recovery-conf` leaves standby.signal and
        primary_conninfo behind, so `start()` brings up a hot standby; the
        copied postgresql.conf includes the harness settings by relative name,
        so the standby gets its own port and socket directory.
        """
        if self.is_initialized:
            raise PostgresClusterError(f"{self.data_dir} already holds a cluster")
        self._prepare_base_dir()
        self._run_server_program(
            "pg_basebackup",
            f"--pgdata={self.data_dir}",
            f"--host={primary.host}",
            f"--port={primary.port}",
            f"--username={SUPERUSER}",
            "--wal-method=stream",
            "--checkpoint=fast",
            "--write-recovery-conf",
        )

    def start(self, *, detach: bool = False, timeout: float = 60.0) -> None:
        """Start the server (running initdb first if needed) and wait for connections.

        detach=False: the postmaster is our child and gets SIGINT (fast
        shutdown) if this process dies, so a test run never leaks it.
        detach=True: `pg_ctl start` in its own session, so it outlives us
        (`make sandbox-up`); stop it later with `stop()` from any process.
        """
        if not self.is_initialized:
            self.initdb()
        if self.is_running:
            raise PostgresClusterError(f"{self} is already running (pid {self.pid})")
        self._prepare_base_dir()
        self._port = self._port or free_port()
        self._write_settings()
        try:
            if detach:
                self._start_with_pg_ctl(timeout)
            else:
                self._start_as_child()
            self._wait_until_accepting_connections(timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = 60.0) -> None:
        """Fast shutdown (roll back open transactions, disconnect clients); a no-op if stopped."""
        if self._postmaster is not None:
            # SIGINT is PostgreSQL's "fast shutdown" request.
            stop_child(self._postmaster, signal.SIGINT, timeout)
            self._postmaster = None
        elif self.is_running:
            self._stop_with_pg_ctl(timeout)

    def remove(self, timeout: float = 30.0) -> None:
        """Stop the server and delete the whole base directory.

        Waits first for any server program still working in it: an initdb or
        postmaster whose starting process was killed exits on its parent-death
        signal, and deleting under it fails half-way or leaves files behind.
        """
        self.stop()
        self._wait_for_programs_using_data_dir(timeout)
        if self.base_dir.exists():
            shutil.rmtree(self.base_dir)

    def _wait_for_programs_using_data_dir(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while programs := self._programs_using_data_dir():
            if time.monotonic() >= deadline:
                listing = "; ".join(f"pid {pid}: {' '.join(command_line(pid))}" for pid in programs)
                raise PostgresClusterError(f"{self}: still in use after {timeout:.0f}s, not deleting it ({listing})")
            # A postmaster whose pg_ctl was killed mid-start may come up only now; stop it too.
            self.stop()
            time.sleep(0.1)

    def _programs_using_data_dir(self) -> list[int]:
        # postgres -D DIR (also when started by pg_ctl), initdb/pg_ctl --pgdata=DIR
        return sorted({*pids_with_argument(str(self.data_dir)), *pids_with_argument(f"--pgdata={self.data_dir}")})

    def _prepare_base_dir(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        self._check_socket_path_length()
        for path in (self.base_dir, self.socket_dir):
            self._give_to_service_account(path)
        self._check_service_account_can_write_base_dir()

    def _check_socket_path_length(self) -> None:
        if len(str(self.socket_dir)) + _SOCKET_FILE_NAME_LENGTH > _MAX_SOCKET_PATH:
            raise PostgresClusterError(f"{self.socket_dir} is too long for a unix socket path ({_MAX_SOCKET_PATH} bytes max); use a shorter base directory")

    def _check_service_account_can_write_base_dir(self) -> None:
        if self._service_account is None:
            return
        # Only the OS can tell for sure (ACLs, groups), so ask it as that user.
        probe = subprocess.run(
            ["test", "-w", str(self.base_dir), "-a", "-x", str(self.base_dir)],
            check=False,
            **self._as_service_account(),
        )
        if probe.returncode != 0:
            raise PostgresClusterError(
                f"PostgreSQL runs as the {SERVICE_OS_USER!r} OS user (we are root), and that user cannot "
                f"reach {self.base_dir}: {self._first_closed_ancestor()}. Use a directory under /tmp, or "
                "make the parent directories traversable (chmod o+x)."
            )

    def _first_closed_ancestor(self) -> str:
        """Name the directory that locks the service account out, for the error message."""
        assert self._service_account is not None
        account = self._service_account
        for directory in reversed(self.base_dir.parents):
            status = directory.stat()
            if status.st_uid == account.pw_uid:
                may_enter = bool(status.st_mode & 0o100)
            elif status.st_gid == account.pw_gid:
                may_enter = bool(status.st_mode & 0o010)
            else:
                may_enter = bool(status.st_mode & 0o001)
            if not may_enter:
                owner = pwd.getpwuid(status.st_uid).pw_name
                return f"{directory} (mode {status.st_mode & 0o777:04o}, owner {owner}) is closed to it"
        return "a parent directory is closed to it"

    def _write_settings(self) -> None:
        settings = {
            "listen_addresses": LOOPBACK,
            "port": self.port,
            "unix_socket_directories": self.socket_dir,
            # Durability is pointless for a throwaway cluster and fsync dominates test time.
            "fsync": "off",
            "shared_preload_libraries": "pg_stat_statements",
            "wal_level": "replica",
            "max_wal_senders": 5,
            # stderr goes to postgres.log (our redirect or pg_ctl --log); no collector process.
            "logging_collector": "off",
            "log_line_prefix": "%m [%p] %q%u@%d ",
        }
        lines = [f"{name} = '{str(value).replace(chr(39), chr(39) * 2)}'" for name, value in settings.items()]
        self._write_owned_file(self.data_dir / SETTINGS_FILE, "\n".join(lines) + "\n")

    def _start_as_child(self) -> None:
        self._ensure_log_file()
        with self.log_file.open("ab") as log:
            self._postmaster = subprocess.Popen(
                [str(self.bindir / "postgres"), "-D", str(self.data_dir)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Own process group: a terminal Ctrl-C reaches pytest only, whose teardown stops us in order.
                process_group=0,
                preexec_fn=die_with_parent(signal.SIGINT),
                **self._as_service_account(),
            )

    def _start_with_pg_ctl(self, timeout: float) -> None:
        self._ensure_log_file()
        self._run_server_program(
            "pg_ctl",
            "start",
            "--wait",
            f"--timeout={max(1, int(timeout))}",
            f"--pgdata={self.data_dir}",
            f"--log={self.log_file}",
            start_new_session=True,
        )

    def _stop_with_pg_ctl(self, timeout: float) -> None:
        wait = ("--wait", f"--timeout={max(1, int(timeout))}")
        try:
            self._run_server_program("pg_ctl", "stop", f"--pgdata={self.data_dir}", "--mode=fast", *wait)
        except PostgresClusterError:
            if not self.is_running:
                return
            # Fast shutdown waits for walsenders etc.; immediate does not.
            self._run_server_program("pg_ctl", "stop", f"--pgdata={self.data_dir}", "--mode=immediate", *wait)

    def _wait_until_accepting_connections(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self._postmaster is not None and self._postmaster.poll() is not None:
                raise PostgresClusterError(self._describe_failure("the postmaster exited during startup"))
            try:
                with psycopg.connect(self.dsn(), connect_timeout=2):
                    return
            except psycopg.OperationalError as error:
                last_error = error
                time.sleep(0.1)
        raise PostgresClusterError(self._describe_failure(f"no connection within {timeout:.0f}s ({last_error})"))

    def _describe_failure(self, what: str) -> str:
        return f"{self}: {what}. Last lines of {self.log_file}:\n{log_tail(self.log_file)}"

    # -- SQL for test setup ---------------------------------------------------

    def connect(self, dbname: str = "postgres") -> psycopg.Connection[Any]:
        """An autocommit superuser connection; close it (or use it as a context manager)."""
        return psycopg.connect(self.dsn(dbname), autocommit=True)

    def execute(self, query: Query, params: Params | None = None, *, dbname: str = "postgres") -> list[tuple[Any, ...]]:
        """Run one statement in autocommit mode; the rows it returns, if any."""
        with self.connect(dbname) as connection:
            cursor = connection.execute(query, params)
            return cursor.fetchall() if cursor.description is not None else []

    def create_database(self, name: str) -> None:
        self.execute(SQL("CREATE DATABASE {}").format(Identifier(name)))

    @contextlib.contextmanager
    def temporary_database(self, prefix: str = "test") -> Iterator[str]:
        """A new database with a unique name, dropped on exit even if clients are still connected."""
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        self.create_database(name)
        try:
            yield name
        finally:
            self.drop_database(name)

    def drop_database(self, name: str) -> None:
        """Drop even while clients are connected (WITH FORCE), and if it is already gone."""
        self.execute(SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(Identifier(name)))

    # -- running things as the service account --------------------------------

    def _as_service_account(self) -> dict[str, Any]:
        """Popen keyword arguments that run a program as the server's OS user."""
        # cwd=/ because the service account may not be allowed into our working directory.
        kwargs: dict[str, Any] = {"env": _server_environment(), "cwd": "/"}
        if self._service_account is not None:
            kwargs.update(
                user=self._service_account.pw_uid,
                group=self._service_account.pw_gid,
                # The account's own supplementary groups (as `su` would set), not root's.
                extra_groups=os.getgrouplist(self._service_account.pw_name, self._service_account.pw_gid),
            )
        return kwargs

    def _run_server_program(self, program: str, *args: str, **popen_kwargs: Any) -> None:
        argv = [str(self.bindir / program), *args]
        completed = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
            # If we are killed, initdb must not go on writing into a directory our teardown deletes.
            preexec_fn=die_with_parent(signal.SIGTERM),
            **self._as_service_account(),
            **popen_kwargs,
        )
        if completed.returncode != 0:
            output = (completed.stdout + completed.stderr).strip()
            raise PostgresClusterError(self._describe_failure(f"{program} failed (exit {completed.returncode}): {output}"))

    def _ensure_log_file(self) -> None:
        # Created by us (maybe as root) but appended to by pg_ctl as the service user later.
        self.log_file.touch()
        self._give_to_service_account(self.log_file)

    def _write_owned_file(self, path: Path, text: str) -> None:
        path.write_text(text)
        self._give_to_service_account(path)

    def _give_to_service_account(self, path: Path) -> None:
        if self._service_account is not None:
            os.chown(path, self._service_account.pw_uid, self._service_account.pw_gid)


def _service_account() -> pwd.struct_passwd | None:
    """The OS account to run server programs as: `postgres` when we are root, else ourselves (None)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVICE_OS_USER)
    except KeyError:
        raise PostgresClusterError(
            f"Running as root, but there is no {SERVICE_OS_USER!r} OS user to run PostgreSQL as "
            "(it refuses to run as root). Create it, or run the tests as an unprivileged user."
        ) from None


def _server_environment() -> dict[str, str]:
    """Our environment without PG* variables, which would silently change server programs' defaults."""
    return {name: value for name, value in os.environ.items() if not name.startswith("PG")}
