# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The application's latency while a migration runs, sampled by a query the user gives (``probe_query``).

The probe runs on its own connection in a background thread, read only, every
``probe_interval`` seconds from the migration's start to its end, so it sees
what the application sees: lock waits, I/O competition with the backfill. It
can never fail the migration: a probe that errors (bad SQL, a write refused by
the read-only transaction, a timeout, a lost connection) is counted in
``probe_errors`` and tried again at the next tick on a new connection.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any, Callable, List, NamedTuple, Optional

from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption
from ansible_collections.keel.postgres.plugins.module_utils.kpi.percentiles import percentile_of_sorted
from ansible_collections.keel.postgres.plugins.module_utils.observe.metrics import RunMetrics
from ansible_collections.keel.postgres.plugins.module_utils.units import parse_duration

# A probe slower than this counts as an error: the migration must not wait long for its last sample.
PROBE_STATEMENT_TIMEOUT_MS = 10000


class ProbeSettings(NamedTuple):
    query: str
    interval: float  # seconds between the starts of two samples


def probe_settings(query: Optional[str], interval: Any) -> Optional[ProbeSettings]:
    """The probe options checked (before any change), or None when no probe is asked for."""
    if query is None:
        return None
    if not query.strip():
        raise InvalidOption("probe_query", "must be a query, got an empty string")
    seconds = parse_duration(interval, "probe_interval")
    if seconds <= 0:
        raise InvalidOption("probe_interval", "must be more than 0, got {0!r}".format(interval))
    return ProbeSettings(query, seconds)


class LatencyProbe:
    """Use as a context manager around the migration; the samples become metrics when it ends."""

    def __init__(self, connect: Callable[[], Any], settings: ProbeSettings, metrics: RunMetrics) -> None:
        self.connect = connect
        self.settings = settings
        self.metrics = metrics
        self.samples_ms: List[float] = []
        self.errors = 0
        self.first_error: Optional[str] = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="keel-latency-probe", daemon=True)

    def __enter__(self) -> "LatencyProbe":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._stop.set()
        self._thread.join(PROBE_STATEMENT_TIMEOUT_MS / 1000.0 + 5.0)
        self.record()

    def _loop(self) -> None:
        conn = None
        try:
            while True:
                conn = self._sample(conn)
                if self._stop.wait(self.settings.interval):
                    return
        finally:
            _close(conn)

    def _sample(self, conn: Any) -> Any:
        try:
            if conn is None:
                conn = self.connect()
                conn.execute("SET default_transaction_read_only = on")
                conn.execute("SET statement_timeout = {0}".format(PROBE_STATEMENT_TIMEOUT_MS))
            began = time.perf_counter()
            cursor = conn.execute(self.settings.query)
            if cursor.description is not None:
                cursor.fetchall()
            self.samples_ms.append((time.perf_counter() - began) * 1000.0)
            return conn
        except Exception as exc:  # the probe observes; it never decides the migration's fate
            self.errors += 1
            if self.first_error is None:
                # The class name only: a message could quote the query's data or the connection's secrets.
                self.first_error = type(exc).__name__
            _close(conn)
            return None

    def record(self) -> None:
        samples = sorted(self.samples_ms)
        self.metrics.count("probe_samples", len(samples))
        self.metrics.count("probe_errors", self.errors)
        if samples:
            self.metrics.gauge("probe_latency_p50_ms", round(percentile_of_sorted(samples, 50), 3))
            self.metrics.gauge("probe_latency_p99_ms", round(percentile_of_sorted(samples, 99), 3))
            self.metrics.gauge("probe_latency_max_ms", round(samples[-1], 3))

    def summary(self) -> dict:
        samples = sorted(self.samples_ms)
        return {
            "samples": len(samples),
            "errors": self.errors,
            "first_error": self.first_error,
            "p50_ms": round(percentile_of_sorted(samples, 50), 3) if samples else None,
            "p99_ms": round(percentile_of_sorted(samples, 99), 3) if samples else None,
            "max_ms": round(samples[-1], 3) if samples else None,
        }


def _close(conn: Any) -> None:
    if conn is None:
        return
    with contextlib.suppress(Exception):  # already gone
        conn.close()
