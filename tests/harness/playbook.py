"""Run ansible-playbook against localhost the way a user would, and read back every task result.

The collection under test is the working tree itself (linked into
.build/collections as keel.postgres), so a test always runs the files being
edited. Task results come from a small callback plugin writing JSON, not from
parsing the human-readable output, which stays the default for debugging.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from tests.harness.collection_path import ensure_collection_link
from tests.harness.processes import descendants, die_with_parent

CALLBACK_DIR = Path(__file__).resolve().parent / "callback_plugins"
CALLBACK_NAME = "keel_test_results"
RESULTS_FILE_VARIABLE = "KEEL_TEST_RESULTS_FILE"
_OUTPUT_TAIL_LINES = 60

# Quiet, deterministic output; none of this changes what the play does.
_ANSIBLE_DEFAULTS = {
    "ANSIBLE_NOCOLOR": "1",
    "ANSIBLE_FORCE_COLOR": "0",
    "ANSIBLE_RETRY_FILES_ENABLED": "0",
    "ANSIBLE_LOCALHOST_WARNING": "0",
    "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0",
}


class TaskRecord(TypedDict):
    """One task result on one host, as written by the keel_test_results callback."""

    play: str
    name: str
    full_name: str
    action: str
    host: str
    status: str  # ok | changed | failed | skipped | unreachable
    ignored: bool  # a failure under ignore_errors
    result: dict[str, Any]


class TaskNotFound(LookupError):
    """No task with the requested name ran."""


class PlaybookTimeout(AssertionError):
    """ansible-playbook ran longer than allowed and was killed."""


@dataclass(frozen=True)
class PlaybookResult:
    rc: int
    stdout: str
    stderr: str
    tasks: list[TaskRecord] = field(default_factory=list)

    def task(self, name: str) -> TaskRecord:
        """The last result of the task called `name` (bare name or "role : name")."""
        for record in reversed(self.tasks):
            if name in (record["name"], record["full_name"]):
                return record
        ran = "\n  ".join(record["full_name"] for record in self.tasks) or "(none)"
        raise TaskNotFound(f"no task named {name!r} ran; tasks that ran:\n  {ran}")

    @property
    def failed_tasks(self) -> list[TaskRecord]:
        """Failed or unreachable results that were not ignored (ignore_errors)."""
        return [record for record in self.tasks if record["status"] in ("failed", "unreachable") and not record["ignored"]]

    def assert_ok(self) -> None:
        """Raise AssertionError with the end of the output unless the run succeeded."""
        if self.rc != 0:
            raise AssertionError(f"ansible-playbook exited with {self.rc}\n{self.output_tail()}")

    def output_tail(self) -> str:
        return f"--- stdout (tail) ---\n{_tail(self.stdout)}\n--- stderr (tail) ---\n{_tail(self.stderr)}"


def run_playbook(
    playbook: str | os.PathLike[str],
    *,
    extra_vars: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = False,
    diff: bool = False,
    timeout: float = 600,
) -> PlaybookResult:
    """Run a playbook on localhost (local connection, this Python) and collect its task results.

    `playbook` is a path, or YAML text when it is a string containing a newline.
    `extra_vars` travel in a 0600 temporary JSON file (`-e @file`), never on
    the command line, because they may hold passwords. `env` is added to our
    environment for the run.
    """
    with tempfile.TemporaryDirectory(prefix="keel-playbook-") as workdir:
        scratch = Path(workdir)
        results_file = scratch / "task-results.json"
        argv = [
            str(_ansible_playbook_program()),
            "--inventory=localhost,",
            f"--extra-vars=@{_write_extra_vars(scratch, extra_vars)}",
            *(["--check"] if check else []),
            *(["--diff"] if diff else []),
            str(_playbook_path(scratch, playbook)),
        ]
        completed = _run_with_timeout(argv, _environment(env, results_file), timeout)
        return PlaybookResult(
            rc=completed.returncode,
            stdout=completed.stdout,
            stderr=completed.stderr,
            tasks=_read_task_records(results_file),
        )


def _ansible_playbook_program() -> Path:
    """The ansible-playbook of this venv, so it matches the ansible-core the tests import."""
    beside_python = Path(sys.executable).parent / "ansible-playbook"
    if beside_python.is_file():
        return beside_python
    on_path = shutil.which("ansible-playbook")
    if on_path is None:
        raise FileNotFoundError(f"ansible-playbook is neither next to {sys.executable} nor on PATH")
    return Path(on_path)


def _playbook_path(scratch: Path, playbook: str | os.PathLike[str]) -> Path:
    if isinstance(playbook, str) and "\n" in playbook:
        path = scratch / "playbook.yml"
        path.write_text(playbook)
        return path
    path = Path(playbook)
    if not path.is_file():
        raise FileNotFoundError(f"playbook {path} does not exist (YAML text must contain a newline)")
    return path.absolute()


def _write_extra_vars(scratch: Path, extra_vars: Mapping[str, Any] | None) -> Path:
    variables: dict[str, Any] = {
        "ansible_connection": "local",
        # Modules must import the same psycopg/boto3 as the tests.
        "ansible_python_interpreter": sys.executable,
        **(extra_vars or {}),
    }
    path = scratch / "extra-vars.json"
    # Created 0600 from the start: the values may be secrets.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as stream:
        json.dump(variables, stream)
    return path


def _environment(overrides: Mapping[str, str] | None, results_file: Path) -> dict[str, str]:
    environment = {**os.environ, **_ANSIBLE_DEFAULTS, **(overrides or {})}
    # Ours come first so the working tree wins over any installed keel.postgres.
    environment["ANSIBLE_COLLECTIONS_PATH"] = _path_list(ensure_collection_link(), environment, "ANSIBLE_COLLECTIONS_PATH")
    environment["ANSIBLE_CALLBACK_PLUGINS"] = _path_list(CALLBACK_DIR, environment, "ANSIBLE_CALLBACK_PLUGINS")
    enabled = [name for name in environment.get("ANSIBLE_CALLBACKS_ENABLED", "").split(",") if name.strip()]
    environment["ANSIBLE_CALLBACKS_ENABLED"] = ",".join([CALLBACK_NAME, *enabled])
    environment[RESULTS_FILE_VARIABLE] = str(results_file)
    return environment


def _path_list(first: Path, environment: Mapping[str, str], variable: str) -> str:
    existing = environment.get(variable)
    return f"{first}{os.pathsep}{existing}" if existing else str(first)


def _run_with_timeout(argv: list[str], environment: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run ansible-playbook in its own process group, so a timeout or Ctrl-C kills its workers too."""
    process = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
        process_group=0,
        preexec_fn=die_with_parent(signal.SIGTERM),
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_process_group(process)
        stdout, stderr = process.communicate()
        raise PlaybookTimeout(
            f"ansible-playbook ran longer than {timeout}s and was killed\n--- stdout (tail) ---\n{_tail(stdout)}\n--- stderr (tail) ---\n{_tail(stderr)}"
        ) from None
    except BaseException:
        _kill_process_group(process)
        process.communicate()
        raise
    return subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)


def _kill_process_group(process: subprocess.Popen[str]) -> None:
    """Kill ansible-playbook and everything it started.

    ansible-core's task workers call setsid(), so they and the modules they run
    live in process groups of their own: killing the playbook's group alone
    would leave a module running (and holding its locks) after a timeout.
    """
    groups = {process.pid}
    for pid in descendants(process.pid):
        with contextlib.suppress(ProcessLookupError):
            groups.add(os.getpgid(pid))
    for group in groups:
        # A group outlives its leader while forked workers run, so it may or may not still exist.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)


def _read_task_records(results_file: Path) -> list[TaskRecord]:
    # Absent when ansible-playbook failed before running any task (syntax error, missing collection...).
    if not results_file.is_file():
        return []
    records: list[TaskRecord] = json.loads(results_file.read_text(encoding="utf-8"))
    return records


def _tail(text: str) -> str:
    return "\n".join(text.splitlines()[-_OUTPUT_TAIL_LINES:])
