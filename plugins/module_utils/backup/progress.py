# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Percent done and ETA of a running backup, in a small JSON file another task can read.

A module run with Ansible ``async`` cannot report while it runs: async_wrapper
writes the job file once, with the module's result, when the module exits, so
``async_status`` shows nothing but ``started`` until then. The honest channel
is a file of our own at a path the playbook chooses (``progress_file``),
replaced atomically so a reader (``slurp``, ``cat``, a monitoring agent) never
sees half of it, and rewritten at most every ``interval`` seconds.

The total is an estimate: ``pg_database_size`` counts indexes, free space and
other schemas, which pg_dump does not emit, so the dump is usually smaller.
Percent is therefore capped at 99 until the stream ends, and the ETA is the
remaining estimate at the rate measured so far.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import time
from typing import Any, Callable, Dict, Optional

from ansible_collections.keel.postgres.plugins.module_utils.durable_files import replace_file
from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption

RUNNING_CAP_PERCENT = 99.0


def check_progress_path(path: Optional[str]) -> Optional[str]:
    """Refuse, before any work, a progress file whose directory does not exist."""
    if not path:
        return None
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise InvalidOption("progress_file", "directory {0} does not exist".format(directory))
    return os.path.abspath(path)


def progress_figures(done_bytes: int, expected_bytes: int, elapsed_seconds: float, finished: bool) -> Dict[str, Any]:
    """Percent done, rate and ETA from bytes dumped so far against the expected total."""
    rate = done_bytes / elapsed_seconds if elapsed_seconds > 0 else None
    if finished:
        return {"percent": 100.0, "rate_bytes_per_second": rate, "eta_seconds": 0.0}
    percent = min(RUNNING_CAP_PERCENT, done_bytes * 100.0 / expected_bytes) if expected_bytes > 0 else None
    remaining = max(0, expected_bytes - done_bytes)
    eta = remaining / rate if rate else None
    return {"percent": round(percent, 1) if percent is not None else None, "rate_bytes_per_second": rate,
            "eta_seconds": round(eta, 1) if eta is not None else None}


class ProgressFile:
    """Rewrites ``path`` with the backup's progress; ``finish`` writes the final state."""

    def __init__(self, path: str, tenant: str, expected_bytes: int, interval: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.tenant = tenant
        self.expected_bytes = expected_bytes
        self.interval = interval
        self._clock = clock
        self._began = clock()
        self._last_write: Optional[float] = None
        self.last: Dict[str, Any] = {}

    def update(self, done_bytes: int) -> None:
        now = self._clock()
        if self._last_write is not None and now - self._last_write < self.interval:
            return
        self._last_write = now
        self._write(done_bytes, "running")

    def finish(self, done_bytes: int, state: str = "done") -> Dict[str, Any]:
        self._write(done_bytes, state)
        return self.last

    def fail(self) -> None:
        """Say the backup failed, so a reader does not wait on "running"; a file that cannot be written is left as it is."""
        # The backup's own failure is what the task reports; a progress file it cannot write must not replace it.
        with contextlib.suppress(OSError):
            self._write(int(self.last.get("raw_bytes_done") or 0), "failed")

    def _write(self, done_bytes: int, state: str) -> None:
        figures = progress_figures(done_bytes, self.expected_bytes, self._clock() - self._began, state == "done")
        self.last = dict(figures, tenant=self.tenant, state=state, raw_bytes_done=done_bytes, expected_bytes=self.expected_bytes,
                         estimate_source="pg_database_size",
                         updated_at=datetime.datetime.now(datetime.timezone.utc).isoformat())
        replace_file(self.path, json.dumps(self.last, sort_keys=True).encode("utf-8") + b"\n", 0o644)
