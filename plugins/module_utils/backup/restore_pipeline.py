# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Feeding a backup's decrypted dump into pg_restore, without a plaintext file on disk.

With one job, the dump streams into pg_restore's stdin and pg_restore runs
in a single transaction: the dump's bytes are authenticated chunk by chunk
while they stream, and if any chunk fails (or the stream ends early) pg_restore
is killed before it can commit, so the target is left as it was.

Parallel pg_restore (``jobs`` > 1) needs a seekable archive. Then the
authenticated dump is written to a file in a private temporary directory
(0700, the file 0600), pg_restore starts only once the whole stream has been
authenticated, and the directory is removed whatever happens. That file is
the only plaintext keel ever writes; use one job where that is not acceptable.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Mapping, Optional

from ansible_collections.keel.postgres.plugins.module_utils.backup.client_process import ClientProcess, libpq_invocation


@dataclass(frozen=True)
class RestoreOptions:
    jobs: int = 1
    clean: bool = False
    no_owner: bool = False  # also skips privileges: for scratch restores where the roles may not exist
    temp_dir: Optional[str] = None  # parent of the private directory used when jobs > 1


@dataclass
class RestoreStreamResult:
    dump_bytes: int = 0
    stages_ms: Dict[str, float] = field(default_factory=dict)
    spooled: bool = False  # True when a private temporary file was used (jobs > 1)


def pg_restore_invocation(pg_restore: str, conn_kwargs: Mapping[str, Any], options: RestoreOptions,
                          archive_path: Optional[str] = None) -> tuple:
    dbname_args, env = libpq_invocation(conn_kwargs)
    argv: List[str] = [pg_restore, "--no-password", "--exit-on-error", *dbname_args]
    if archive_path is None:
        argv.append("--single-transaction")
    else:
        argv.append("--jobs={0}".format(options.jobs))
    if options.clean:
        argv += ["--clean", "--if-exists"]
    if options.no_owner:
        argv += ["--no-owner", "--no-privileges"]
    if archive_path is not None:
        argv.append(archive_path)
    return argv, env


def restore_dump(dump: Iterator[bytes], pg_restore: str, conn_kwargs: Mapping[str, Any], options: RestoreOptions) -> RestoreStreamResult:
    """Restore the dump bytes ``dump`` yields (authenticated as they come) into the database ``conn_kwargs`` names."""
    if options.jobs > 1:
        return _restore_spooled(dump, pg_restore, conn_kwargs, options)
    return _restore_streamed(dump, pg_restore, conn_kwargs, options)


def _restore_streamed(dump: Iterator[bytes], pg_restore: str, conn_kwargs: Mapping[str, Any], options: RestoreOptions) -> RestoreStreamResult:
    result = RestoreStreamResult()
    argv, env = pg_restore_invocation(pg_restore, conn_kwargs, options)
    began = time.monotonic()
    tool = ClientProcess(argv, env, stdin=subprocess.PIPE, bufsize=0)
    completed = False
    try:
        for block in dump:
            result.dump_bytes += len(block)
            try:
                tool.process.stdin.write(block)
            except BrokenPipeError:
                break  # pg_restore stopped reading: its exit code and stderr say why
        else:
            completed = True
        if completed:
            tool.process.stdin.close()
        returncode = tool.wait() if completed else _finish_after_broken_pipe(tool)
        if returncode != 0:
            raise tool.failure(returncode)
    finally:
        # A stream that failed authentication raises out of the loop above: pg_restore
        # is killed inside its single transaction, so nothing it restored commits.
        tool.stop()
    result.stages_ms = {"restore": round((time.monotonic() - began) * 1000.0, 3)}
    return result


def _finish_after_broken_pipe(tool: ClientProcess) -> int:
    returncode = tool.wait()
    return returncode if returncode != 0 else 1


def _restore_spooled(dump: Iterator[bytes], pg_restore: str, conn_kwargs: Mapping[str, Any], options: RestoreOptions) -> RestoreStreamResult:
    result = RestoreStreamResult(spooled=True)
    private_dir = tempfile.mkdtemp(prefix="keel-restore-", dir=options.temp_dir)  # mode 0700
    try:
        archive_path = os.path.join(private_dir, "dump.pgc")
        began = time.monotonic()
        descriptor = os.open(archive_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as archive:
            for block in dump:
                result.dump_bytes += len(block)
                archive.write(block)
        spooled_at = time.monotonic()
        argv, env = pg_restore_invocation(pg_restore, conn_kwargs, options, archive_path)
        tool = ClientProcess(argv, env)
        try:
            tool.check()
        finally:
            tool.stop()
        result.stages_ms = {"spool": round((spooled_at - began) * 1000.0, 3), "restore": round((time.monotonic() - spooled_at) * 1000.0, 3)}
    finally:
        shutil.rmtree(private_dir, ignore_errors=True)
    return result
