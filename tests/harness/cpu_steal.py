"""Emulated CPU steal: a PostgreSQL cluster's processes stopped and resumed in a fixed duty cycle.

On a virtual machine the hypervisor takes the CPU away from a guest for short
spells; every statement running then takes longer, in proportion to how long
it runs. SIGSTOP and SIGCONT sent to the postmaster's children (the backends,
each the leader of its own session, so no process group reaches them all), a
few milliseconds each, do the same to every statement, on any machine, so a
test can make the host "busier" during one measurement and only that one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from typing import Iterator, List

from tests.harness.processes import children


def signal_quietly(pids: List[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):  # a backend that ended in between
            os.kill(pid, signum)


@contextlib.contextmanager
def stolen_cpu(postmaster_pid: int, stopped_ms: float = 4.0, running_ms: float = 4.0) -> Iterator[None]:
    """While the block runs, every child of the postmaster is stopped ``stopped_ms`` out of every ``stopped_ms + running_ms``."""
    done = threading.Event()
    stopped: List[int] = []

    def cycle() -> None:
        while not done.is_set():
            stopped[:] = children(postmaster_pid)
            signal_quietly(stopped, signal.SIGSTOP)
            time.sleep(stopped_ms / 1000.0)
            signal_quietly(stopped, signal.SIGCONT)
            time.sleep(running_ms / 1000.0)

    thread = threading.Thread(target=cycle, name="cpu-steal", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        signal_quietly(children(postmaster_pid), signal.SIGCONT)
