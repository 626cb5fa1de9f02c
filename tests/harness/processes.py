"""Lifecycle helpers shared by the servers the harness starts.

Two promises hold for every server: it never outlives the test process by
accident (children get a parent-death signal), and `stop()` returns only when
the process is really gone (a restart on the same data directory before that
fails on file locks).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

# prctl(2) option from <linux/prctl.h>; not exposed by the standard library.
_PR_SET_PDEATHSIG = 1
# Loaded before any fork: a child between fork and exec should not dlopen.
_LIBC = ctypes.CDLL(None, use_errno=True)

_POLL_INTERVAL = 0.1


def die_with_parent(signal_number: int) -> Callable[[], None]:
    """A `preexec_fn` that makes the child receive `signal_number` when we die.

    This is the safety net for a test process killed with SIGKILL: no Python
    code runs then, but the kernel still signals the children. It must run
    after the uid switch (the kernel clears the setting when credentials
    change); CPython runs preexec_fn after applying `user=`/`group=`.
    """
    parent_pid = os.getpid()

    def set_parent_death_signal() -> None:
        if _LIBC.prctl(_PR_SET_PDEATHSIG, signal_number, 0, 0, 0) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"prctl(PR_SET_PDEATHSIG) failed: {os.strerror(errno)}")
        # The parent may have died between fork and prctl; then nobody would
        # ever send the signal, so give up instead of running orphaned.
        if os.getppid() != parent_pid:
            os._exit(1)

    return set_parent_death_signal


def is_alive(pid: int) -> bool:
    """True while `pid` is a running process; an exited one awaiting its parent's wait() is not.

    Deliberately no waitpid() here: reaping a child a Popen object owns would
    make that object report exit status 0 whatever really happened.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    """True once every thread of `pid` has exited and only the exit status remains.

    The leader alone is not enough: it turns into a zombie while other threads
    are still exiting and still hold the process's files (listening sockets).
    """
    states = [_thread_state(task) for task in Path(f"/proc/{pid}/task").glob("*")]
    return bool(states) and all(state in ("Z", "X") for state in states)


def _thread_state(task_dir: Path) -> str:
    try:
        stat = (task_dir / "stat").read_text()
    except OSError:
        return "X"  # exited between listing and reading
    # The state letter follows the parenthesised command name, which may itself contain ')'.
    return stat.rsplit(")", 1)[1].split()[0]


def command_line(pid: int) -> list[str]:
    """The argv of a running process, or [] when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def pids_with_argument(argument: str) -> list[int]:
    """Live processes that have `argument` verbatim in their argv (e.g. a data directory flag)."""
    pids = []
    for proc_entry in Path("/proc").iterdir():
        if proc_entry.name.isdigit() and argument in command_line(int(proc_entry.name)):
            pids.append(int(proc_entry.name))
    return [pid for pid in pids if is_alive(pid)]


def wait_until_gone(pid: int, timeout: float) -> bool:
    """Poll until `pid` has exited; False if it still runs after `timeout` s."""
    deadline = time.monotonic() + timeout
    while is_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_INTERVAL)
    return True


def stop_child(process: subprocess.Popen[bytes], first_signal: int, grace: float) -> None:
    """Send `first_signal`, wait `grace` s, then SIGKILL; returns once reaped."""
    if process.poll() is not None:
        return
    process.send_signal(first_signal)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def stop_pid(pid: int, first_signal: int, grace: float) -> None:
    """Like `stop_child` for a process we did not start (found via a pid file)."""
    try:
        os.kill(pid, first_signal)
    except ProcessLookupError:
        return
    if not wait_until_gone(pid, grace):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        wait_until_gone(pid, 10.0)


def log_tail(path: Path, lines: int = 30) -> str:
    """The last `lines` lines of a log file, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError as error:
        return f"(no log at {path}: {error.strerror})"
    return "\n".join(text.splitlines()[-lines:])


def children(pid: int) -> list[int]:
    """The live children of `pid`: the kernel's per-thread lists (a child belongs to the thread that forked it), or,
    on a kernel without them, a scan of /proc."""
    try:
        lists = [task / "children" for task in Path(f"/proc/{pid}/task").iterdir()]
    except OSError:
        return []  # gone, so childless
    if not lists[0].exists():
        return _children_by_parent().get(pid, [])
    found: list[int] = []
    for listed in lists:
        try:
            found.extend(int(child) for child in listed.read_text().split())
        except OSError:
            continue  # the thread ended meanwhile
    return found


def descendants(pid: int) -> list[int]:
    """Every live descendant of `pid`, found through /proc (children first seen, then theirs)."""
    by_parent = _children_by_parent()
    found: list[int] = []
    queue = [pid]
    while queue:
        for child in by_parent.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def _children_by_parent() -> dict[int, list[int]]:
    """Every live process under its parent, from one scan of /proc."""
    by_parent: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        by_parent.setdefault(int(fields[1]), []).append(int(entry.name))
    return by_parent
