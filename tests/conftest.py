"""Session-wide real servers for the tests, and the guarantee that none outlives the run.

Fixtures start a PostgreSQL cluster and an S3 server once per session and
remove them at teardown. Teardown alone is not enough, so a safety net stops
every tracked server at interpreter exit (atexit), and SIGTERM/SIGHUP become
a KeyboardInterrupt so pytest runs its teardown instead of dying on the spot.
For SIGKILL, where no Python runs, child servers get a parent-death signal
(tests/harness/processes.py) and a janitor process cleans up detached ones
(tests/harness/janitor.py).
"""

from __future__ import annotations

import atexit
import signal
import sys
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any, TypeVar, Union

import pytest

from tests.harness import playbook
from tests.harness.janitor import JanitorClient
from tests.harness.postgres_cluster import PostgresCluster
from tests.harness.s3_server import S3Server

Server = Union[PostgresCluster, S3Server]
ServerT = TypeVar("ServerT", PostgresCluster, S3Server)


class TerminatedBySignal(KeyboardInterrupt):
    """SIGTERM/SIGHUP arrived; raised like Ctrl-C so that pytest tears fixtures down."""


class SafetyNet:
    """Stops every server this process started, whatever way the run ends."""

    _SIGNALS = (signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self._servers: list[Server] = []
        self._previous_handlers: dict[int, Any] = {}
        self._terminating = False
        self._janitor = JanitorClient()

    def track(self, server: ServerT) -> ServerT:
        self._servers.append(server)
        self._janitor.track(server)
        return server

    def forget(self, server: Server) -> None:
        """The server has been removed by its owner; nothing left to do for it."""
        if server in self._servers:
            self._servers.remove(server)
        self._janitor.forget(server)

    def stop_all(self) -> None:
        """Stop what is still tracked, then let the janitor delete its directories and exit."""
        for server in reversed(self._servers):
            try:
                server.stop()
            except Exception as error:  # keep stopping the others
                print(f"safety net: could not stop {server!r}: {error}", file=sys.stderr)
        self._servers.clear()
        self._janitor.close()

    def install_signal_handlers(self) -> None:
        for signal_number in self._SIGNALS:
            self._previous_handlers[signal_number] = signal.signal(signal_number, self._on_signal)

    def restore_signal_handlers(self) -> None:
        for signal_number, handler in self._previous_handlers.items():
            signal.signal(signal_number, handler)
        self._previous_handlers.clear()

    def _on_signal(self, signal_number: int, frame: FrameType | None) -> None:
        # A second signal must not interrupt the teardown the first one started.
        if self._terminating:
            return
        self._terminating = True
        raise TerminatedBySignal(f"received {signal.Signals(signal_number).name}")


safety_net = SafetyNet()
atexit.register(safety_net.stop_all)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "integration: needs real servers (PostgreSQL, S3) or ansible-playbook runs; slower")
    config.addinivalue_line("markers", "alone: measures latency against a tight threshold; make runs these after the parallel tests, "
                            "with nothing else on the machine")
    safety_net.install_signal_handlers()


def pytest_unconfigure(config: pytest.Config) -> None:
    safety_net.stop_all()
    safety_net.restore_signal_handlers()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    """A PostgreSQL cluster on 127.0.0.1 (superuser `postgres`, trust auth) for the whole session."""
    cluster = safety_net.track(PostgresCluster())
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()
        safety_net.forget(cluster)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """An S3 server on 127.0.0.1 with random admin keys for the whole session."""
    server = safety_net.track(S3Server())
    try:
        server.start()
        yield server
    finally:
        server.remove()
        safety_net.forget(server)


@pytest.fixture
def pg_db(pg_cluster: PostgresCluster) -> Iterator[str]:
    """The name of a fresh, empty database on pg_cluster, dropped WITH (FORCE) after the test."""
    with pg_cluster.temporary_database() as name:
        yield name


@pytest.fixture
def run_playbook() -> Callable[..., playbook.PlaybookResult]:
    """tests.harness.playbook.run_playbook: ansible-playbook on localhost with the working tree as keel.postgres."""
    return playbook.run_playbook


@pytest.fixture
def cleanup_server() -> Iterator[Callable[[ServerT], ServerT]]:
    """Register a server a test creates itself: stopped and removed after the test, and by the safety net."""
    servers: list[Server] = []

    def register(server: ServerT) -> ServerT:
        servers.append(server)
        return safety_net.track(server)

    yield register
    for server in reversed(servers):
        server.remove()
        safety_net.forget(server)
