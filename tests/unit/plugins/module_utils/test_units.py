from __future__ import annotations

import pytest
from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption
from ansible_collections.keel.postgres.plugins.module_utils.units import (
    format_bytes,
    format_seconds,
    parse_duration,
    parse_size,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("30s", 30), ("5min", 300), ("1h", 3600), ("2d", 172800), ("1.5 h", 5400),
     (45, 45), (0.25, 0.25), ("10", 10), ("250us", 0.00025), ("3 minutes", 180)],
)
def test_durations_use_postgresql_units(text, seconds):
    assert parse_duration(text, "lock_timeout") == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["5 fortnights", "soon", "-3s", "", "1e3s", True])
def test_bad_duration_names_the_field(text):
    with pytest.raises(InvalidOption) as caught:
        parse_duration(text, "fail_on.max_transaction_age")
    assert caught.value.field == "fail_on.max_transaction_age"
    assert str(caught.value).startswith("fail_on.max_transaction_age: ")


def test_negative_number_is_refused():
    with pytest.raises(InvalidOption, match="must not be negative"):
        parse_duration(-1, "timeout")


@pytest.mark.parametrize(
    ("text", "size"),
    [("512kB", 524288), ("16MB", 16 * 1024**2), ("1GB", 1024**3), ("2GiB", 2 * 1024**3), (100, 100), ("7", 7)],
)
def test_sizes_are_powers_of_1024_like_postgresql_conf(text, size):
    assert parse_size(text, "max_replication_lag_bytes") == size


def test_bad_size_names_the_field():
    with pytest.raises(InvalidOption, match=r"^lag: unknown size unit 'XB'"):
        parse_size("3XB", "lag")


def test_formatting_for_messages():
    assert format_seconds(0.5) == "500 ms"
    assert format_seconds(65.24) == "65.2 s"
    assert format_bytes(100) == "100 B"
    assert format_bytes(16 * 1024**2) == "16.0 MB"
