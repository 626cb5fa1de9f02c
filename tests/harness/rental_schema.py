"""A Pagila-sized film-rental database, generated in SQL in well under a second.

The shape of Pagila (PostgreSQL's port of MySQL's Sakila sample): foreign
keys everywhere, text, char, numeric, date and timestamptz, a domain, an enum,
arrays, jsonb, bytea, a generated tsvector, a range, a partitioned table with
monthly partitions, a view and a materialized view. About 55,000 rows, all
deterministic (no random(), no now()), so fingerprints are stable. A second
schema, ``globex``, serves as a schema-per-tenant tenant.

``customer`` holds personal data: customer 1's e-mail carries a marker text,
and the materialized view ``customer_contacts`` copies every e-mail, so a
masking test can show that neither table nor view keeps a raw address.
"""

from __future__ import annotations

ROW_COUNTS = {
    "public.language": 6,
    "public.category": 16,
    "public.country": 109,
    "public.city": 600,
    "public.address": 5004,
    "public.actor": 200,
    "public.film": 1000,
    "public.film_actor": 5000,
    "public.film_category": 1000,
    "public.store": 2,
    "public.staff": 2,
    "public.customer": 5000,
    "public.inventory": 4581,
    "public.rental": 16044,
    "public.payment_p2026_01": 2674,
    "public.payment_p2026_02": 2674,
    "public.payment_p2026_03": 2674,
    "public.payment_p2026_04": 2674,
    "public.payment_p2026_05": 2674,
    "public.payment_p2026_06": 2674,
    "globex.invoices": 500,
}

