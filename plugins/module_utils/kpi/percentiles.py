# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Percentiles and latency summaries, defined once for every KPI.

Definition used everywhere (``percentile``): linear interpolation between the
closest ranks, the "inclusive" definition (Hyndman & Fan type 7, the default of
numpy.percentile, R's quantile() and PostgreSQL's ``percentile_cont``). With the
``n`` values sorted ascending as ``x[0] .. x[n-1]`` and ``q`` in [0, 100]::

    h = (n - 1) * q / 100
    percentile = x[floor(h)] + (h - floor(h)) * (x[floor(h) + 1] - x[floor(h)])

so the 0th percentile is the minimum, the 100th the maximum, and the 50th the
usual median. Pure Python, no I/O: the same numbers come out of a module run,
a baseline file and a unit test.
"""

from __future__ import annotations

import math
from typing import Dict, Sequence, Union

Number = Union[int, float]

# A p99 estimate needs at least this many samples to mean anything.
#
# With fewer than 100 samples, fewer than one sample is expected above the true
# 99th percentile, and the interpolated p99 lies between the two largest samples
# (with 20 samples it is 0.81 of the way from the 19th to the 20th): the "p99"
# is then essentially the maximum, set by a single outlier (one GC pause, one
# checkpoint), and it jumps from run to run. From 100 samples on, the estimate
# rests on the ranks around the 99th value, and a bootstrap interval around it
# (see latency_baseline.compare) becomes informative.
MIN_SAMPLES_FOR_P99 = 100

DEFINITION = "linear interpolation between closest ranks (inclusive, Hyndman-Fan type 7, as numpy.percentile and percentile_cont)"


def percentile(values: Sequence[Number], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``values`` by the module's definition (see above)."""
    if not values:
        raise ValueError("percentile of an empty sample")
    if not 0 <= q <= 100:
        raise ValueError("percentile must be between 0 and 100, got {0}".format(q))
    return percentile_of_sorted(sorted(values), q)


def percentile_of_sorted(ordered: Sequence[Number], q: float) -> float:
    """``percentile`` for values already sorted ascending (no copy, no check), for hot loops."""
    position = (len(ordered) - 1) * q / 100.0
    lower = math.floor(position)
    fraction = position - lower
    if fraction == 0 or lower + 1 >= len(ordered):
        return float(ordered[lower])
    return float(ordered[lower] + fraction * (ordered[lower + 1] - ordered[lower]))


def p99_reliable(n: int) -> bool:
    """Whether ``n`` samples are enough for a meaningful p99 (``MIN_SAMPLES_FOR_P99``, see why above)."""
    return n >= MIN_SAMPLES_FOR_P99


def summarize(values: Sequence[Number], digits: int = 4) -> Dict[str, object]:
    """n, min, p50, p95, p99, max, mean (in the unit of ``values``, rounded to ``digits``) and ``p99_reliable``."""
    if not values:
        raise ValueError("summary of an empty sample")
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "min": round(float(ordered[0]), digits),
        "p50": round(percentile_of_sorted(ordered, 50), digits),
        "p95": round(percentile_of_sorted(ordered, 95), digits),
        "p99": round(percentile_of_sorted(ordered, 99), digits),
        "max": round(float(ordered[-1]), digits),
        "mean": round(math.fsum(ordered) / len(ordered), digits),
        "p99_reliable": p99_reliable(len(ordered)),
    }
