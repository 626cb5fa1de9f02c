"""Latency gate under a busy host: what the 10% p99 gate says, with and without the host reference.

The gate compares two measurements of the same queries taken some time apart. This benchmark takes such pairs on a
throwaway PostgreSQL cluster, two 15 ms index lookups (8000 lookups each in a 200k-row table, the queries of the
kpi_check tests), and disturbs the second measurement of each pair on purpose:

- ``quiet``: nothing; the schema is unchanged, so every breach is a false alarm;
- ``hog1`` / ``hog2``: one or two CPU-bound processes run beside the server (2 cores here: a neighbour, a batch);
- ``steal``: every backend is stopped 4 ms in every 8 (SIGSTOP/SIGCONT, tests/harness/cpu_steal.py): CPU steal as a
  hypervisor does it;
- ``dropped_index``: the index of one lookup is dropped before the second measurement and created again after; the
  only real regression, which the gate must catch.

Each measurement is what ``query_latency`` does in ``baseline`` mode (warmup, the host reference sized after it,
interleaved rounds), each calibrated on its own, as two files given to ``kpi_check`` are. Each pair is compared as
``kpi_check`` compares, and the gate is evaluated at ``--threshold`` twice: on the raw change alone (the gate before
the host reference) and with the reference (a breach needs the net change beyond the threshold too). Beside them, the
lower bound of the net change's interval with the reference read at its p50, p75, p90, p95 and p99, which is how its
p90 was chosen.

The baseline of the comparison is the gate without the reference, in the same run on the same pairs: the report
counts false alarms (breaches on ``quiet``, ``hog*``, ``steal``) and misses (passes on ``dropped_index``) of both.

    /path/to/venv/bin/python bench/latency_host_reference.py --quick   # one pair per scenario, about 2 minutes
    /path/to/venv/bin/python bench/latency_host_reference.py           # three pairs per scenario, about 6 minutes

See bench/README.md and docs/benchmarks/latency_host_reference.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.harness.collection_path import ensure_collection_importable  # noqa: E402

ensure_collection_importable()

import psycopg  # noqa: E402
from ansible_collections.keel.postgres.plugins.module_utils.kpi import kpi_rules  # noqa: E402
from ansible_collections.keel.postgres.plugins.module_utils.kpi.host_reference import calibrate  # noqa: E402
from ansible_collections.keel.postgres.plugins.module_utils.kpi.latency_baseline import build_document, compare  # noqa: E402
from ansible_collections.keel.postgres.plugins.module_utils.kpi.latency_sampler import LatencyQuery, SamplerSettings, sample_latencies  # noqa: E402

from tests.harness.cpu_steal import stolen_cpu  # noqa: E402
from tests.harness.postgres_cluster import PostgresCluster  # noqa: E402

SCENARIOS = ("quiet", "hog1", "hog2", "steal", "dropped_index")
REGRESSIONS = ("dropped_index",)
PERCENTILES = (50, 75, 90, 95, 99)
QUERIES = [
    LatencyQuery("lookup by code", "SELECT count(*), max(i.payload) FROM generate_series(1, 8000) g JOIN items i ON i.code = g * 20"),
    LatencyQuery("lookup by id", "SELECT count(*), max(i.payload) FROM generate_series(1, 8000) g JOIN items i ON i.id = g * 20"),
]
LOAD = [
    "CREATE TABLE items (id bigint PRIMARY KEY, code integer NOT NULL, payload text NOT NULL)",
    "INSERT INTO items SELECT g, g, md5(g::text) FROM generate_series(1, 200000) g",
    "CREATE INDEX items_code ON items (code)",
    "VACUUM (ANALYZE, FREEZE) items",
    "CHECKPOINT",
]


def measure(conn: Any, settings: SamplerSettings) -> Dict[str, Any]:
    """One measurement as query_latency's baseline mode takes it, the host reference calibrated on its own."""
    results = sample_latencies(conn, QUERIES, settings, after_warmup=lambda warm: [calibrate(conn, QUERIES, settings, warm)])
    return build_document(results, settings, conn.info.parameter_status("server_version") or "", conn.info.server_version, conn.info.dbname)


@contextlib.contextmanager
def disturbed(scenario: str, conn: Any, cluster: PostgresCluster) -> Iterator[None]:
    """The scenario's disturbance around the second measurement of a pair."""
    if scenario.startswith("hog"):
        hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _count in range(int(scenario[3:]))]
        try:
            time.sleep(0.5)
            yield
        finally:
            for hog in hogs:
                hog.kill()
                hog.wait()
    elif scenario == "steal":
        with stolen_cpu(int(cluster.pid or 0)):
            yield
    elif scenario == "dropped_index":
        conn.execute("DROP INDEX items_code")
        try:
            yield
        finally:
            conn.execute("CREATE INDEX items_code ON items (code)")
            conn.execute("VACUUM (ANALYZE) items")
    else:
        yield


def without_reference(document: Dict[str, Any]) -> Dict[str, Any]:
    return {key: value for key, value in document.items() if key != "reference"}


