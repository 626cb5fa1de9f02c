"""Load the demo's film-rental database: Pagila's shape, generated here, deterministic.

The schema and its first rows come from tests/harness/rental_schema.py (the same
generator the backup tests use). On top, the store gets busier: rentals up to
400,000, and the index the front office's "latest rental per customer" page
relies on. The second demo migration drops that index, believing it unused,
and the latency gate catches it.

Connection comes from libpq's environment (the sandbox's sandbox.env), so this
script holds no addresses or secrets of its own.
"""

from __future__ import annotations

import sys
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.harness.rental_schema import rental_sql

RENTALS = 400_000
BUSIER_STORE = """
INSERT INTO rental (rental_id, rental_date, inventory_id, customer_id, return_date, staff_id, rental_period)
SELECT g, r, g % 4581 + 1, g * 31 % 5000 + 1, r + (g % 9 + 1) * interval '1 day', g % 2 + 1,
       tstzrange(r, r + (g % 9 + 1) * interval '1 day')
FROM generate_series((SELECT max(rental_id) + 1 FROM rental), {rentals}) g,
     LATERAL (SELECT TIMESTAMPTZ '2024-01-01 00:00:00+00' + g * interval '150 seconds' AS r) t;
CREATE INDEX rental_customer_recent_idx ON rental (customer_id, rental_date);
"""


def load(conn: psycopg.Connection) -> None:
    if conn.execute("SELECT to_regclass('public.rental') IS NOT NULL").fetchone()[0]:
        return
    conn.execute(rental_sql("demo.customer"))
    conn.execute(BUSIER_STORE.format(rentals=RENTALS))
    # Latency baselines must not measure the load's leftovers (autovacuum, hint bits, dirty buffers).
    conn.execute("VACUUM (ANALYZE, FREEZE)")
    conn.execute("CHECKPOINT")


def main() -> None:
    with psycopg.connect(autocommit=True, application_name="keel.postgres/demo-data") as conn:
        load(conn)
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM film), (SELECT count(*) FROM customer), (SELECT count(*) FROM rental),"
            " (SELECT count(*) FROM payment), (SELECT count(*) FROM globex.invoices)"
        ).fetchone()
    print("demo data: {0} films, {1} customers, {2} rentals, {3} payments; tenant globex: {4} invoices".format(*counts))


if __name__ == "__main__":
    main()
