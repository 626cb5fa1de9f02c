# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The streaming dump pipeline: pg_dump -Fc -Z0 -> zstandard -> AES-256-GCM chunks -> store writer.

Nothing is buffered beyond one read block, zstd's own job buffers and one
sealed chunk (plus what the store writer queues), so memory does not grow
with the database. pg_dump compresses nothing itself (``-Z0``): zstd with
worker threads is several times faster than pg_dump's gzip at a similar ratio.
The password reaches pg_dump through its environment, never its command line.
"""

from __future__ import annotations

import collections
import hashlib
import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Deque, Dict, List, Mapping, Optional, Sequence, Tuple

from ansible_collections.keel.postgres.plugins.module_utils.backup.object_store import ObjectWriter
from ansible_collections.keel.postgres.plugins.module_utils.errors import ClientToolProblem

READ_BLOCK = 1024 * 1024
_PIPE_SIZE = 1024 * 1024
_F_SETPIPE_SZ = 1031  # Linux fcntl; a bigger pipe means fewer wake-ups between pg_dump and us
_STDERR_LINES_KEPT = 40

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


@dataclass
class PipelineResult:
    raw_bytes: int = 0
    compressed_bytes: int = 0
    stored_bytes: int = 0
    stored_sha256: str = ""
    stages_ms: Dict[str, float] = field(default_factory=dict)


def pg_dump_invocation(pg_dump: str, conn_kwargs: Mapping[str, Any], schemas: Sequence[str],
                       snapshot: Optional[str]) -> Tuple[List[str], Dict[str, str]]:
    """The argv and environment of a plain-data custom-format dump; secrets only in the environment."""
    # Unset options fall through to the inherited PG* variables, as they do for our own connection.
    env = dict(os.environ)
    conninfo_parts = []
    for key, value in conn_kwargs.items():
        if value is None:
            continue
        if key in _LIBPQ_ENV:
            env[_LIBPQ_ENV[key]] = str(value)
        else:  # connect_params: validated not to hold a password
            conninfo_parts.append("{0}={1}".format(key, _conninfo_quote(str(value))))
    argv = [pg_dump, "--format=custom", "--compress=0", "--no-password"]
    if conninfo_parts:
        conninfo_parts.append("dbname=" + _conninfo_quote(str(conn_kwargs.get("dbname", ""))))
        argv.append("--dbname=" + " ".join(conninfo_parts))
    if snapshot:
        argv.append("--snapshot=" + snapshot)
    for schema in schemas:
        argv.append("--schema=" + _pattern_literal(schema))
    return argv, env


def run_pipeline(argv: List[str], env: Dict[str, str], compressor: Any, sealer: Any, writer: ObjectWriter) -> PipelineResult:
    """Stream pg_dump's output through ``compressor`` and ``sealer`` into ``writer``.

    The caller commits or aborts ``writer``; on any failure here pg_dump is
    stopped and the error says why (pg_dump's stderr tail for a failed dump).
    """
    result = PipelineResult()
    stages = {"dump": 0.0, "compress": 0.0, "encrypt": 0.0, "store": 0.0}
    digest = hashlib.sha256()

    def emit(sealed: bytes) -> None:
        if not sealed:
            return
        began = time.monotonic()
        writer.write(sealed)
        stages["store"] += time.monotonic() - began
        digest.update(sealed)
        result.stored_bytes += len(sealed)

    def seal(compressed: bytes) -> None:
        if not compressed:
            return
        result.compressed_bytes += len(compressed)
        began = time.monotonic()
        sealed = sealer.feed(compressed)
        stages["encrypt"] += time.monotonic() - began
        emit(sealed)

    emit(sealer.header_bytes)
    process = _start(argv, env)
    stderr_tail: Deque[str] = collections.deque(maxlen=_STDERR_LINES_KEPT)
    stderr_reader = threading.Thread(target=_drain_stderr, args=(process, stderr_tail), daemon=True)
    stderr_reader.start()
    try:
        while True:
            began = time.monotonic()
            block = process.stdout.read(READ_BLOCK)
            stages["dump"] += time.monotonic() - began
            if not block:
                break
            result.raw_bytes += len(block)
            began = time.monotonic()
            compressed = compressor.compress(block)
            stages["compress"] += time.monotonic() - began
            seal(compressed)
        began = time.monotonic()
        compressed = compressor.flush()
        stages["compress"] += time.monotonic() - began
        seal(compressed)
        returncode = process.wait()
        stderr_reader.join(timeout=10)
        if returncode != 0:
            raise ClientToolProblem("pg_dump failed (exit code {0}): {1}".format(returncode, " | ".join(stderr_tail) or "no message"))
        began = time.monotonic()
        final = sealer.finish()
        stages["encrypt"] += time.monotonic() - began
        emit(final)
    finally:
        _stop(process)
    result.stored_sha256 = digest.hexdigest()
    result.stages_ms = {name: round(seconds * 1000.0, 3) for name, seconds in stages.items()}
    return result


def _start(argv: List[str], env: Dict[str, str]) -> subprocess.Popen:
    try:
        process = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   bufsize=READ_BLOCK, close_fds=True)
    except OSError as exc:
        raise ClientToolProblem("could not run {0}: {1}".format(argv[0], exc.strerror or exc)) from None
    _widen_pipe(process.stdout)
    return process


def _widen_pipe(stream: Any) -> None:
    try:
        import fcntl

        fcntl.fcntl(stream.fileno(), _F_SETPIPE_SZ, _PIPE_SIZE)
    except (ImportError, OSError, ValueError):
        pass  # not Linux, or above /proc/sys/fs/pipe-max-size: the default pipe works, a little slower


def _drain_stderr(process: subprocess.Popen, tail: Deque[str]) -> None:
    # Read continuously so a chatty pg_dump never blocks on a full stderr pipe.
    for raw in iter(process.stderr.readline, b""):
        line = raw.decode("utf-8", "replace").strip()
        if line:
            tail.append(line)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()


def _conninfo_quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _pattern_literal(name: str) -> str:
    # pg_dump -n takes a pattern: quote the name so '*', '?' and upper case mean themselves.
    return '"' + name.replace('"', '""') + '"'