_RENTAL_SQL = r"""
CREATE DOMAIN year AS integer CONSTRAINT year_check CHECK (VALUE >= 1901 AND VALUE <= 2155);
CREATE TYPE mpaa_rating AS ENUM ('G', 'PG', 'PG-13', 'R', 'NC-17');

CREATE TABLE language (language_id smallint PRIMARY KEY, name character(20) NOT NULL,
                       last_update timestamptz NOT NULL DEFAULT '2026-01-01');
CREATE TABLE category (category_id smallint PRIMARY KEY, name text NOT NULL, last_update timestamptz NOT NULL DEFAULT '2026-01-01');
CREATE TABLE country (country_id integer PRIMARY KEY, country text NOT NULL, last_update timestamptz NOT NULL DEFAULT '2026-01-01');
CREATE TABLE city (city_id integer PRIMARY KEY, city text NOT NULL, country_id integer NOT NULL REFERENCES country,
                   last_update timestamptz NOT NULL DEFAULT '2026-01-01');
CREATE TABLE address (address_id integer PRIMARY KEY, address text NOT NULL, address2 text, district text NOT NULL,
                      city_id integer NOT NULL REFERENCES city, postal_code text, phone text NOT NULL,
                      last_update timestamptz NOT NULL DEFAULT '2026-01-01');
CREATE TABLE actor (actor_id integer PRIMARY KEY, first_name text NOT NULL, last_name text NOT NULL,
                    last_update timestamptz NOT NULL DEFAULT '2026-01-01');
CREATE TABLE film (
    film_id integer PRIMARY KEY,
    title text NOT NULL,
    description text,
    release_year year,
    language_id smallint NOT NULL REFERENCES language,
    rental_duration smallint NOT NULL DEFAULT 3,
    rental_rate numeric(4,2) NOT NULL DEFAULT 4.99,
    length smallint,
    replacement_cost numeric(5,2) NOT NULL DEFAULT 19.99,
    rating mpaa_rating DEFAULT 'G',
    special_features text[],
    attributes jsonb,
    poster bytea,
    fulltext tsvector GENERATED ALWAYS AS (to_tsvector('english'::regconfig, title || ' ' || coalesce(description, ''))) STORED,
    last_update timestamptz NOT NULL DEFAULT '2026-01-01'
);
CREATE INDEX film_fulltext_idx ON film USING gist (fulltext);
CREATE TABLE film_actor (actor_id integer NOT NULL REFERENCES actor, film_id integer NOT NULL REFERENCES film,
                         last_update timestamptz NOT NULL DEFAULT '2026-01-01', PRIMARY KEY (actor_id, film_id));
CREATE TABLE film_category (film_id integer NOT NULL REFERENCES film, category_id smallint NOT NULL REFERENCES category,
                            last_update timestamptz NOT NULL DEFAULT '2026-01-01', PRIMARY KEY (film_id, category_id));
CREATE TABLE store (store_id integer PRIMARY KEY, manager_staff_id integer NOT NULL, address_id integer NOT NULL REFERENCES address,
                    last_update timestamptz NOT NULL DEFAULT '2026-01-01');
CREATE TABLE staff (staff_id integer PRIMARY KEY, first_name text NOT NULL, last_name text NOT NULL,
                    address_id integer NOT NULL REFERENCES address, email text, store_id integer NOT NULL REFERENCES store,
                    active boolean NOT NULL DEFAULT true, username text NOT NULL, password text, picture bytea,
                    last_update timestamptz NOT NULL DEFAULT '2026-01-01');
ALTER TABLE store ADD FOREIGN KEY (manager_staff_id) REFERENCES staff DEFERRABLE INITIALLY DEFERRED;
CREATE TABLE customer (customer_id integer PRIMARY KEY, store_id integer NOT NULL REFERENCES store, first_name text NOT NULL,
                       last_name text NOT NULL, email text, address_id integer NOT NULL REFERENCES address,
                       activebool boolean NOT NULL DEFAULT true, create_date date NOT NULL DEFAULT '2026-01-01',
                       last_update timestamptz DEFAULT '2026-01-01', active integer);
CREATE INDEX customer_last_name_idx ON customer (last_name);
CREATE TABLE inventory (inventory_id integer PRIMARY KEY, film_id integer NOT NULL REFERENCES film,
                        store_id integer NOT NULL REFERENCES store, last_update timestamptz NOT NULL DEFAULT '2026-01-01');
CREATE TABLE rental (rental_id integer PRIMARY KEY, rental_date timestamptz NOT NULL,
                     inventory_id integer NOT NULL REFERENCES inventory, customer_id integer NOT NULL REFERENCES customer,
                     return_date timestamptz, staff_id integer NOT NULL REFERENCES staff, rental_period tstzrange,
                     last_update timestamptz NOT NULL DEFAULT '2026-01-01');
CREATE TABLE payment (payment_id integer NOT NULL, customer_id integer NOT NULL REFERENCES customer,
                      staff_id integer NOT NULL REFERENCES staff, rental_id integer REFERENCES rental,
                      amount numeric(5,2) NOT NULL, payment_date timestamptz NOT NULL,
                      PRIMARY KEY (payment_date, payment_id)) PARTITION BY RANGE (payment_date);
CREATE TABLE payment_p2026_01 PARTITION OF payment FOR VALUES FROM ('2026-01-01 00:00:00+00') TO ('2026-02-01 00:00:00+00');
CREATE TABLE payment_p2026_02 PARTITION OF payment FOR VALUES FROM ('2026-02-01 00:00:00+00') TO ('2026-03-01 00:00:00+00');
CREATE TABLE payment_p2026_03 PARTITION OF payment FOR VALUES FROM ('2026-03-01 00:00:00+00') TO ('2026-04-01 00:00:00+00');
CREATE TABLE payment_p2026_04 PARTITION OF payment FOR VALUES FROM ('2026-04-01 00:00:00+00') TO ('2026-05-01 00:00:00+00');
CREATE TABLE payment_p2026_05 PARTITION OF payment FOR VALUES FROM ('2026-05-01 00:00:00+00') TO ('2026-06-01 00:00:00+00');
CREATE TABLE payment_p2026_06 PARTITION OF payment FOR VALUES FROM ('2026-06-01 00:00:00+00') TO ('2026-07-01 00:00:00+00');

INSERT INTO language (language_id, name) VALUES (1, 'English'), (2, 'Italian'), (3, 'Japanese'), (4, 'Mandarin'), (5, 'French'), (6, 'German');
INSERT INTO category (category_id, name)
SELECT g, (ARRAY['Action', 'Animation', 'Children', 'Classics', 'Comedy', 'Documentary', 'Drama', 'Family', 'Foreign', 'Games',
                 'Horror', 'Music', 'New', 'Sci-Fi', 'Sports', 'Travel'])[g]
FROM generate_series(1, 16) g;
INSERT INTO country (country_id, country) SELECT g, 'Country ' || g FROM generate_series(1, 109) g;
INSERT INTO city (city_id, city, country_id) SELECT g, 'City ' || g || ' ' || md5(g::text), g % 109 + 1 FROM generate_series(1, 600) g;
INSERT INTO address (address_id, address, address2, district, city_id, postal_code, phone)
SELECT g, g || ' ' || (ARRAY['Main', 'Oak', 'Pine', 'Maple', 'Cedar', 'Elm'])[g % 6 + 1] || ' Street',
       CASE WHEN g % 5 = 0 THEN 'Apt ' || g % 97 END, 'District ' || g % 50, g % 600 + 1,
       lpad((g * 7919 % 99999)::text, 5, '0'), '+1-555-' || lpad((g * 104729 % 10000000)::text, 7, '0')
FROM generate_series(1, 5004) g;
INSERT INTO actor (actor_id, first_name, last_name)
SELECT g, (ARRAY['PENELOPE', 'NICK', 'ED', 'JENNIFER', 'JOHNNY', 'BETTE', 'GRACE', 'MATTHEW', 'JOE', 'CHRISTIAN'])[g % 10 + 1],
       upper(substr(md5('actor' || g), 1, 8))
FROM generate_series(1, 200) g;
INSERT INTO film (film_id, title, description, release_year, language_id, rental_duration, rental_rate, length, replacement_cost,
                  rating, special_features, attributes, poster)
SELECT g, 'FILM ' || upper(substr(md5('film' || g), 1, 10)),
       'A ' || (ARRAY['Epic', 'Astounding', 'Fateful', 'Brilliant', 'Touching', 'Thrilling'])[g % 6 + 1] || ' story of a '
            || (ARRAY['dog', 'robot', 'pioneer', 'monk', 'composer', 'astronaut'])[g % 7 % 6 + 1] || ' who must meet a '
            || (ARRAY['shark', 'boat', 'dentist', 'crocodile', 'student', 'feminist'])[g % 11 % 6 + 1] || ' in '
            || (ARRAY['Ancient China', 'a Jet Boat', 'The Gulf of Mexico', 'Berlin', 'a Manhattan Penthouse'])[g % 5 + 1],
       1990 + g % 36, g % 6 + 1, 3 + g % 5, (ARRAY[0.99, 2.99, 4.99])[g % 3 + 1], 46 + g % 140, 9.99 + g % 21,
       (ARRAY['G', 'PG', 'PG-13', 'R', 'NC-17'])[g % 5 + 1]::mpaa_rating,
       CASE g % 4 WHEN 0 THEN ARRAY['Trailers'] WHEN 1 THEN ARRAY['Commentaries', 'Deleted Scenes'] WHEN 2 THEN ARRAY['Behind the Scenes']
                  ELSE ARRAY[]::text[] END,
       jsonb_build_object('imdb', 'tt' || lpad(g::text, 7, '0'), 'awards', g % 3, 'tags', jsonb_build_array('tag' || g % 7, 'tag' || g % 5),
                          'ratio', round((g % 100) / 7.0, 4)),
       decode(md5('poster' || g) || md5('poster2' || g), 'hex')
FROM generate_series(1, 1000) g;
UPDATE film SET special_features = NULL WHERE film_id % 13 = 0;
INSERT INTO film_actor (actor_id, film_id) SELECT (f * 7 + k * 41) % 200 + 1, f FROM generate_series(1, 1000) f, generate_series(0, 4) k;
INSERT INTO film_category (film_id, category_id) SELECT f, f % 16 + 1 FROM generate_series(1, 1000) f;
INSERT INTO store (store_id, manager_staff_id, address_id) VALUES (1, 1, 5001), (2, 2, 5002);
INSERT INTO staff (staff_id, first_name, last_name, address_id, email, store_id, username, password, picture)
VALUES (1, 'Mike', 'Hillyer', 5003, 'mike.hillyer@staff.example.test', 1, 'mike', NULL, '\x89504e470d0a1a0a'),
       (2, 'Jon', 'Stephens', 5004, 'jon.stephens@staff.example.test', 2, 'jon', NULL, NULL);
INSERT INTO customer (customer_id, store_id, first_name, last_name, email, address_id, activebool, create_date, last_update, active)
SELECT g, g % 2 + 1, 'First' || g, 'LAST' || upper(substr(md5('customer' || g), 1, 6)),
       CASE WHEN g = 1 THEN '{marker}@example.test' ELSE 'customer' || g || '@example.test' END,
       g, g % 17 <> 0, DATE '2025-01-01' + g % 365, TIMESTAMPTZ '2026-01-01 00:00:00+00' + g * interval '1 minute',
       CASE WHEN g % 17 <> 0 THEN 1 ELSE 0 END
FROM generate_series(1, 5000) g;
INSERT INTO inventory (inventory_id, film_id, store_id) SELECT g, g % 1000 + 1, g % 2 + 1 FROM generate_series(1, 4581) g;
INSERT INTO rental (rental_id, rental_date, inventory_id, customer_id, return_date, staff_id, rental_period)
SELECT g, r, g % 4581 + 1, g * 31 % 5000 + 1, CASE WHEN g % 50 <> 0 THEN r + (g % 9 + 1) * interval '1 day' END, g % 2 + 1,
       tstzrange(r, CASE WHEN g % 50 <> 0 THEN r + (g % 9 + 1) * interval '1 day' END)
FROM generate_series(1, 16044) g, LATERAL (SELECT TIMESTAMPTZ '2026-01-01 00:00:00+00' + (g - 1) * interval '981 seconds' AS r) t;
INSERT INTO payment (payment_id, customer_id, staff_id, rental_id, amount, payment_date)
SELECT rental_id, customer_id, staff_id, rental_id, (ARRAY[0.99, 2.99, 4.99, 5.98, 10.99])[rental_id % 5 + 1],
       TIMESTAMPTZ '2026-01-01 00:00:00+00' + (rental_id % 6) * interval '1 month' + (rental_id % 28) * interval '1 day'
FROM rental;

CREATE VIEW film_list AS
SELECT f.film_id, f.title, c.name AS category, f.rental_rate, f.length, f.rating
FROM film f JOIN film_category fc ON fc.film_id = f.film_id JOIN category c ON c.category_id = fc.category_id;
CREATE MATERIALIZED VIEW customer_contacts AS
SELECT c.customer_id, c.first_name || ' ' || c.last_name AS name, c.email, a.phone
FROM customer c JOIN address a ON a.address_id = c.address_id;

CREATE SCHEMA globex;
CREATE TABLE globex.invoices (id integer PRIMARY KEY, total double precision, paid boolean, issued timestamptz);
INSERT INTO globex.invoices SELECT g, g / 3.0, g % 2 = 0, TIMESTAMPTZ '2026-01-01 00:00:00+00' + g * interval '1 hour'
FROM generate_series(1, 500) g;
ANALYZE;
"""


def rental_sql(marker: str) -> str:
    """The schema and its rows; ``marker`` is the local part of customer 1's e-mail address."""
    return _RENTAL_SQL.replace("{marker}", marker)
