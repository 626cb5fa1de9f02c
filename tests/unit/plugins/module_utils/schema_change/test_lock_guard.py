from __future__ import annotations

import random

from ansible_collections.keel.postgres.plugins.module_utils.schema_change.backfill import _next_batch_size
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.lock_guard import LockPolicy, backoff_delay


def test_backoff_never_pauses_less_than_lock_timeout_and_grows_jittered():
    policy = LockPolicy(lock_timeout=0.5, retries=50, statement_timeout=30, backoff_initial=0.05, backoff_max=4.0)
    rng = random.Random(7)
    first = [backoff_delay(0, policy, rng) for _attempt in range(200)]
    late = [backoff_delay(20, policy, rng) for _attempt in range(200)]
    # at least one lock_timeout: the application gets at least as much time as an attempt took from it
    assert all(d == 0.5 for d in first)
    assert all(0.5 <= d <= 4.0 for d in late)
    assert max(late) > 3.5  # the cap is reached...
    assert len({round(d, 6) for d in late}) > 150  # ...with jitter, so retries from many hosts spread out


def test_short_lock_timeouts_keep_a_minimum_pause():
    policy = LockPolicy(lock_timeout=0.01, retries=5, statement_timeout=0, backoff_initial=0.05, backoff_max=5.0)
    assert backoff_delay(0, policy, random.Random(1)) == 0.05


def test_batches_shrink_when_slow_and_grow_back_when_fast():
    assert _next_batch_size(10000, 2.5, 10000) == 5000
    assert _next_batch_size(150, 2.5, 10000) == 100
    assert _next_batch_size(5000, 0.01, 10000) == 10000
    assert _next_batch_size(5000, 0.5, 10000) == 5000
