"""Free TCP ports on the loopback interface.

Every server the harness starts binds to 127.0.0.1 only, so ports are probed
there. A probed port is free when it is released, not necessarily a moment
later; holding all sockets of a batch open until the batch is complete at
least guarantees that the ports given to one server differ from each other.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Collection, Iterator

LOOPBACK = "127.0.0.1"
HIGHEST_PORT = 65535


@contextlib.contextmanager
def _bound_socket(port: int) -> Iterator[socket.socket]:
    """A TCP socket bound (not listening) to LOOPBACK:port, closed on exit."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((LOOPBACK, port))
        yield sock
    finally:
        sock.close()


def free_port() -> int:
    """One TCP port that is free on 127.0.0.1 right now."""
    return reserve_ports(1)[0]


def reserve_ports(count: int) -> list[int]:
    """`count` distinct TCP ports that are free on 127.0.0.1 right now."""
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(_bound_socket(0)) for _index in range(count)]
        return [sock.getsockname()[1] for sock in sockets]


def reserve_port_pair(offset: int, *, exclude: Collection[int] = (), attempts: int = 100) -> tuple[int, int]:
    """Two free ports `(port, port + offset)`, neither of them in `exclude`.

    Some servers derive one port from another with a fixed offset even when
    told otherwise (the `weed mini` maintenance worker dials the admin HTTP
    port + 10000 for gRPC), so both must be free at the same time.
    """
    for _attempt in range(attempts):
        with _bound_socket(0) as first:
            port = first.getsockname()[1]
            partner = port + offset
            if port in exclude or partner in exclude or not 0 < partner <= HIGHEST_PORT:
                continue
            try:
                with _bound_socket(partner):
                    return port, partner
            except OSError:
                continue
    raise RuntimeError(f"found no pair of free loopback ports {offset} apart in {attempts} attempts")
