"""The Prometheus textfile: merge rules across runs, names and units, and the file itself."""

from __future__ import annotations

import pytest
from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption
from ansible_collections.keel.postgres.plugins.module_utils.observe import textfile
from ansible_collections.keel.postgres.plugins.module_utils.observe.exposition import parse_families
from prometheus_client.parser import text_string_to_metric_families


def run_metrics(tenant, stored, phases=None):
    return {"duration_ms": 1500.0, "phases_ms": phases or {"dump": 1000.0, "upload": 400.0},
            "counters": {"stored_bytes": stored, "s3_put_requests": 3, "longest_lock_attempt_ms": 40.0},
            "gauges": {"throughput_raw_bytes_per_second": 1000.0}, "series": [
                {"name": "storage_monthly_cost", "labels": {"tier": "standard", "currency": "EUR"}, "value": 0.25}],
            "labels": {"tenant": tenant, "db": "app"}}


def write(path, tenant, stored, succeeded=True, at=1000.0, **extra):
    return textfile.write_textfile(str(path), "backup", run_metrics(tenant, stored, **extra), ("longest_lock_attempt_ms",), succeeded, at)


def samples(path):
    families = parse_families(path.read_text())
    assert families is not None
    return {(name, labels): value for name, family in families.items() for labels, value in family.samples.items()}


def value(path, name, **labels):
    wanted = tuple(sorted(dict(labels).items()))
    return samples(path).get((name, wanted))


def test_names_carry_units_and_counters_add_up_over_runs(tmp_path):
    path = tmp_path / "keel.prom"
    write(path, "acme", 100, at=1000.0)
    write(path, "acme", 50, at=2000.0)
    own = {"module": "backup", "tenant": "acme", "db": "app"}
    assert value(path, "keel_backup_stored_bytes_total", **own) == 150.0
    assert value(path, "keel_backup_s3_put_requests_total", **own) == 6.0
    assert value(path, "keel_backup_longest_lock_attempt_seconds", **own) == pytest.approx(0.04), "a maximum is a gauge, in seconds"
    assert value(path, "keel_runs_total", outcome="success", **own) == 2.0
    assert value(path, "keel_last_success_timestamp_seconds", **own) == 2000.0
    assert value(path, "keel_run_duration_seconds", **own) == 1.5
    assert value(path, "keel_phase_duration_seconds", phase="dump", **own) == 1.0
    assert value(path, "keel_backup_storage_monthly_cost", tier="standard", currency="EUR", **own) == 0.25
    families = {family.name: family for family in text_string_to_metric_families(path.read_text())}
    assert families["keel_runs"].type == "counter" and families["keel_last_success_timestamp_seconds"].type == "gauge"


def test_a_failed_run_keeps_the_last_success_time_and_counts_a_failure(tmp_path):
    path = tmp_path / "keel.prom"
    write(path, "acme", 100, at=1000.0)
    write(path, "acme", 0, succeeded=False, at=5000.0)
    own = {"module": "backup", "tenant": "acme", "db": "app"}
    assert value(path, "keel_last_success_timestamp_seconds", **own) == 1000.0
    assert value(path, "keel_last_run_timestamp_seconds", **own) == 5000.0
    assert value(path, "keel_last_run_success", **own) == 0.0
    assert value(path, "keel_runs_total", outcome="failure", **own) == 1.0
    assert value(path, "keel_runs_total", outcome="success", **own) == 1.0


def test_runs_with_other_labels_keep_their_series_and_a_phase_that_did_not_run_again_is_dropped(tmp_path):
    path = tmp_path / "keel.prom"
    write(path, "acme", 100)
    write(path, "globex", 7)
    write(path, "acme", 1, phases={"dump": 10.0})
    assert value(path, "keel_backup_stored_bytes_total", module="backup", tenant="globex", db="app") == 7.0
    assert value(path, "keel_phase_duration_seconds", module="backup", tenant="globex", db="app", phase="upload") == 0.4
    assert value(path, "keel_phase_duration_seconds", module="backup", tenant="acme", db="app", phase="upload") is None


def test_a_file_keel_did_not_write_is_replaced_and_said_so(tmp_path):
    path = tmp_path / "keel.prom"
    path.write_text("# TYPE foo histogram\nfoo_bucket{le=\"1\"} 3\n")
    assert write(path, "acme", 1)["reset"] is True
    assert "foo_bucket" not in path.read_text()
    assert write(path, "acme", 1)["reset"] is False


@pytest.mark.parametrize("name", ["keel.txt", "missing/keel.prom"])
def test_bad_paths_name_the_field(tmp_path, name):
    with pytest.raises(InvalidOption) as raised:
        textfile.check_path(str(tmp_path / name))
    assert raised.value.field == "metrics_textfile"


def test_check_mode_writes_nothing(tmp_path):
    path = tmp_path / "keel.prom"
    textfile.write_textfile(str(path), "backup", run_metrics("acme", 1), (), True, 1.0, check_mode=True)
    assert not path.exists()


def test_a_failed_run_leaves_the_last_successful_runs_readings(tmp_path):
    path = tmp_path / "keel.prom"
    write(path, "acme", 100)
    failed = {"duration_ms": 10.0, "phases_ms": {"connect": 10.0}, "counters": {}, "gauges": {}, "series": [],
              "labels": {"tenant": "acme", "db": "app"}}
    textfile.write_textfile(str(path), "backup", failed, (), False, 3000.0)
    own = {"module": "backup", "tenant": "acme", "db": "app"}
    assert value(path, "keel_backup_throughput_raw_bytes_per_second", **own) == 1000.0
    assert value(path, "keel_backup_storage_monthly_cost", tier="standard", currency="EUR", **own) == 0.25
    assert value(path, "keel_phase_duration_seconds", phase="connect", **own) == 0.01
    write(path, "acme", 1, phases={"dump": 10.0})
    assert value(path, "keel_phase_duration_seconds", phase="connect", **own) is None, "the next success describes itself only"
