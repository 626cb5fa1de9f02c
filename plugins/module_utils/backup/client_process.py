# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Running pg_dump / pg_restore as child processes: their connection, their stderr, their end.

The connection reaches the tool through libpq environment variables, so the
password is never on a command line (where ``ps`` shows it to every user).
Only options without an environment variable (``connect_params``, validated
to hold no password) travel as a ``--dbname`` connection string.
"""

from __future__ import annotations

import collections
import contextlib
import os
import subprocess
import threading
from typing import Any, Deque, Dict, List, Mapping, Optional, Tuple

from ansible_collections.keel.postgres.plugins.module_utils import client_tools
from ansible_collections.keel.postgres.plugins.module_utils.errors import ClientToolProblem

STDERR_LINES_KEPT = 40
_PIPE_SIZE = 1024 * 1024
_F_SETPIPE_SZ = 1031  # Linux fcntl; a bigger pipe means fewer wake-ups between the tool and us

# libpq keywords that have an environment variable; the password only ever travels this way.
_LIBPQ_ENV = {
    "host": "PGHOST",
    "port": "PGPORT",
    "user": "PGUSER",
    "password": "PGPASSWORD",
    "dbname": "PGDATABASE",
    "sslmode": "PGSSLMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "application_name": "PGAPPNAME",
}


def libpq_invocation(conn_kwargs: Mapping[str, Any]) -> Tuple[List[str], Dict[str, str]]:
    """The ``--dbname`` argument and the environment that connect a client tool like ``conn_kwargs``."""
    # Unset options fall through to the inherited PG* variables, as they do for our own connection.
    env = dict(os.environ)
    conninfo_parts = []
    for key, value in conn_kwargs.items():
        if value is None:
            continue
        if key in _LIBPQ_ENV:
            env[_LIBPQ_ENV[key]] = str(value)
        else:  # connect_params: validated not to hold a password
            conninfo_parts.append("{0}={1}".format(key, conninfo_quote(str(value))))
    # pg_restore needs --dbname even when PGDATABASE is set; it carries no secret.
    conninfo_parts.append("dbname=" + conninfo_quote(str(conn_kwargs.get("dbname") or env.get("PGDATABASE", ""))))
    return ["--dbname=" + " ".join(conninfo_parts)], env


def conninfo_quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class ClientProcess:
    """A client tool with its stderr drained on a thread (the last lines kept for error messages)."""

    def __init__(self, argv: List[str], env: Dict[str, str], stdin: Any = subprocess.DEVNULL, stdout: Any = subprocess.DEVNULL,
                 bufsize: int = -1) -> None:
        self.tool = os.path.basename(argv[0])
        self.stderr_tail: Deque[str] = collections.deque(maxlen=STDERR_LINES_KEPT)
        try:
            self.process = subprocess.Popen(argv, env=env, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE, bufsize=bufsize, close_fds=True)
        except OSError as exc:
            raise ClientToolProblem("could not run {0}: {1}".format(argv[0], exc.strerror or exc)) from None
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                _widen_pipe(stream)
        self._stderr_reader = threading.Thread(target=self._drain_stderr, daemon=True)
        self._stderr_reader.start()

    def wait(self) -> int:
        returncode = self.process.wait()
        self._stderr_reader.join(timeout=10)
        return returncode

    def failure(self, returncode: int) -> ClientToolProblem:
        return ClientToolProblem("{0} failed (exit code {1}): {2}".format(self.tool, returncode, " | ".join(self.stderr_tail) or "no message"))

    def check(self) -> None:
        """Wait for the tool and raise ClientToolProblem with its stderr tail if it failed."""
        returncode = self.wait()
        if returncode != 0:
            raise self.failure(returncode)

    def stop(self) -> None:
        """Kill the tool if it still runs and close our ends of its pipes; safe to call twice."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None:
                # A broken pipe on close means the tool is gone either way.
                with contextlib.suppress(OSError):
                    stream.close()

    def _drain_stderr(self) -> None:
        # Read continuously so a chatty tool never blocks on a full stderr pipe.
        for raw in iter(self.process.stderr.readline, b""):
            line = raw.decode("utf-8", "replace").strip()
            if line:
                self.stderr_tail.append(line)


def _widen_pipe(stream: Any) -> None:
    try:
        import fcntl

        fcntl.fcntl(stream.fileno(), _F_SETPIPE_SZ, _PIPE_SIZE)
    except (ImportError, OSError, ValueError):
        pass  # not Linux, or above /proc/sys/fs/pipe-max-size: the default pipe works, a little slower


def find_tool(tool: str, bin_dir: Optional[str], server_version_num: int) -> str:
    """The path of a ``tool`` able to serve this server version, or ClientToolProblem saying why not."""
    report = client_tools.inspect_client_tool(tool, bin_dir, server_version_num)
    client_tools.require_compatible(report)
    return str(report["path"])