def judge_pair(scenario: str, baseline: Dict[str, Any], current: Dict[str, Any], threshold: float) -> Dict[str, Any]:
    comparison = compare(baseline, current)
    with_reference = kpi_rules.evaluate_latency(comparison, threshold)
    raw_only = kpi_rules.evaluate_latency(compare(without_reference(baseline), without_reference(current)), threshold)
    rows = comparison["queries"] + [comparison["overall"]]
    net_by_percentile = {}
    width_by_percentile = {}
    for percentile in PERCENTILES:
        other = compare(baseline, current, reference_percentile=percentile)
        intervals = [entry["p99_net_delta_pct_ci"] for entry in [*other["queries"], other["overall"]]]
        net_by_percentile[str(percentile)] = [interval[0] if interval else None for interval in intervals]
        width_by_percentile[str(percentile)] = [interval[1] - interval[0] if interval else None for interval in intervals]
    return {
        "scenario": scenario,
        "regression": scenario in REGRESSIONS,
        "reference": {key: comparison["reference"].get(key) for key in ("sql", "current_sql", "usable", "reason", "p50_delta_pct", "p99_delta_pct")},
        "rows": [{"name": entry["name"], "p99_delta_pct": entry["p99_delta_pct"], "raw_low": entry["p99_delta_pct_ci"][0],
                  "net_low": (entry["p99_net_delta_pct_ci"] or [None])[0], "net_delta_pct": entry["p99_net_delta_pct"]} for entry in rows],
        "net_low_by_reference_percentile": net_by_percentile,
        "net_width_by_reference_percentile": width_by_percentile,
        "raw_width": [entry["p99_delta_pct_ci"][1] - entry["p99_delta_pct_ci"][0] for entry in rows],
        "breached_raw_only": not raw_only["passed"],
        "breached_with_reference": not with_reference["passed"],
    }


def run(args: argparse.Namespace) -> Dict[str, Any]:
    settings = SamplerSettings(runs=args.runs, warmup=10)
    report: Dict[str, Any] = {"benchmark": "latency_host_reference", "started_at": now(), "threshold_pct": args.threshold,
                              "runs": args.runs, "pairs_per_scenario": args.pairs, "cpus": os.cpu_count(), "pairs": []}
    cluster = PostgresCluster()  # its own directory under the system's temporary directory, removed at the end
    try:
        cluster.initdb()
        cluster.start()
        with psycopg.connect(cluster.dsn("postgres"), autocommit=True) as conn:
            for statement in LOAD:
                conn.execute(statement)
            report["server_version"] = conn.info.parameter_status("server_version")
            for repetition in range(args.pairs):
                for scenario in args.scenarios:
                    baseline = measure(conn, settings)
                    with disturbed(scenario, conn, cluster):
                        current = measure(conn, settings)
                    pair = judge_pair(scenario, baseline, current, args.threshold)
                    pair["repetition"] = repetition
                    report["pairs"].append(pair)
                    print(describe(pair), file=sys.stderr, flush=True)
    finally:
        cluster.remove()
    report["finished_at"] = now()
    report["summary"] = summarize(report)
    return report


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def describe(pair: Dict[str, Any]) -> str:
    rows = ", ".join("{0} raw {1:+.0f}% net {2}".format(row["name"], row["raw_low"], pct(row["net_low"])) for row in pair["rows"])
    return "{0:<14} reference p99 {1}: {2}; gate raw-only {3}, with reference {4}".format(
        pair["scenario"], pct(pair["reference"].get("p99_delta_pct")), rows, verdict(pair["breached_raw_only"]), verdict(pair["breached_with_reference"]))


def pct(value: Optional[float]) -> str:
    return "n/a" if value is None else "{0:+.0f}%".format(value)


def verdict(breached: bool) -> str:
    return "BREACH" if breached else "pass"


def span(values: List[Optional[float]]) -> Tuple[Optional[float], Optional[float]]:
    known = [value for value in values if value is not None]
    return (min(known), max(known)) if known else (None, None)


def summarize(report: Dict[str, Any]) -> Dict[str, Any]:
    scenarios: Dict[str, Any] = {}
    for scenario in dict.fromkeys(pair["scenario"] for pair in report["pairs"]):
        pairs = [pair for pair in report["pairs"] if pair["scenario"] == scenario]
        lows = {str(percentile): span([value for pair in pairs for value in pair["net_low_by_reference_percentile"][str(percentile)]])
                for percentile in PERCENTILES}
        widths = {str(percentile): median_of([value for pair in pairs for value in pair.get("net_width_by_reference_percentile", {}).get(str(percentile), [])])
                  for percentile in PERCENTILES}
        scenarios[scenario] = {
            "raw_width_median": median_of([value for pair in pairs for value in pair.get("raw_width", [])]),
            "net_width_median_by_reference_percentile": widths,
            "pairs": len(pairs),
            "regression": scenario in REGRESSIONS,
            "raw_low": span([row["raw_low"] for pair in pairs for row in pair["rows"]]),
            "net_low": span([row["net_low"] for pair in pairs for row in pair["rows"]]),
            "reference_p99_delta_pct": span([pair["reference"].get("p99_delta_pct") for pair in pairs]),
            "net_low_by_reference_percentile": lows,
            "breaches_raw_only": sum(pair["breached_raw_only"] for pair in pairs),
            "breaches_with_reference": sum(pair["breached_with_reference"] for pair in pairs),
        }
    wrong = {"raw_only": 0, "with_reference": 0}
    for entry in scenarios.values():
        for gate in wrong:
            breaches = entry["breaches_" + gate]
            wrong[gate] += entry["pairs"] - breaches if entry["regression"] else breaches
    return {"scenarios": scenarios, "wrong_verdicts": wrong, "pairs": len(report["pairs"])}


