"""The backup's progress file: throttled rewrites, the final state, and a failure that does not leave "running"."""

from __future__ import annotations

import json

import pytest
from ansible_collections.keel.postgres.plugins.module_utils.backup.progress import ProgressFile, check_progress_path, progress_figures
from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def read(path):
    return json.loads(path.read_text())


def test_percent_stays_below_100_until_the_end_and_the_eta_follows_the_rate():
    assert progress_figures(50, 100, 10.0, False) == {"percent": 50.0, "rate_bytes_per_second": 5.0, "eta_seconds": 10.0}
    assert progress_figures(150, 100, 10.0, False)["percent"] == 99.0, "the estimate was low: never 100 while running"
    assert progress_figures(150, 100, 10.0, True)["percent"] == 100.0
    assert progress_figures(0, 0, 0.0, False) == {"percent": None, "rate_bytes_per_second": None, "eta_seconds": None}


def test_rewrites_are_throttled_and_finish_and_fail_are_always_written(tmp_path):
    clock = Clock()
    path = tmp_path / "progress.json"
    progress = ProgressFile(str(path), "acme", 1000, interval=2.0, clock=clock)
    clock.now += 1.0
    progress.update(100)
    assert read(path)["raw_bytes_done"] == 100 and read(path)["state"] == "running"
    clock.now += 1.0
    progress.update(200)
    assert read(path)["raw_bytes_done"] == 100, "within the interval: not rewritten"
    clock.now += 1.5
    progress.update(300)
    assert read(path)["raw_bytes_done"] == 300
    progress.fail()
    assert read(path)["state"] == "failed" and read(path)["raw_bytes_done"] == 300
    assert progress.finish(900)["state"] == "done" and read(path)["percent"] == 100.0


def test_a_progress_file_in_a_missing_directory_is_refused_by_name(tmp_path):
    with pytest.raises(InvalidOption) as raised:
        check_progress_path(str(tmp_path / "missing" / "progress.json"))
    assert raised.value.field == "progress_file"
    assert check_progress_path(None) is None
