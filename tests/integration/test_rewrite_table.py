"""rewrite_table (the pg_repack use case) against a real server with writers running throughout."""

from __future__ import annotations

import random
import threading
import time

import psycopg
import pytest
from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption
from ansible_collections.keel.postgres.plugins.module_utils.observe.metrics import RunMetrics
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.context import BackfillSettings
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.engine import MigrationRequest, MigrationRun
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.lock_guard import LockPolicy

pytestmark = pytest.mark.integration

OPERATIONS = [{"rewrite_table": {"table": "events"}}]


@pytest.fixture
def events(pg_cluster, pg_db):
    pg_cluster.execute(
        "DO $$ BEGIN CREATE ROLE keel_test_reader; EXCEPTION WHEN duplicate_object THEN NULL; END $$;"
        "CREATE TABLE events (id bigserial PRIMARY KEY, score int NOT NULL, tag text, payload text);"
        "CREATE INDEX events_score ON events (score);"
        "CREATE UNIQUE INDEX events_tag ON events (tag);"
        "GRANT SELECT ON events TO keel_test_reader;"
        "INSERT INTO events (score, tag, payload) SELECT g % 100, 't' || g, repeat('x', 100)"
        " FROM generate_series(1, 30000) g;"
        "DELETE FROM events WHERE id % 3 <> 0;"  # two thirds dead: a bloated table worth rewriting
        "ANALYZE events",
        dbname=pg_db)
    return "events"


def migrate(pg_cluster, pg_db, state):
    with pg_cluster.connect(pg_db) as conn:
        request = MigrationRequest("rewrite_events", OPERATIONS, state, LockPolicy(0.2, 100, 30),
                                   BackfillSettings(1000, 0.1, None, 60))
        metrics = RunMetrics()
        result = MigrationRun(conn, request, metrics).run(check_mode=False)
        return result, metrics.as_dict()


class Writers:
    """Application traffic: updates, deletes and inserts by primary key, each its own transaction."""

    def __init__(self, dsn: str, count: int = 2) -> None:
        self.dsn = dsn
        self.errors: list = []
        self.writes = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(seed,)) for seed in range(count)]

    def __enter__(self) -> "Writers":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _run(self, seed: int) -> None:
        rng = random.Random(seed)
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self._stop.is_set():
                target = rng.randint(1, 30000)
                choice = rng.random()
                try:
                    if choice < 0.4:
                        conn.execute("UPDATE events SET score = score + 1, payload = 'updated' WHERE id = %s", (target,))
                    elif choice < 0.6:
                        conn.execute("DELETE FROM events WHERE id = %s", (target,))
                    elif choice < 0.7:
                        conn.execute("UPDATE events SET id = id + 1000000 WHERE id = %s", (target,))  # key change
                    else:
                        conn.execute("INSERT INTO events (score, tag) VALUES (%s, %s)",
                                     (target % 100, "w{0}-{1}".format(seed, time.monotonic_ns())))
                    self.writes += 1
                except psycopg.Error as exc:
                    self.errors.append(str(exc))


def shadow_name(pg_cluster, pg_db):
    return pg_cluster.execute("SELECT relname FROM pg_class WHERE relname LIKE '\\_keel\\_%\\_shadow\\_events'",
                              dbname=pg_db)[0][0]


def test_rewrite_keeps_every_write_and_swaps_atomically(pg_cluster, pg_db, events):
    before_size = pg_cluster.execute("SELECT pg_relation_size('events')", dbname=pg_db)[0][0]
    before_file = pg_cluster.execute("SELECT pg_relation_filenode('events')", dbname=pg_db)[0][0]
    with Writers(pg_cluster.dsn(pg_db)) as writers:
        started, metrics = migrate(pg_cluster, pg_db, "started")
        time.sleep(0.5)
    assert writers.errors == [] and writers.writes > 100
    assert started["phase"] == "started"
    assert metrics["counters"]["rows_backfilled"] > 0
    shadow = shadow_name(pg_cluster, pg_db)
    # With the application paused, the copy is exactly the table, row for row.
    for left, right in (("events", shadow), (shadow, "events")):
        missing = pg_cluster.execute(
            'SELECT count(*) FROM (SELECT * FROM "{0}" EXCEPT ALL SELECT * FROM "{1}") AS diff'.format(left, right),
            dbname=pg_db)[0][0]
        assert missing == 0, "{0} rows of {1} are not in {2}".format(missing, left, right)
    expected = pg_cluster.execute("SELECT * FROM events ORDER BY id", dbname=pg_db)

    completed, _metrics = migrate(pg_cluster, pg_db, "completed")
    assert completed["phase"] == "completed"
    assert pg_cluster.execute("SELECT * FROM events ORDER BY id", dbname=pg_db) == expected
    assert pg_cluster.execute("SELECT pg_relation_filenode('events')", dbname=pg_db)[0][0] != before_file
    assert pg_cluster.execute("SELECT pg_relation_size('events')", dbname=pg_db)[0][0] < before_size / 2
    indexes = pg_cluster.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'events' ORDER BY 1", dbname=pg_db)
    assert [row[0] for row in indexes] == ["events_pkey", "events_score", "events_tag"]
    assert pg_cluster.execute("SELECT contype FROM pg_constraint WHERE conname = 'events_pkey'", dbname=pg_db) == [("p",)]
    assert pg_cluster.execute("SELECT has_table_privilege('keel_test_reader', 'events', 'SELECT')",
                              dbname=pg_db)[0][0] is True
    assert pg_cluster.execute("SELECT pg_get_serial_sequence('events', 'id')", dbname=pg_db)[0][0] == "public.events_id_seq"
    next_id = pg_cluster.execute("INSERT INTO events (score) VALUES (1) RETURNING id", dbname=pg_db)[0][0]
    assert next_id > max(row[0] for row in expected if row[0] < 1000000)
    leftovers = pg_cluster.execute("SELECT relname FROM pg_class WHERE relname LIKE '\\_keel\\_%'", dbname=pg_db)
    assert leftovers == []


def test_rollback_leaves_the_table_untouched(pg_cluster, pg_db, events):
    before_file = pg_cluster.execute("SELECT pg_relation_filenode('events')", dbname=pg_db)[0][0]
    before = pg_cluster.execute("SELECT * FROM events ORDER BY id", dbname=pg_db)
    migrate(pg_cluster, pg_db, "started")
    rolled_back, _metrics = migrate(pg_cluster, pg_db, "rolled_back")
    assert rolled_back["phase"] == "rolled_back"
    assert pg_cluster.execute("SELECT pg_relation_filenode('events')", dbname=pg_db)[0][0] == before_file
    assert pg_cluster.execute("SELECT * FROM events ORDER BY id", dbname=pg_db) == before
    assert pg_cluster.execute("SELECT relname FROM pg_class WHERE relname LIKE '\\_keel\\_%'", dbname=pg_db) == []
    assert pg_cluster.execute("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'events'::regclass", dbname=pg_db) == [(0,)]


def test_tables_it_cannot_rewrite_are_refused_before_any_change(pg_cluster, pg_db, events):
    pg_cluster.execute("CREATE VIEW recent_events AS SELECT id, score FROM events WHERE id > 100", dbname=pg_db)
    with pytest.raises(InvalidOption, match=r"cannot rewrite public.events online: views read it \(recent_events\)"):
        migrate(pg_cluster, pg_db, "started")
    assert pg_cluster.execute("SELECT to_regnamespace('keel')", dbname=pg_db)[0][0] is None