def median_of(values: List[Optional[float]]) -> Optional[float]:
    known = [value for value in values if value is not None]
    return round(statistics.median(known), 1) if known else None


def interval_text(bounds: Tuple[Optional[float], Optional[float]]) -> str:
    low, high = bounds
    if low is None:
        return "n/a"
    return "{0:+.0f}% .. {1:+.0f}%".format(low, high)


def tables(report: Dict[str, Any], markdown: bool) -> str:
    summary = report["summary"]
    head = ["scenario", "pairs", "reference p99 change", "raw lower bound", "net lower bound", "gate raw only", "gate with reference"]
    lines = []
    for scenario, entry in summary["scenarios"].items():
        expected = "breach" if entry["regression"] else "pass"
        lines.append([scenario, str(entry["pairs"]), interval_text(entry["reference_p99_delta_pct"]), interval_text(entry["raw_low"]),
                      interval_text(entry["net_low"]), "{0}/{1} breached (want {2})".format(entry["breaches_raw_only"], entry["pairs"], expected),
                      "{0}/{1} breached (want {2})".format(entry["breaches_with_reference"], entry["pairs"], expected)])
    percentile_head = ["scenario", "raw: width"] + ["reference p{0}: net lower bound, width".format(percentile) for percentile in PERCENTILES]
    percentile_lines = [[scenario, width_text(entry.get("raw_width_median"))]
                        + ["{0}, {1}".format(interval_text(entry["net_low_by_reference_percentile"][str(percentile)]),
                                             width_text(entry.get("net_width_median_by_reference_percentile", {}).get(str(percentile))))
                           for percentile in PERCENTILES]
                        for scenario, entry in summary["scenarios"].items()]
    text = [*render(head, lines, markdown), "", *render(percentile_head, percentile_lines, markdown)]
    text.append("")
    text.append("wrong verdicts at {0:g}% (false alarms + misses): raw only {1}, with the host reference {2}, of {3} pairs".format(
        report["threshold_pct"], summary["wrong_verdicts"]["raw_only"], summary["wrong_verdicts"]["with_reference"], summary["pairs"]))
    return "\n".join(text)


def width_text(width: Optional[float]) -> str:
    """The median width of the 95% intervals, in percentage points."""
    return "n/a" if width is None else "{0:.0f} pt".format(width)


def render(head: List[str], lines: List[List[str]], markdown: bool) -> List[str]:
    if markdown:
        return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(line) + " |" for line in lines]
    widths = [max(len(cell) for cell in column) for column in zip(head, *lines)]
    return ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in [head, *lines]]


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n", maxsplit=1)[0])
    parser.add_argument("--pairs", type=int, default=3, help="pairs of measurements per scenario (default 3)")
    parser.add_argument("--runs", type=int, default=150, help="rounds per measurement (default 150)")
    parser.add_argument("--threshold", type=float, default=10.0, help="the gate's threshold in percent (default 10)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated subset of " + ",".join(SCENARIOS))
    parser.add_argument("--quick", action="store_true", help="one pair per scenario")
    parser.add_argument("--output", type=Path, help="the JSON report (default bench/results/latency_host_reference-<stamp>.json)")
    parser.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    parser.add_argument("--from-json", type=Path, metavar="REPORT", help="only print the tables of an earlier JSON report")
    args = parser.parse_args(argv)
    args.scenarios = [name for name in args.scenarios.split(",") if name]
    unknown = [name for name in args.scenarios if name not in SCENARIOS]
    if unknown:
        parser.error("--scenarios: unknown {0}; choose from {1}".format(", ".join(unknown), ", ".join(SCENARIOS)))
    if args.quick:
        args.pairs = 1
    if args.pairs < 1 or args.runs < 100:
        parser.error("--pairs must be at least 1 and --runs at least 100 (a p99 needs 100 samples)")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if args.from_json:
        report = json.loads(args.from_json.read_text(encoding="utf-8"))
        print(tables(report, args.markdown))
        return 0
    report = run(args)
    output = args.output or REPO_ROOT / "bench" / "results" / "latency_host_reference-{0}.json".format(report["started_at"].replace(":", ""))
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(report["summary"], indent=1))
    print(tables(report, args.markdown))
    print("report: {0}".format(output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
