from __future__ import annotations

import random

from ansible_collections.keel.postgres.plugins.module_utils.schema_change.backfill import _next_batch_size
from ansible_collections.keel.postgres.plugins.module_utils.schema_change.lock_guard import LockPolicy, backoff_delay


def test_backoff_grows_but_stays_capped_and_jittered():
    policy = LockPolicy(lock_timeout=0.5, retries=50, statement_timeout=30, backoff_initial=0.05, backoff_max=2.0)
    rng = random.Random(7)
    early = [backoff_delay(0, policy, rng) for _attempt in range(200)]
    late = [backoff_delay(20, policy, rng) for _attempt in range(200)]
    assert all(0.025 <= d <= 0.05 for d in early)
    assert all(0.025 <= d <= 2.0 for d in late)
    assert max(late) > 1.5  # the cap is reached...
    assert len({round(d, 6) for d in late}) > 150  # ...with full jitter, so retries from many hosts spread out


def test_batches_shrink_when_slow_and_grow_back_when_fast():
    assert _next_batch_size(10000, 2.5, 10000) == 5000
    assert _next_batch_size(150, 2.5, 10000) == 100
    assert _next_batch_size(5000, 0.01, 10000) == 10000
    assert _next_batch_size(5000, 0.5, 10000) == 5000
