# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host reference: a statement that touches no table, timed in every round beside the measured queries.

Two measurements taken minutes apart compare the schema and the host at once:
a host that is busier during one of them (another tenant's batch, a CI
neighbour, CPU steal on a virtual machine) slows every query it runs, and a
p99 gate cannot tell that from a regression. The reference tells them apart.
It is ``SELECT count(*) FROM (SELECT generate_series(1, N)) AS series``: no
table, no index, no plan a schema change can alter; only the server's CPU and
its scheduler. A comparison divides each query's p99 ratio by the reference's
p90 ratio (``latency_baseline.REFERENCE_PERCENTILE``), and the gate breaches
only when the raw and the net change both clear the threshold.

Contention lands on the tail in proportion to how long a statement runs (a
15 ms statement is far likelier to lose its CPU for a time slice than a 1 ms
one: a 1.5 ms reference did not slow at all where 15 ms lookups lost 40-60%),
so the reference is sized to last about as long as the median query: ``N`` is
calibrated after the warmup. ``compare`` mode reruns the baseline's reference
unchanged; two measurements calibrated each on its own are made comparable by
``scale_to``.

Measured by bench/latency_host_reference.py on a 2-core host
(docs/benchmarks/latency_host_reference.md): of 12 pairs whose second
measurement ran beside two CPU-bound processes or lost half its CPU time, a
10% gate on the raw change breached 12 and the gate net of the reference none;
a dropped index breached 6 of 6 both ways.

What it cannot see: contention that slows the queries more than the reference
(one competing process on two cores: the gate still breached 5 of 6 pairs),
slowdowns outside the CPU (a cold cache, disk or network contention) and
contention that lands on the queries' data only. Those leave the reference as
it was, so the net change is about the raw one, and a large enough one
breaches the gate like a regression.
"""

from __future__ import annotations

import math
import re
import statistics
import time
from typing import Any, Callable, Optional, Sequence

from ansible_collections.keel.postgres.plugins.module_utils.kpi.latency_sampler import LatencyQuery, QuerySamples, SamplerSettings, execute_once

SOURCE_REFERENCE = "reference"
REFERENCE_NAME = "host reference"
# generate_series in the select list, not in FROM: a function scan in FROM stores its rows first, and past work_mem
# (262144 rows) it writes them to temporary files, which is no longer the CPU alone. In the select list it streams.
_SQL = "SELECT count(*) FROM (SELECT generate_series(1, {0:d})) AS series"
_SQL_PATTERN = re.compile(r"^SELECT count\(\*\) FROM \(SELECT generate_series\(1, ([1-9][0-9]{0,9})\)\) AS series$")
# A first guess of about 1 ms on a current server; calibration scales it.
PROBE_SERIES = 16384
MIN_SERIES = 1024
MAX_SERIES = 2 ** 25
MAX_SCALE = 4.0


def reference_sql(series: int) -> str:
    return _SQL.format(int(series))


def series_of(sql: str) -> Optional[int]:
    """The ``N`` of a reference statement, or None when ``sql`` is not one (a hand-edited file)."""
    match = _SQL_PATTERN.match(sql)
    return int(match.group(1)) if match else None


def reference_query(series: int) -> LatencyQuery:
    return LatencyQuery(name=REFERENCE_NAME, sql=reference_sql(series), source=SOURCE_REFERENCE, field="reference")


def calibrated_series(probe_ms: float, query_ms: Sequence[float], probe_series: int = PROBE_SERIES) -> int:
    """The ``N`` whose reference lasts about the median of ``query_ms``, from a probe of ``probe_series`` rows that took ``probe_ms``.

    The reference's time grows linearly with ``N`` above the fixed cost of a round trip, which the probe includes; at
    the sizes that matter (milliseconds) that cost is small. ``N`` is a power of two, so two measurements of the same
    queries, each calibrated on its own (two ``baseline`` runs compared by kpi_check), mostly time the very same
    statement; when they do not, ``scale_to`` makes their times comparable.
    """
    if probe_ms <= 0 or not query_ms:
        return probe_series
    target = statistics.median(query_ms)
    wanted = probe_series * target / probe_ms
    series = 2 ** round(math.log2(max(wanted, 1.0)))
    return max(MIN_SERIES, min(MAX_SERIES, series))


def scale_to(samples_ms: Sequence[float], series: int, target_series: int) -> Optional[list]:
    """``samples_ms`` of a reference of ``series`` rows, as the time of one of ``target_series`` rows; None when the two
    sizes are more than MAX_SCALE apart (the fixed cost of a statement, and how its tail grows with its length, make a
    larger conversion misleading)."""
    factor = target_series / series
    if not 1.0 / MAX_SCALE <= factor <= MAX_SCALE:
        return None
    return [value * factor for value in samples_ms]


def calibrate(conn: Any, queries: Sequence[LatencyQuery], settings: SamplerSettings, warm: Sequence[QuerySamples] = (),
              clock: Callable[[], float] = time.perf_counter) -> LatencyQuery:
    """The reference for ``queries``, sized on their warm timings (``warm``, from the warmup; each query is timed once
    when there are none).

    Each query's time is the median of its warm timings: one execution each was too noisy on a busy host, where one
    lost time slice doubled it. Two steps then: a short probe gives a first size, and a reference of that size gives
    the final one. A short probe alone is fooled on a busy host: it fits between two losses of the CPU that stretch
    the long queries, and the reference came out four times too long. At the queries' length the reference is
    stretched as they are, and its size stays where it was on a quiet host.
    """
    query_ms = [statistics.median(result.samples_ms) for result in warm if result.samples_ms]
    if len(query_ms) < len(queries):
        query_ms = [_timed_ms(conn, query, settings, clock) for query in queries]
    probe = reference_query(PROBE_SERIES)
    _timed_ms(conn, probe, settings, clock)  # the first execution also pays for catalog lookups
    series = calibrated_series(_median_ms(conn, probe, settings, clock), query_ms)
    if series != PROBE_SERIES:
        series = calibrated_series(_median_ms(conn, reference_query(series), settings, clock), query_ms, probe_series=series)
    return reference_query(series)


def _median_ms(conn: Any, query: LatencyQuery, settings: SamplerSettings, clock: Callable[[], float], executions: int = 3) -> float:
    return statistics.median(_timed_ms(conn, query, settings, clock) for _execution in range(executions))


def _timed_ms(conn: Any, query: LatencyQuery, settings: SamplerSettings, clock: Callable[[], float]) -> float:
    return execute_once(conn, query, settings, clock)[0] * 1000.0
