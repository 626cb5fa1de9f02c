"""Load the demo's small shop database (generated here, deterministic).

Connection comes from libpq's environment (the sandbox's sandbox.env), so this
script holds no addresses or secrets of its own.
"""

from __future__ import annotations

import psycopg

SCHEMA = """
CREATE TABLE IF NOT EXISTS customers (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email text NOT NULL UNIQUE,
    country text NOT NULL
);
CREATE TABLE IF NOT EXISTS orders (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES customers (id),
    amount numeric(10, 2) NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
-- An append-only log without a primary key: the demo shows the gate refusing it.
CREATE TABLE IF NOT EXISTS order_events (
    order_id bigint NOT NULL,
    event text NOT NULL,
    at timestamptz NOT NULL DEFAULT now()
);
"""

CUSTOMERS = 2000
ORDERS = 50000


def load(conn: psycopg.Connection) -> None:
    conn.execute(SCHEMA)
    if conn.execute("SELECT count(*) FROM customers").fetchone()[0]:
        return
    conn.execute(
        "INSERT INTO customers (email, country)"
        " SELECT 'customer' || g || '@example.invalid', (ARRAY['DE','FR','US','BR','JP'])[1 + g %% 5]"
        " FROM generate_series(1, %s) g",
        (CUSTOMERS,),
    )
    conn.execute(
        "INSERT INTO orders (customer_id, amount, created_at)"
        " SELECT 1 + g %% %s, round((g %% 997) * 1.37, 2), now() - make_interval(mins => g)"
        " FROM generate_series(1, %s) g",
        (CUSTOMERS, ORDERS),
    )
    conn.execute("INSERT INTO order_events (order_id, event) SELECT id, 'created' FROM orders")
    conn.execute("ANALYZE")


def main() -> None:
    with psycopg.connect(autocommit=True, application_name="keel.postgres/demo-data") as conn:
        load(conn)
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM customers), (SELECT count(*) FROM orders), (SELECT count(*) FROM order_events)"
        ).fetchone()
    print("demo data: {0} customers, {1} orders, {2} order events".format(*counts))


if __name__ == "__main__":
    main()
