# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Record every task result as JSON, for tests/harness/playbook.py."""

from __future__ import annotations

import json
import os
from typing import Any

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
    name: keel_test_results
    type: aggregate
    short_description: Records each task result of a run as JSON for the test harness
    description:
      - For every task and host, appends the play name, task name, action, status
        (ok, changed, failed, skipped, unreachable) and the result dictionary to a
        JSON list, rewritten atomically after each task so it survives a crash.
      - Used by the keel.postgres test harness; not shipped as a collection plugin.
    requirements:
      - enabled through ANSIBLE_CALLBACKS_ENABLED
    options:
      output_file:
        description: Where the JSON list is written.
        required: true
        env:
          - name: KEEL_TEST_RESULTS_FILE
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "keel_test_results"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self._records: list[dict[str, Any]] = []
        self._play_name = ""

    def v2_playbook_on_play_start(self, play: Any) -> None:
        self._play_name = play.get_name()

    def v2_runner_on_ok(self, result: Any) -> None:
        self._record(result, "changed" if result.result.get("changed") else "ok")

    def v2_runner_on_failed(self, result: Any, ignore_errors: bool = False) -> None:
        self._record(result, "failed", ignored=ignore_errors)

    def v2_runner_on_skipped(self, result: Any) -> None:
        self._record(result, "skipped")

    def v2_runner_on_unreachable(self, result: Any) -> None:
        self._record(result, "unreachable")

    def _record(self, result: Any, status: str, *, ignored: bool = False) -> None:
        task = result.task
        self._records.append(
            {
                "play": self._play_name,
                # Bare name as written in the playbook, and the name as printed ("role : name").
                "name": task.name or task.action,
                "full_name": task.get_name(),
                "action": task.action,
                "host": result.host.name,
                "status": status,
                "ignored": ignored,
                # `result` is the 2.19 public spelling of `_result`: plain Python types, no_log censored.
                "result": dict(result.result),
            }
        )
        self._write()

    def _write(self) -> None:
        path = self.get_option("output_file")
        temporary = f"{path}.partial"
        with open(temporary, "w", encoding="utf-8") as stream:
            # default=str: a module may return a value JSON cannot represent; the test still sees its text.
            json.dump(self._records, stream, indent=1, default=str)
        os.replace(temporary, path)
