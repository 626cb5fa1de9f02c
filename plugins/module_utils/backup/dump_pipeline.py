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

import hashlib
import subprocess
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from ansible_collections.keel.postgres.plugins.module_utils.backup.client_process import ClientProcess, libpq_invocation
from ansible_collections.keel.postgres.plugins.module_utils.backup.object_store import ObjectWriter
from ansible_collections.keel.postgres.plugins.module_utils.observe.metrics import RunMetrics

READ_BLOCK = 1024 * 1024
STAGES = ("dump", "compress", "encrypt", "store")


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
    dbname_args, env = libpq_invocation(conn_kwargs)
    argv = [pg_dump, "--format=custom", "--compress=0", "--no-password", *dbname_args]
    if snapshot:
        argv.append("--snapshot=" + snapshot)
    for schema in schemas:
        argv.append("--schema=" + _pattern_literal(schema))
    return argv, env


def run_pipeline(argv: List[str], env: Dict[str, str], compressor: Any, sealer: Any, writer: ObjectWriter,
                 metrics: Optional[RunMetrics] = None, progress: Optional[Callable[[int], None]] = None) -> PipelineResult:
    """Stream pg_dump's output through ``compressor`` and ``sealer`` into ``writer``.

    The caller commits or aborts ``writer``; on any failure here pg_dump is
    stopped and the error says why (pg_dump's stderr tail for a failed dump).
    With ``metrics`` the stages are phases of the run (children of the
    caller's open phase) carrying their bytes; ``progress`` is called with the
    raw bytes read so far after every block.
    """
    result = PipelineResult()
    # Stages are timed like a module's phases; waiting for pg_dump counts as "dump". The stages take turns on this
    # thread, so their times add up to the stream's; zstd's workers and the S3 part thread run beside them, and
    # "store" is the time writes waited for them (back-pressure), not the network time of each part.
    clock = metrics if metrics is not None else RunMetrics()
    digest = hashlib.sha256()

    def emit(sealed: bytes) -> None:
        if sealed:
            with clock.phase("store"):
                writer.write(sealed)
                clock.count("stored_bytes", len(sealed))
            digest.update(sealed)
            result.stored_bytes += len(sealed)

    def seal(compressed: bytes) -> None:
        if compressed:
            result.compressed_bytes += len(compressed)
            with clock.phase("encrypt"):
                sealed = sealer.feed(compressed)
                clock.count("compressed_bytes", len(compressed))
            emit(sealed)

    emit(sealer.header_bytes)
    dump = ClientProcess(argv, env, stdout=subprocess.PIPE, bufsize=READ_BLOCK)
    try:
        while True:
            with clock.phase("dump"):
                block = dump.process.stdout.read(READ_BLOCK)
                clock.count("raw_bytes", len(block))
            if not block:
                break
            result.raw_bytes += len(block)
            if progress is not None:
                progress(result.raw_bytes)
            with clock.phase("compress"):
                compressed = compressor.compress(block)
            seal(compressed)
        with clock.phase("compress"):
            compressed = compressor.flush()
        seal(compressed)
        dump.check()
        with clock.phase("encrypt"):
            final = sealer.finish()
        emit(final)
    finally:
        dump.stop()
    result.stored_sha256 = digest.hexdigest()
    result.stages_ms = {name: elapsed for name, elapsed in clock.phases_ms().items() if name in STAGES}
    return result


def _pattern_literal(name: str) -> str:
    # pg_dump -n takes a pattern: quote the name so '*', '?' and upper case mean themselves.
    return '"' + name.replace('"', '""') + '"'
