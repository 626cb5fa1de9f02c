"""metrics_textfile end to end: real module runs write one textfile, promtool accepts it, a real node_exporter serves
it, and every metric the shipped alert rules and Grafana dashboard use is really emitted.

Needs the Debian packages prometheus (promtool) and prometheus-node-exporter; .ci/run installs them.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.harness.node_exporter import NodeExporter
from tests.integration.backup.world import MARKER, TENANT_SQL, new_world

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
RULES = ROOT / "docs" / "alerts" / "keel.rules.yml"
RULE_TESTS = ROOT / "docs" / "alerts" / "keel.rules.test.yml"
DASHBOARD = ROOT / "docs" / "dashboards" / "keel-postgres.json"
METRIC = re.compile(r"\b(keel_[a-z0-9_]+)\b")
COST_TABLE = yaml.safe_load((ROOT / "inventories" / "example" / "group_vars" / "all" / "main.yml").read_text())["keel_cost_table"]
STARTED = [{"alter_column": {"table": "orders", "column": "amount", "type": "numeric(14,2)"}}]


@pytest.fixture
def world(pg_cluster, pg_db, s3_server, tmp_path, run_playbook):
    world = new_world(pg_cluster, pg_db, s3_server, tmp_path, run_playbook, TENANT_SQL.format(marker=MARKER))
    world.add_tenant("acme")
    return world


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["promtool", *args], input=stdin, capture_output=True, text=True, timeout=60, check=False)


def names_used_by(path: Path) -> set:
    text = path.read_text()
    if path.suffix == ".json":
        text = " ".join(target["expr"] for panel in json.loads(text)["panels"] for target in panel.get("targets", []))
    return set(METRIC.findall(text))


def scraped_families(text: str) -> dict:
    families = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            families.setdefault(sample.name, []).append(sample)
    return families


def test_the_modules_write_one_textfile_node_exporter_serves_it_and_alerts_and_dashboard_use_only_emitted_metrics(
        world, tmp_path, pg_db, run_playbook):
    textdir = tmp_path / "textfile"
    textdir.mkdir()
    keel_prom = str(textdir / "keel.prom")
    first = world.backup("acme", metrics_textfile=keel_prom, cost_table=COST_TABLE)
    assert first["metrics"]["exported"]["textfile"] == keel_prom
    success_time = float(re.search(r'keel_last_success_timestamp_seconds\{[^}]*module="backup"[^}]*tenant="acme"[^}]*\} (\S+)',
                                   Path(keel_prom).read_text()).group(1))

    # The next backup of acme fails (its key is gone): the last success time must stay, the run must count as a failure.
    (world.key_dir / "acme").rename(world.key_dir / "acme.away")
    failed, failing = world.run("backup", tenant="acme", metrics_textfile=keel_prom)
    (world.key_dir / "acme.away").rename(world.key_dir / "acme")
    assert failed.rc != 0 and failing["metrics"]["exported"]["textfile"] == keel_prom, failing

    verified, verify = world.run("restore_verify", tenant="acme", metrics_textfile=keel_prom, **world.connection)
    assert verified.rc == 0, verify
    migrate = run_playbook("""
- hosts: localhost
  gather_facts: false
  module_defaults:
    # One setting for every keel module of the play, through the collection's action group.
    group/keel.postgres.all:
      metrics_textfile: "{{ path }}"
  tasks:
    - keel.postgres.schema_change: "{{ connection | combine({'name': 'widen_amount', 'operations': operations, 'state': 'started'}) }}"
    - keel.postgres.migration_info: "{{ connection }}"
    - keel.postgres.kpi_check:
        tenants: "{{ tenants }}"
        store: "{{ store }}"
        prometheus_path: "{{ kpi_path }}"
""", extra_vars={"connection": dict(world.connection, db=pg_db), "operations": STARTED, "path": keel_prom, "tenants": world.tenants,
                 "store": world.s3_store(), "kpi_path": str(textdir / "kpi.prom")})
    migrate.assert_ok()

    for prom in sorted(textdir.glob("*.prom")):
        checked = promtool("check", "metrics", stdin=prom.read_text())
        assert checked.returncode == 0, (prom.name, checked.stdout, checked.stderr)
    assert promtool("check", "rules", str(RULES)).returncode == 0
    tested = promtool("test", "rules", str(RULE_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr

    exporter = NodeExporter(textdir, tmp_path / "node_exporter.log").start()
    try:
        scraped = scraped_families(exporter.scrape())
    finally:
        exporter.stop()
    assert [sample.value for sample in scraped["node_textfile_scrape_error"]] == [0.0]

    def values(name, **labels):
        return [sample.value for sample in scraped.get(name, []) if all(sample.labels.get(key) == value for key, value in labels.items())]

    assert values("keel_last_success_timestamp_seconds", module="backup", tenant="acme") == [success_time]
    assert values("keel_last_run_success", module="backup", tenant="acme") == [0.0], failing
    assert values("keel_runs_total", module="backup", tenant="acme", outcome="failure") == [1.0]
    assert values("keel_runs_total", module="backup", tenant="acme", outcome="success") == [1.0]
    assert values("keel_backup_stored_bytes_total", module="backup", tenant="acme") == [float(first["metrics"]["counters"]["stored_bytes"])]
    assert values("keel_last_run_success", module="restore_verify") == [1.0]
    assert values("keel_last_run_success", module="schema_change", migration="widen_amount") == [1.0]

    used = names_used_by(RULES) | names_used_by(DASHBOARD)
    missing = sorted(name for name in used if name not in scraped)
    assert not missing, "named by docs/alerts or docs/dashboards but not emitted: {0}".format(missing)
