"""Clean up after a test process that died without doing it itself (SIGKILL, OOM killer, CI timeout).

Servers started as direct children die with the test process (parent-death
signal), but detached ones (`pg_ctl start`, a sandbox a test brings up) are
reached by no signal. So the test process starts this janitor in a session of
its own and tells it, one JSON line per event on the janitor's stdin, which
server directories are in use:

    {"track": "postgres", "dir": "/tmp/keel-pg-..."}
    {"forget": "/tmp/keel-pg-..."}

However the test process ends, the janitor then reads EOF; it stops and
deletes every directory still tracked, and exits. After a clean run nothing
is left tracked and it exits at once.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path
from typing import IO, Union

from tests.harness.postgres_cluster import PostgresCluster
from tests.harness.s3_server import S3Server

Server = Union[PostgresCluster, S3Server]
REPO_ROOT = Path(__file__).resolve().parents[2]


def _describe(server: Server) -> tuple[str, Path]:
    if isinstance(server, PostgresCluster):
        return "postgres", server.base_dir
    return "s3", server.state_dir


def _rebuild(kind: str, directory: str) -> Server:
    return PostgresCluster(directory) if kind == "postgres" else S3Server(directory)


class JanitorClient:
    """The test process's end: starts the janitor on first use and reports servers to it."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[str] | None = None

    def track(self, server: Server) -> None:
        kind, directory = _describe(server)
        self._send({"track": kind, "dir": str(directory)})

    def forget(self, server: Server) -> None:
        if self._process is not None:
            self._send({"forget": str(_describe(server)[1])})

    def close(self, timeout: float = 90.0) -> None:
        """EOF for the janitor: it cleans what is still tracked (normally nothing) and exits."""
        process, self._process = self._process, None
        if process is None:
            return
        assert process.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            process.stdin.close()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            print(f"janitor (pid {process.pid}) still cleaning up after {timeout:.0f}s; leaving it to finish", file=sys.stderr)

    def _send(self, message: dict[str, str]) -> None:
        stdin = self._janitor_stdin()
        try:
            stdin.write(json.dumps(message) + "\n")
            stdin.flush()
        except BrokenPipeError:
            # Someone killed the janitor; the next message starts a fresh one. Teardown still works without it.
            print("janitor: it died; servers tracked so far are covered only by teardown and atexit", file=sys.stderr)
            self._process = None

    def _janitor_stdin(self) -> IO[str]:
        if self._process is None:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "tests.harness.janitor"],
                stdin=subprocess.PIPE,
                text=True,
                cwd=REPO_ROOT,
                # Own session: the terminal's Ctrl-C or hangup must not take the janitor down with us.
                start_new_session=True,
            )
        assert self._process.stdin is not None
        return self._process.stdin


def main() -> int:
    tracked: dict[str, str] = {}
    for line in sys.stdin:
        message = json.loads(line)
        if "track" in message:
            tracked[message["dir"]] = message["track"]
        else:
            tracked.pop(message["forget"], None)
    for directory, kind in tracked.items():
        try:
            _rebuild(kind, directory).remove()
            print(f"janitor: stopped and removed {kind} in {directory} left behind by a dead test process", file=sys.stderr)
        except Exception as error:  # clean up the others regardless
            print(f"janitor: could not clean up {kind} in {directory}: {error}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
